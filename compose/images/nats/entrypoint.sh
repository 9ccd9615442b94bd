#!/bin/sh
# No arguments: nats-server with JetStream on $NATS_HOST:$NATS_PORT, monitoring on
# $NATS_MONITOR_PORT. Only options: the same without monitoring (ask for it with -m, so
# a fixed monitor port never collides with another server), the options appended (a
# later flag wins). Anything else runs as given.
#
# With $NATS_ROUTE_PORT set, either way the server is also a node of a cluster: named
# $NATS_SERVER_NAME (JetStream needs a name per node), in the cluster $NATS_CLUSTER_NAME
# (default broker-sched), taking routes on $NATS_HOST:$NATS_ROUTE_PORT and joining the
# comma-separated seed URLs in $NATS_ROUTES (its own may be among them).
set -e
case ${1:-} in
  '') set -- -m "$NATS_MONITOR_PORT" ;;
  -*) ;;
  *) exec "$@" ;;
esac
if [ -n "${NATS_ROUTE_PORT:-}" ]; then
  set -- -n "${NATS_SERVER_NAME:?a cluster node needs NATS_SERVER_NAME}" \
    --cluster_name "${NATS_CLUSTER_NAME:-broker-sched}" \
    --cluster "nats://$NATS_HOST:$NATS_ROUTE_PORT" \
    --routes "${NATS_ROUTES:?a cluster node needs NATS_ROUTES}" "$@"
fi
exec nats-server -js -a "$NATS_HOST" -p "$NATS_PORT" -sd /tmp/nats "$@"
