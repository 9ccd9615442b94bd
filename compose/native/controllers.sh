#!/usr/bin/env bash
# Three controllers behind HAProxy (Debian's) and two invoker processes, on 127.0.0.1,
# against brokers already up (compose/native/brokers.sh):
#
#   compose/native/controllers.sh up redis     # or nats, kafka, kafka-share
#   compose/native/controllers.sh status
#   compose/native/controllers.sh down
#
# The API answers on 127.0.0.1:$API_PORT (3233) through HAProxy; the controllers on
# $CONTROLLER_PORT_BASE+1..3 (3241-3243), ids controller-1..3, invokers invoker-1..2.
# One API key for namespace guest is made once into $STATE_DIR/guest.wskprops and its
# digest shared by every controller. Broker addresses come from the environment as for
# any deployment (BROKER_SCHED_REDIS__URL, BROKER_SCHED_NATS__SERVERS,
# BROKER_SCHED_KAFKA__BOOTSTRAP_SERVERS); the native brokers' default ports need none.
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
repo=$(cd "$here/../.." && pwd)
STATE_DIR=${BROKER_SCHED_STATE_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/broker-sched}/controllers
API_PORT=${API_PORT:-3233}
CONTROLLER_PORT_BASE=${CONTROLLER_PORT_BASE:-3240}
broker_sched=${BROKER_SCHED:-$repo/.venv/bin/broker-sched}
export API_PORT

info() { echo "controllers: $*" >&2; }

ensure_haproxy() {
  command -v haproxy >/dev/null && return
  info "installing Debian package haproxy"
  local sudo=()
  [ "$(id -u)" = 0 ] || sudo=(sudo)
  "${sudo[@]}" apt-get install -y -q --no-install-recommends haproxy >/dev/null 2>&1 ||
    { "${sudo[@]}" apt-get update -q >/dev/null && "${sudo[@]}" apt-get install -y -q --no-install-recommends haproxy >/dev/null; }
}

start() { # name command...
  local name=$1
  shift
  "$@" >>"$STATE_DIR/$name.log" 2>&1 &
  echo $! >"$STATE_DIR/$name.pid"
}

alive() { [ -f "$STATE_DIR/$1.pid" ] && kill -0 "$(cat "$STATE_DIR/$1.pid")" 2>/dev/null; }

names() { echo haproxy controller-1 controller-2 controller-3 invoker-1 invoker-2; }

up() {
  local transport=${1:?usage: controllers.sh up TRANSPORT}
  ensure_haproxy
  mkdir -p "$STATE_DIR"
  export BROKER_SCHED_TRANSPORT=$transport
  export BROKER_SCHED_API__KEYS_FILE=$STATE_DIR/api-keys.json
  export BROKER_SCHED_ACTIONS=${BROKER_SCHED_ACTIONS:-'[{"name": "hello", "handler": "broker_sched.samples:hello"}]'}
  [ -f "$STATE_DIR/guest.wskprops" ] || "$broker_sched" keys add guest "$STATE_DIR/guest.wskprops" >/dev/null
  for i in 1 2; do
    alive "invoker-$i" || BROKER_SCHED_INVOKER__ID=invoker-$i \
      start "invoker-$i" "$broker_sched" run --role invoker --api off
  done
  for i in 1 2 3; do
    local port=$((CONTROLLER_PORT_BASE + i))
    export "CONTROLLER_${i}_PORT=$port"
    alive "controller-$i" || BROKER_SCHED_CONTROLLER_ID=controller-$i \
      start "controller-$i" "$broker_sched" run --role controller --api "127.0.0.1:$port"
  done
  alive haproxy || start haproxy haproxy -db -f "$repo/compose/controllers/haproxy.cfg"
  for _ in $(seq 1 120); do
    if curl -sf "http://127.0.0.1:$API_PORT/health" >/dev/null; then
      info "up: API http://127.0.0.1:$API_PORT (key: $STATE_DIR/guest.wskprops), logs in $STATE_DIR"
      return
    fi
    sleep 0.5
  done
  info "error: the API did not answer; logs in $STATE_DIR"
  exit 1
}

status() {
  local rc=0
  for name in $(names); do
    if alive "$name"; then echo "$name up (pid $(cat "$STATE_DIR/$name.pid"))"; else echo "$name down"; rc=1; fi
  done
  return $rc
}

down() {
  for name in $(names); do
    if alive "$name"; then kill "$(cat "$STATE_DIR/$name.pid")" || true; fi
  done
  for name in $(names); do
    for _ in $(seq 1 40); do alive "$name" || break; sleep 0.25; done
    rm -f "$STATE_DIR/$name.pid"
  done
}

case ${1:-} in
  up) up "${2:-}" ;;
  status) status ;;
  down) down ;;
  *) echo "usage: $0 up TRANSPORT | status | down" >&2; exit 2 ;;
esac
