#!/usr/bin/env bash
# Bring up compose/docker-compose.yml with the local images on spare ports and check each
# broker with `broker-sched doctor`; then the three clusters (compose/kafka-cluster,
# compose/nats-cluster, compose/redis-sentinel) on spare ports, each checked with
# `doctor` on the fault suite's settings for it, which only a whole cluster passes: a
# topic with three replicas and min.insync.replicas 2 written with acks=all, a stream
# with three replicas, a write to the master the Sentinels name that needs a replica in
# sync; and the Sentinels must see two healthy replicas and each other. Every project is
# taken down again, whatever happens.
set -euo pipefail
cd "$(dirname "$0")/.."

command -v docker-compose >/dev/null || {
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq docker-compose >/dev/null
}

# How long the clusters may take to pass their checks after `up`: generous, for a loaded
# 2-core machine (Kafka's three JVMs take about 30 s there). Not a BROKER_SCHED_ name:
# broker-sched refuses settings it does not know in its environment.
readonly CLUSTER_TIMEOUT_S=${CHECK_COMPOSE_CLUSTER_TIMEOUT:-240}
readonly CLUSTERS=(kafka-cluster nats-cluster redis-sentinel)

compose() { # project compose-args...
  local project=$1
  shift
  case $project in
    single)
      docker-compose -p broker-sched-check -f compose/docker-compose.yml \
        -f compose/docker-compose.local.yml "$@"
      ;;
    *) docker-compose -p "broker-sched-check-$project" -f "compose/$project/docker-compose.yml" "$@" ;;
  esac
}

# Killed first: their data is dropped anyway, and a cluster stopping all at once only
# waits out the stop timeout.
down() { # project
  compose "$1" kill >/dev/null 2>&1 || true
  compose "$1" down -v --remove-orphans >/dev/null 2>&1 || true
}

down_all() {
  local project
  for project in single "${CLUSTERS[@]}"; do down "$project"; done
}
trap down_all EXIT

fail() { # project message
  echo "error: $1: $2" >&2
  compose "$1" ps >&2 || true
  compose "$1" logs --tail 15 >&2 || true
  exit 1
}

# ------------------------------------------------------------------ single node

export KAFKA_PORT=19092 KAFKA_CONTROLLER_PORT=19093 REDIS_PORT=16379 NATS_PORT=14222 \
  NATS_MONITOR_PORT=18222 PROMETHEUS_PORT=19090
compose single config --quiet
compose single up -d

for transport in kafka redis nats; do
  for attempt in $(seq 30); do
    if BROKER_SCHED_KAFKA__BOOTSTRAP_SERVERS="127.0.0.1:$KAFKA_PORT" \
      BROKER_SCHED_REDIS__URL="redis://127.0.0.1:$REDIS_PORT/0" \
      BROKER_SCHED_NATS__SERVERS="nats://127.0.0.1:$NATS_PORT" \
      broker-sched --transport "$transport" doctor; then
      continue 2
    fi
    echo "$transport not ready yet (attempt $attempt)" >&2
    sleep 2
  done
  compose single logs "$transport" | tail -20 >&2
  exit 1
done
# Prometheus beside them: up, with every shipped rule loaded and healthy.
prometheus_rules_ok() {
  python3 - "http://127.0.0.1:$PROMETHEUS_PORT/api/v1/rules" <<'EOF'
import json, sys, urllib.request
groups = json.load(urllib.request.urlopen(sys.argv[1], timeout=5))["data"]["groups"]
rules = [rule for group in groups for rule in group["rules"]]
print(f"prometheus: {len(rules)} rules loaded")
sys.exit(0 if rules and all(rule["health"] != "err" for rule in rules) else 1)
EOF
}
for attempt in $(seq 30); do
  prometheus_rules_ok 2>/dev/null && break
  ((attempt < 30)) || fail single "prometheus did not load its rules"
  echo "prometheus not ready yet (attempt $attempt)" >&2
  sleep 2
done
down single

# --------------------------------------------------------------------- clusters

# The clusters' ports are brokers.sh's + 10000 (node n: base + n - 1), so nothing they
# check collides with a running cluster of brokers.sh or of the fault suite.
for n in 1 2 3; do
  export "KAFKA_C${n}_PORT=$((19289 + n))" "KAFKA_C${n}_CONTROLLER_PORT=$((19389 + n))" \
    "NATS_C${n}_PORT=$((14249 + n))" "NATS_C${n}_ROUTE_PORT=$((16249 + n))" \
    "NATS_C${n}_MONITOR_PORT=$((18249 + n))" "REDIS_S${n}_PORT=$((16399 + n))" \
    "SENTINEL_${n}_PORT=$((36399 + n))"
done
readonly KAFKA_SERVERS="127.0.0.1:$KAFKA_C1_PORT,127.0.0.1:$KAFKA_C2_PORT,127.0.0.1:$KAFKA_C3_PORT"
readonly NATS_SERVERS="nats://127.0.0.1:$NATS_C1_PORT,nats://127.0.0.1:$NATS_C2_PORT,nats://127.0.0.1:$NATS_C3_PORT"
readonly SENTINELS="127.0.0.1:$SENTINEL_1_PORT,127.0.0.1:$SENTINEL_2_PORT,127.0.0.1:$SENTINEL_3_PORT"
readonly SENTINEL_MASTER=${REDIS_SENTINEL_MASTER:-broker-sched}

# `doctor` with the fault suite's settings for a cluster, on this script's ports.
cluster_doctor() { # project
  case $1 in
    kafka-cluster)
      BROKER_SCHED_KAFKA__BOOTSTRAP_SERVERS=$KAFKA_SERVERS \
        broker-sched --config tests/faults/configs/kafka-cluster.toml --transport kafka doctor
      ;;
    nats-cluster)
      BROKER_SCHED_NATS__SERVERS=$NATS_SERVERS \
        broker-sched --config tests/faults/configs/nats-cluster.toml --transport nats doctor
      ;;
    redis-sentinel)
      BROKER_SCHED_REDIS__SENTINELS=$SENTINELS \
        broker-sched --config tests/faults/configs/redis-sentinel.toml --transport redis doctor
      ;;
  esac
}

sentinel_cli() { # redis-cli args...
  compose redis-sentinel exec -T sentinel-1 redis-cli -h 127.0.0.1 -p "$SENTINEL_1_PORT" "$@"
}

# The Sentinels see the master where it starts, two replicas that are not down, and the
# other two Sentinels. redis-cli prints a reply's fields and values on lines of their own.
sentinels_see_the_set() {
  local master replicas others
  master=$(sentinel_cli sentinel get-master-addr-by-name "$SENTINEL_MASTER" | paste -sd:)
  replicas=$(sentinel_cli sentinel replicas "$SENTINEL_MASTER" |
    awk 'previous == "flags" && $0 == "slave" { n++ } { previous = $0 } END { print n + 0 }')
  others=$(sentinel_cli sentinel sentinels "$SENTINEL_MASTER" |
    awk 'previous == "flags" && $0 == "sentinel" { n++ } { previous = $0 } END { print n + 0 }')
  echo "sentinels: master $master, $replicas replicas up, $others other sentinels up"
  [[ $master == "127.0.0.1:$REDIS_S1_PORT" && $replicas == 2 && $others == 2 ]]
}

check_cluster() { # project deadline
  until cluster_doctor "$1"; do
    ((SECONDS < $2)) || fail "$1" "doctor did not pass in ${CLUSTER_TIMEOUT_S}s"
    echo "$1 not ready yet" >&2
    sleep 3
  done
  if [[ $1 == redis-sentinel ]]; then
    until sentinels_see_the_set; do
      ((SECONDS < $2)) || fail "$1" "the Sentinels do not see the whole set"
      sleep 2
    done
  fi
  echo "$1: ok in $((SECONDS - started)) s"
}

for project in "${CLUSTERS[@]}"; do compose "$project" config --quiet; done
# All three start at once; Kafka, the slowest, is checked last.
started=$SECONDS
for project in "${CLUSTERS[@]}"; do compose "$project" up -d; done
deadline=$((SECONDS + CLUSTER_TIMEOUT_S))
for project in nats-cluster redis-sentinel kafka-cluster; do
  check_cluster "$project" "$deadline"
done
down_all
trap - EXIT
echo "clusters: up, checked and down in $((SECONDS - started)) s"
