#!/bin/sh
# No arguments, or only options: redis-server on $REDIS_HOST:$REDIS_PORT with persistence
# off, the options appended (a later option wins); with $REDIS_REPLICAOF ("host port")
# set, a replica of that master. Anything else runs as given, so
# `... broker-sched/redis redis-server --port 7000` works as with the official image.
#
# `sentinel`: a Sentinel on $REDIS_HOST:$REDIS_PORT watching the master named
# $REDIS_SENTINEL_MASTER (default broker-sched) that starts on
# $REDIS_HOST:$REDIS_SENTINEL_MASTER_PORT, with $REDIS_SENTINEL_QUORUM (2),
# $REDIS_SENTINEL_DOWN_AFTER_MS and $REDIS_SENTINEL_FAILOVER_TIMEOUT_MS (Redis's defaults
# unless set); further arguments are options. A Sentinel rewrites its config file with
# what it learns (replicas, the other Sentinels, a failover), so the file in /data is
# written only once and a restarted Sentinel carries on from it.
set -e
case ${1:-} in
  '' | -*)
    # shellcheck disable=SC2086 # REDIS_REPLICAOF is two words, host and port
    exec redis-server --bind "$REDIS_HOST" --port "$REDIS_PORT" --protected-mode yes \
      --daemonize no --dir /tmp --save '' --appendonly no \
      ${REDIS_REPLICAOF:+--replicaof $REDIS_REPLICAOF} "$@"
    ;;
  sentinel)
    shift
    master=${REDIS_SENTINEL_MASTER:-broker-sched}
    mkdir -p /data
    [ -s /data/sentinel.conf ] || cat >/data/sentinel.conf <<CONF
dir /data
sentinel monitor $master $REDIS_HOST ${REDIS_SENTINEL_MASTER_PORT:?a Sentinel needs REDIS_SENTINEL_MASTER_PORT} ${REDIS_SENTINEL_QUORUM:-2}
sentinel down-after-milliseconds $master ${REDIS_SENTINEL_DOWN_AFTER_MS:-30000}
sentinel failover-timeout $master ${REDIS_SENTINEL_FAILOVER_TIMEOUT_MS:-180000}
sentinel parallel-syncs $master 1
CONF
    exec redis-server /data/sentinel.conf --sentinel --bind "$REDIS_HOST" --port "$REDIS_PORT" \
      --daemonize no "$@"
    ;;
esac
exec "$@"
