#!/bin/sh
# No arguments, or only options: redis-server on $REDIS_HOST:$REDIS_PORT with persistence
# off, the options appended (a later option wins). Anything else runs as given, so
# `... broker-sched/redis redis-server --port 7000` works as with the official image.
set -e
case ${1:-} in
  '' | -*)
    exec redis-server --bind "$REDIS_HOST" --port "$REDIS_PORT" --protected-mode yes \
      --daemonize no --dir /tmp --save '' --appendonly no "$@"
    ;;
esac
exec "$@"
