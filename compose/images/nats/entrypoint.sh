#!/bin/sh
# No arguments: nats-server with JetStream on $NATS_HOST:$NATS_PORT, monitoring on
# $NATS_MONITOR_PORT. Only options: the same without monitoring (ask for it with -m, so
# a fixed monitor port never collides with another server), the options appended (a
# later flag wins). Anything else runs as given.
set -e
case ${1:-} in
  '')
    exec nats-server -js -a "$NATS_HOST" -p "$NATS_PORT" -m "$NATS_MONITOR_PORT" -sd /tmp/nats
    ;;
  -*)
    exec nats-server -js -a "$NATS_HOST" -p "$NATS_PORT" -sd /tmp/nats "$@"
    ;;
esac
exec "$@"
