#!/usr/bin/env bash
# Install everything, start the real brokers, lint, type-check and run the whole suite.
# Works on a fresh Debian machine with Python 3.11+, Java 17+ and Maven; safe to re-run.
# Brokers: native ones by default (compose/native/brokers.sh); set BROKER_SCHED_TEST_KAFKA /
# _REDIS / _NATS to use brokers you already run instead.
set -euo pipefail
cd "$(dirname "$0")/.."

python3 -m venv .venv
# shellcheck disable=SC1091
. .venv/bin/activate
pip install --quiet --upgrade pip
pip install --quiet -e '.[dev]'

if [[ -z "${BROKER_SCHED_TEST_KAFKA:-}${BROKER_SCHED_TEST_REDIS:-}${BROKER_SCHED_TEST_NATS:-}" ]]; then
  bash compose/native/brokers.sh up
  export BROKER_SCHED_TEST_KAFKA="127.0.0.1:${KAFKA_PORT:-9092}"
  export BROKER_SCHED_TEST_REDIS="redis://127.0.0.1:${REDIS_PORT:-6379}/0"
  export BROKER_SCHED_TEST_NATS="nats://127.0.0.1:${NATS_PORT:-4222}"
fi
export BROKER_SCHED_REQUIRE_BROKERS=1

ruff check .
ruff format --check .
mypy
pytest "$@"
