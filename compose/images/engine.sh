#!/usr/bin/env bash
# Start (or stop) a local Docker engine for broker-sched's images and the docker runtime.
#
#   engine.sh [start]   start dockerd unless an engine already answers; wait until ready
#   engine.sh stop      stop the dockerd this script started (containers stop with it)
#   engine.sh status    exit 0 if an engine answers `docker info`
#
# The engine runs with no bridge and no iptables rules (--bridge=none --iptables=false):
# every container of this project uses host networking and binds 127.0.0.1, so nothing
# needs NAT, and a machine without netfilter modules still runs it. dockerd starts its
# own containerd. If dockerd is missing, Debian's docker.io is installed with apt.
#
# Environment: BROKER_SCHED_STATE_DIR (default ${XDG_CACHE_HOME:-~/.cache}/broker-sched,
# holds logs/dockerd.log and run/dockerd.pid), BROKER_SCHED_ENGINE_TIMEOUT (s, default 60).
set -euo pipefail

STATE_DIR=${BROKER_SCHED_STATE_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/broker-sched}
READY_TIMEOUT=${BROKER_SCHED_ENGINE_TIMEOUT:-60}
readonly LOG="$STATE_DIR/logs/dockerd.log"
readonly PID_FILE="$STATE_DIR/run/dockerd.pid"

info() { printf '%s\n' "$*" >&2; }

as_root() {
  if ((EUID == 0)); then "$@"; else sudo "$@"; fi
}

engine_answers() { docker info >/dev/null 2>&1; }

# The pid of the dockerd we started, if it still runs; clears a stale pid file.
our_pid() {
  local pid
  [[ -s $PID_FILE ]] || return 1
  pid=$(<"$PID_FILE")
  if [[ $pid =~ ^[0-9]+$ && -r /proc/$pid/comm && $(</proc/"$pid"/comm) == dockerd ]]; then
    printf '%s' "$pid"
  else
    rm -f "$PID_FILE"
    return 1
  fi
}

install_engine() {
  command -v dockerd >/dev/null && return 0
  local log="$STATE_DIR/logs/apt.log"
  info "installing Debian package docker.io (apt log: $log)"
  export DEBIAN_FRONTEND=noninteractive
  # The package's own init scripts must not start a daemon with bridge and iptables on;
  # policy-rc.d exit 101 tells invoke-rc.d "not now" for the length of the install.
  local policy=/usr/sbin/policy-rc.d created_policy=0
  if [[ ! -e $policy ]]; then
    printf '#!/bin/sh\nexit 101\n' | as_root tee "$policy" >/dev/null
    as_root chmod 755 "$policy"
    created_policy=1
  fi
  local rc=0
  as_root apt-get install -y -q --no-install-recommends docker.io >>"$log" 2>&1 ||
    { as_root apt-get update -q >>"$log" 2>&1 &&
      as_root apt-get install -y -q --no-install-recommends docker.io >>"$log" 2>&1; } || rc=1
  ((created_policy)) && as_root rm -f "$policy"
  if ((rc)); then
    info "error: apt-get install docker.io failed; last lines of $log:"
    tail -n 15 "$log" >&2
    return 1
  fi
}

cmd_start() {
  if engine_answers; then
    info "docker engine: already answering"
    return 0
  fi
  install_engine
  local pid
  if ! pid=$(our_pid); then
    [[ -f $LOG ]] && mv -f "$LOG" "$LOG.1"
    info "docker engine: starting dockerd (log: $LOG)"
    local sudo=()
    ((EUID == 0)) || sudo=(sudo)
    # setsid: the daemon outlives this shell and the terminal that ran it. dockerd
    # writes its own pid file and removes it when it exits.
    setsid "${sudo[@]}" dockerd --bridge=none --iptables=false --ip6tables=false \
      --ip-masq=false --pidfile "$PID_FILE" </dev/null >"$LOG" 2>&1 &
    pid=$!
  fi
  local deadline=$((SECONDS + READY_TIMEOUT))
  until engine_answers; do
    if [[ ! -d /proc/$pid ]]; then
      rm -f "$PID_FILE"
      info "error: dockerd exited during startup; last lines of $LOG:"
      tail -n 20 "$LOG" >&2
      return 1
    fi
    if ((SECONDS >= deadline)); then
      info "error: dockerd (pid $pid) not ready after ${READY_TIMEOUT}s; last lines of $LOG:"
      tail -n 20 "$LOG" >&2
      return 1
    fi
    sleep 0.2
  done
  info "docker engine: ready (dockerd pid $pid, server $(docker version -f '{{.Server.Version}}'))"
}

cmd_stop() {
  local pid _
  if ! pid=$(our_pid); then
    info "docker engine: no dockerd started by this script is running"
    return 0
  fi
  as_root kill -TERM "$pid"
  # dockerd stops its containers (10 s grace each, in parallel) and its containerd.
  for _ in $(seq 300); do
    [[ -d /proc/$pid ]] || break
    sleep 0.1
  done
  if [[ -d /proc/$pid ]]; then
    info "docker engine: dockerd still running after 30s, sending SIGKILL"
    as_root kill -KILL "$pid" 2>/dev/null || true
  fi
  rm -f "$PID_FILE"
  info "docker engine: stopped (pid $pid)"
}

main() {
  mkdir -p "$STATE_DIR/logs" "$STATE_DIR/run"
  case ${1:-start} in
    start) cmd_start ;;
    stop) cmd_stop ;;
    status)
      if engine_answers; then info "docker engine: up"; else info "docker engine: down"; return 1; fi
      ;;
    *)
      info "usage: engine.sh [start|stop|status]"
      return 2
      ;;
  esac
}

main "$@"
