#!/bin/sh
# No arguments, or only options: nats-server with JetStream on $NATS_HOST:$NATS_PORT,
# the options appended (a later flag wins). Anything else runs as given.
set -e
case ${1:-} in
  '' | -*)
    exec nats-server -js -a "$NATS_HOST" -p "$NATS_PORT" -m "$NATS_MONITOR_PORT" \
      -sd /tmp/nats "$@"
    ;;
esac
exec "$@"
