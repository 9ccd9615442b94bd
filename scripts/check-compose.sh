#!/usr/bin/env bash
# Bring up compose/docker-compose.yml with the local images on spare ports, check each
# broker with `broker-sched doctor`, and take it down again, whatever happens.
set -euo pipefail
cd "$(dirname "$0")/.."

command -v docker-compose >/dev/null || {
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq docker-compose >/dev/null
}

export KAFKA_PORT=19092 KAFKA_CONTROLLER_PORT=19093 REDIS_PORT=16379 NATS_PORT=14222 \
  NATS_MONITOR_PORT=18222
compose=(docker-compose -p broker-sched-check -f compose/docker-compose.yml
  -f compose/docker-compose.local.yml)

"${compose[@]}" config --quiet
trap '"${compose[@]}" down -v --remove-orphans >/dev/null 2>&1' EXIT
"${compose[@]}" up -d

export BROKER_SCHED_KAFKA__BOOTSTRAP_SERVERS="127.0.0.1:$KAFKA_PORT"
export BROKER_SCHED_REDIS__URL="redis://127.0.0.1:$REDIS_PORT/0"
export BROKER_SCHED_NATS__SERVERS="nats://127.0.0.1:$NATS_PORT"
for transport in kafka redis nats; do
  for attempt in $(seq 30); do
    if broker-sched --transport "$transport" doctor; then
      continue 2
    fi
    echo "$transport not ready yet (attempt $attempt)" >&2
    sleep 2
  done
  "${compose[@]}" logs "$transport" | tail -20 >&2
  exit 1
done
