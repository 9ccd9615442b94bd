#!/usr/bin/env bash
# The whole test suite, with everything it needs, on a fresh Debian machine with Python
# 3.11+, Java 17+ and Maven. Safe to re-run; what it installs and builds is cached.
#
#   1. install the package with every extra from the lock (scripts/uv.sh); lint and
#      type-check, against the locked versions and against pyproject's lower bounds
#   2. start real brokers natively (compose/native/brokers.sh: the default ones and the
#      secured listeners beside them) and a Docker engine with locally built images
#      (compose/images/); Debian's prometheus (with promtool) and chromium for the
#      observability tests (compose/prometheus/prometheus.sh install: no service started)
#   3. run the whole suite against the native brokers; missing brokers are errors. It
#      includes tests/observability: a real Prometheus on 127.0.0.1 ($PROMETHEUS_PORT, or
#      a free port) scraping a controller and invokers under load, the dashboard's queries, the alert
#      rules' promtool tests, and the live view in headless Chromium
#   3b. the fault suite (tests/faults): brokers of its own — single-node ones, a 3-node
#      NATS cluster and Redis with replicas and Sentinels — killed and restarted under load,
#      and Toxiproxy (built once with `go install`) for the network faults
#   4. run the conformance suite, the distributed end-to-end test and the docker-runtime
#      end-to-end test again, with every broker started by testcontainers from the local
#      images
#   5. bring up compose/docker-compose.yml with the local images, `doctor` each broker and
#      check that Prometheus beside them loaded its rules; then the three clusters' compose
#      files (compose/*-cluster, compose/redis-sentinel)
#   6. fail if any container of ours is left running
#
# Arguments go to pytest in step 3, e.g. `bash scripts/test-all.sh -k conformance`.
set -euo pipefail
cd "$(dirname "$0")/.."

step() { printf '\n==> %s\n' "$*"; }

step "install"
bash scripts/uv.sh sync --locked --quiet --extra dev
# shellcheck disable=SC1091
. .venv/bin/activate

step "lint and type-check"
ruff check .
ruff format --check .
mypy
# pyproject's ranges are what a library user gets: their floors must type-check too. The
# resolution sees only releases from before uv.lock's last commit, so it is as fixed as
# the lock and moves with it.
locked_at=$(git log -1 --format=%cI -- uv.lock 2>/dev/null || true)
bash scripts/uv.sh venv --quiet --allow-existing .venv-floors
VIRTUAL_ENV=.venv-floors bash scripts/uv.sh pip install --quiet --resolution lowest-direct \
  --exclude-newer "${locked_at:-$(date -u +%FT%TZ)}" -e '.[dev]'
mypy --python-executable .venv-floors/bin/python

step "brokers and Docker"
bash compose/native/brokers.sh up
bash compose/images/engine.sh start
bash compose/images/build.sh
bash compose/prometheus/prometheus.sh install
export BROKER_SCHED_REQUIRE_BROKERS=1
# The secured listeners' generated credentials, for tests/security.
state_dir=${BROKER_SCHED_STATE_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/broker-sched}
export BROKER_SCHED_TEST_SECURITY="$state_dir/security"

step "whole suite on native brokers"
BROKER_SCHED_TEST_KAFKA="127.0.0.1:${KAFKA_PORT:-9092}" \
BROKER_SCHED_TEST_REDIS="redis://127.0.0.1:${REDIS_PORT:-6379}/0" \
BROKER_SCHED_TEST_NATS="nats://127.0.0.1:${NATS_PORT:-4222}" \
  pytest --ignore=tests/faults "$@"

step "fault suite on brokers of its own"
# Single-node brokers, a 3-node NATS cluster and a Sentinel-watched Redis that the fault
# suite kills and restarts, and the Toxiproxy its network faults go through:
# their own ports (those of tests/faults/configs/) and state directory, never the shared
# brokers above. Kafka reuses the jars the default state dir fetched, and Toxiproxy is
# built there once. Each broker runs with its durable settings (docs/reliability.md):
# Redis fsyncs every write, Kafka every message; the NATS cluster keeps three replicas.
fault_state="$state_dir/faults"
# brokers.sh reads these, and so does the restart the suite runs after a kill.
fault_env=(BROKER_SCHED_STATE_DIR="$fault_state" KAFKA_HOME="$state_dir/kafka-${KAFKA_VERSION:-4.3.1}"
  REDIS_PORT=6479 NATS_PORT=4322 NATS_MONITOR_PORT=8322 KAFKA_PORT=9192
  KAFKA_CONTROLLER_PORT=9193 KAFKA_HEAP_OPTS="-Xmx384m -Xms128m"
  TOXIPROXY_PORT=8374 TOXIPROXY_HOME="$state_dir/toxiproxy-${TOXIPROXY_VERSION:-v2.5.0}"
  REDIS_APPENDFSYNC=always KAFKA_FLUSH_MESSAGES=1)
fault_nodes=(redis nats kafka nats-cluster redis-sentinel toxiproxy)
env "${fault_env[@]}" bash compose/native/brokers.sh down --purge "${fault_nodes[@]}" >/dev/null
fault_down() { env "${fault_env[@]}" bash compose/native/brokers.sh down --purge "${fault_nodes[@]}"; }
trap fault_down EXIT
fault_started=$SECONDS
env "${fault_env[@]}" bash compose/native/brokers.sh up "${fault_nodes[@]}"
# A case may be re-run twice: a kill lands at a random point of real processes on a
# loaded machine, and a rare timing is worth a second look, not a red build; the summary
# lists every rerun.
env "${fault_env[@]}" BROKER_SCHED_TEST_FAULTS=tests/faults/configs pytest tests/faults --reruns 2 -raR
fault_down
trap - EXIT
echo "fault suite: $((SECONDS - fault_started)) s"

step "conformance and end-to-end on testcontainers brokers"
env -u BROKER_SCHED_TEST_KAFKA -u BROKER_SCHED_TEST_REDIS -u BROKER_SCHED_TEST_NATS \
  TESTCONTAINERS_RYUK_DISABLED=true \
  BROKER_SCHED_TEST_KAFKA_IMAGE=broker-sched/kafka:latest \
  BROKER_SCHED_TEST_REDIS_IMAGE=broker-sched/redis:latest \
  BROKER_SCHED_TEST_NATS_IMAGE=broker-sched/nats:latest \
  pytest tests/conformance tests/integration/test_distributed.py \
  tests/integration/test_docker_runtime.py::test_activations_through_a_broker_run_in_docker_containers

step "docker-compose with the local images: single nodes and clusters"
bash scripts/check-compose.sh

step "no containers left running"
left=$(docker ps --quiet)
if [[ -n $left ]]; then
  docker ps >&2
  echo "containers were left running" >&2
  exit 1
fi
echo "none"
