#!/bin/bash
# One KRaft node configured like compose/native/brokers.sh configures its own, on
# $KAFKA_HOST:$KAFKA_PORT (controller $KAFKA_CONTROLLER_PORT). Like the apache/kafka
# image, every other KAFKA_<NAME> variable becomes a property: lower case, `_` → `.`,
# `__` → `_`, `___` → `-` (KAFKA_NUM_PARTITIONS=3 → num.partitions=3), so the same
# environment configures either image. Arguments go to kafka.Kafka after the properties
# file (e.g. --override log.retention.ms=1000).
set -euo pipefail

readonly PROPS=/tmp/server.properties
# Variables that configure this script or the JVM, not Kafka.
readonly OWN_VARS=" KAFKA_HOST KAFKA_PORT KAFKA_CONTROLLER_PORT KAFKA_HEAP_OPTS KAFKA_OPTS \
KAFKA_DATA_DIR KAFKA_CLUSTER_ID KAFKA_VERSION "

property_name() { # KAFKA_FOO_BAR → foo.bar
  local name=${1#KAFKA_}
  name=${name,,}
  name=${name//___/-}
  name=${name//__/$'\x01'}
  name=${name//_/.}
  printf '%s' "${name//$'\x01'/_}"
}

write_properties() {
  local var
  {
    cat <<PROPS
process.roles=broker,controller
node.id=1
controller.quorum.voters=1@$KAFKA_HOST:$KAFKA_CONTROLLER_PORT
listeners=PLAINTEXT://$KAFKA_HOST:$KAFKA_PORT,CONTROLLER://$KAFKA_HOST:$KAFKA_CONTROLLER_PORT
advertised.listeners=PLAINTEXT://$KAFKA_HOST:$KAFKA_PORT
controller.listener.names=CONTROLLER
inter.broker.listener.name=PLAINTEXT
listener.security.protocol.map=PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT
log.dirs=$KAFKA_DATA_DIR
num.partitions=1
auto.create.topics.enable=false
offsets.topic.replication.factor=1
transaction.state.log.replication.factor=1
transaction.state.log.min.isr=1
share.coordinator.state.topic.replication.factor=1
share.coordinator.state.topic.min.isr=1
group.initial.rebalance.delay.ms=0
group.min.session.timeout.ms=1000
# The log cleaner's 128 MB default buffer alone can exhaust a small heap at start.
log.cleaner.dedupe.buffer.size=8388608
PROPS
    # Later lines win in a properties file, so the environment overrides the defaults.
    for var in $(compgen -e | grep '^KAFKA_'); do
      [[ $OWN_VARS == *" $var "* ]] && continue
      printf '%s=%s\n' "$(property_name "$var")" "${!var}"
    done
  } >"$PROPS"
}

kafka_java() { java -cp '/opt/kafka/libs/*' "$@"; }

write_properties
if [[ ! -f $KAFKA_DATA_DIR/meta.properties ]]; then
  cluster_id=${KAFKA_CLUSTER_ID:-$(kafka_java kafka.tools.StorageTool random-uuid)}
  kafka_java kafka.tools.StorageTool format --config "$PROPS" --cluster-id "$cluster_id" >&2
fi
# shellcheck disable=SC2086 # KAFKA_HEAP_OPTS and KAFKA_OPTS hold several flags
exec java $KAFKA_HEAP_OPTS ${KAFKA_OPTS:-} -XX:+UseG1GC -XX:MaxGCPauseMillis=20 \
  -XX:+ExitOnOutOfMemoryError -Djava.awt.headless=true \
  -Dorg.slf4j.simpleLogger.showDateTime=true \
  '-Dorg.slf4j.simpleLogger.dateTimeFormat=yyyy-MM-dd HH:mm:ss,SSS' \
  -cp '/opt/kafka/libs/*' kafka.Kafka "$PROPS" "$@"
