#!/usr/bin/env bash
# uv, at the version this project pins, on any machine with python3: the one way the
# project's own commands install Python packages.
#
#   bash scripts/uv.sh sync --locked               # .venv from uv.lock: the demo's packages
#   bash scripts/uv.sh sync --locked --extra dev   # every extra, the test and lint tools
#   bash scripts/uv.sh lock --upgrade && bash scripts/test-all.sh
#                                                  # move the lock forward, then prove it
#
# `sync --locked` installs exactly what uv.lock names, and fails if pyproject.toml changed
# without `uv lock`. uv lives in a virtualenv of its own under the cache directory, so
# .venv holds only what the lock names; its version is pinned here and in pyproject.toml
# ([tool.uv] required-version). docs/dependencies.md says how the lock moves forward.
set -euo pipefail
cd "$(dirname "$0")/.."

uv_version=0.13.10
state_dir=${BROKER_SCHED_STATE_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/broker-sched}
uv_home="$state_dir/uv-$uv_version"
if [[ ! -x $uv_home/bin/uv ]]; then
  python3 -m venv "$uv_home"
  "$uv_home/bin/pip" install --quiet --disable-pip-version-check "uv==$uv_version"
fi
exec "$uv_home/bin/uv" "$@"
