#!/usr/bin/env bash
# Prometheus beside the native brokers (compose/native/brokers.sh), on 127.0.0.1 only,
# scraping a controller's API and its invokers' `run --metrics` ports with the rules of
# rules/ loaded; and the tools the observability tests need.
#
#   prometheus.sh install      Debian's prometheus (with promtool) and chromium
#   prometheus.sh up           start Prometheus on 127.0.0.1:$PROMETHEUS_PORT
#   prometheus.sh down [--purge]
#   prometheus.sh status
#
# Environment: PROMETHEUS_PORT (9090), BROKER_SCHED_CONTROLLER (127.0.0.1:3233: the
# controller's API), BROKER_SCHED_INVOKERS (127.0.0.1:3290,127.0.0.1:3291: comma-separated
# invoker metrics addresses), BROKER_SCHED_STATE_DIR (~/.cache/broker-sched).
#
# Installing never leaves a packaged service listening: the Debian package's own
# prometheus service is kept from starting while it installs, then disabled, and its
# defaults file pinned to 127.0.0.1 should anything start it anyway.
set -euo pipefail

HERE=$(cd "$(dirname "$0")" && pwd -P)
readonly HERE
readonly HOST=127.0.0.1
PROMETHEUS_PORT=${PROMETHEUS_PORT:-9090}
CONTROLLER=${BROKER_SCHED_CONTROLLER:-127.0.0.1:3233}
INVOKERS=${BROKER_SCHED_INVOKERS:-127.0.0.1:3290,127.0.0.1:3291}
STATE_DIR=${BROKER_SCHED_STATE_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/broker-sched}
readonly RUN_DIR="$STATE_DIR/prometheus"
readonly PID_FILE="$RUN_DIR/prometheus.pid"
readonly LOG_FILE="$RUN_DIR/prometheus.log"

info() { printf '%s\n' "$*" >&2; }
# Whether a GET of the URL answers 2xx (python3: on every machine broker-sched runs on).
http_ok() { python3 -c 'import sys, urllib.request; urllib.request.urlopen(sys.argv[1], timeout=2)' "$1" 2>/dev/null; }
as_root() { if ((EUID == 0)); then "$@"; else sudo "$@"; fi; }

# Installs Debian packages that are missing, with no recommends and no service started.
install_debs() { # package...
  local log="$RUN_DIR/apt.log" guard=/usr/sbin/policy-rc.d placed=""
  export DEBIAN_FRONTEND=noninteractive
  if [[ ! -e $guard ]]; then
    # invoke-rc.d and deb-systemd-invoke ask this file whether a service may start: 101
    # says no, so installing starts nothing.
    printf '#!/bin/sh\nexit 101\n' | as_root tee "$guard" >/dev/null
    as_root chmod 755 "$guard"
    placed=1
  fi
  info "installing Debian packages $* (apt log: $log)"
  local ok=1
  as_root apt-get install -y -q --no-install-recommends "$@" >>"$log" 2>&1 ||
    { as_root apt-get update -q >>"$log" 2>&1 &&
      as_root apt-get install -y -q --no-install-recommends "$@" >>"$log" 2>&1; } || ok=""
  [[ -n $placed ]] && as_root rm -f "$guard"
  if [[ -z $ok ]]; then
    info "error: apt-get install $* failed; last lines of $log:"
    tail -n 15 "$log" >&2
    return 1
  fi
}

# The packaged service stays off, and bound to loopback should anything start it.
quiet_packaged_service() {
  [[ -f /etc/default/prometheus ]] &&
    as_root sed -i "s|^ARGS=.*|ARGS=\"--web.listen-address=$HOST:9090\"|" /etc/default/prometheus
  if [[ -d /run/systemd/system ]]; then
    as_root systemctl disable --now prometheus >/dev/null 2>&1 || true
  elif [[ -x /etc/init.d/prometheus ]]; then
    as_root /etc/init.d/prometheus stop >/dev/null 2>&1 || true
    as_root update-rc.d prometheus disable >/dev/null 2>&1 || true
  fi
}

cmd_install() {
  local missing=()
  command -v prometheus >/dev/null && command -v promtool >/dev/null || missing+=(prometheus)
  command -v chromium >/dev/null || missing+=(chromium)
  if ((${#missing[@]})); then
    install_debs "${missing[@]}"
  fi
  quiet_packaged_service
  prometheus --version 2>&1 | head -n 1 >&2
  chromium --version >&2
}

running_pid() {
  [[ -s $PID_FILE ]] || return 1
  local pid
  pid=$(<"$PID_FILE")
  [[ -r /proc/$pid/comm && $(<"/proc/$pid/comm") == prometheus ]] || { rm -f "$PID_FILE"; return 1; }
  printf '%s' "$pid"
}

# prometheus.yml with this deployment's targets and the shipped rules.
write_config() {
  local targets
  targets=$(printf '%s' "$INVOKERS" | sed "s/[^,][^,]*/'&'/g; s/,/, /g")
  sed -e "s|'127.0.0.1:3233'|'$CONTROLLER'|" \
    -e "s|\['127.0.0.1:3290', '127.0.0.1:3291'\]|[$targets]|" \
    -e "s|rules/\*.yml|$HERE/rules/*.yml|" \
    "$HERE/prometheus.yml" >"$RUN_DIR/prometheus.yml"
}

cmd_up() {
  if pid=$(running_pid); then
    info "prometheus already up on $HOST:$PROMETHEUS_PORT (pid $pid)"
    return 0
  fi
  command -v prometheus >/dev/null || { info "error: no prometheus: run $0 install"; return 1; }
  write_config
  promtool check config "$RUN_DIR/prometheus.yml" >/dev/null
  setsid prometheus --config.file="$RUN_DIR/prometheus.yml" \
    --storage.tsdb.path="$RUN_DIR/data" --storage.tsdb.retention.time=2d \
    --web.listen-address="$HOST:$PROMETHEUS_PORT" </dev/null >"$LOG_FILE" 2>&1 &
  echo $! >"$PID_FILE"
  local _
  for _ in {1..100}; do
    if http_ok "http://$HOST:$PROMETHEUS_PORT/-/ready"; then
      info "prometheus up on http://$HOST:$PROMETHEUS_PORT (pid $(<"$PID_FILE"), log $LOG_FILE)"
      return 0
    fi
    running_pid >/dev/null || break
    sleep 0.3
  done
  info "error: prometheus did not become ready; last lines of $LOG_FILE:"
  tail -n 15 "$LOG_FILE" >&2
  return 1
}

cmd_down() {
  local pid _
  if pid=$(running_pid); then
    kill "$pid"
    for _ in {1..100}; do running_pid >/dev/null || break; sleep 0.2; done
    running_pid >/dev/null && kill -9 "$pid"
    rm -f "$PID_FILE"
  fi
  [[ ${1:-} == --purge ]] && rm -rf "$RUN_DIR/data"
  info "prometheus down"
}

cmd_status() {
  if pid=$(running_pid); then
    info "prometheus up       $HOST:$PROMETHEUS_PORT (pid $pid)"
  else
    info "prometheus down"
    return 1
  fi
}

mkdir -p "$RUN_DIR"
case ${1:-} in
  install) cmd_install ;;
  up) cmd_up ;;
  down) shift; cmd_down "$@" ;;
  status) cmd_status ;;
  *) info "usage: $0 install | up | down [--purge] | status"; exit 2 ;;
esac
