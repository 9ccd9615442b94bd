#!/usr/bin/env bash
# Run Kafka (KRaft), Redis and NATS JetStream natively on 127.0.0.1, no Docker, and
# beside them separate secured instances (redis-secure, nats-secure, kafka-secure) on their own ports
# for the security tests. On request only, clusters for the fault tests: nats-cluster
# (nats-c1..3), kafka-cluster (kafka-c1..3) and redis-sentinel (redis-s1..3,
# sentinel-1..3); a node can be named on its own to restart it after a kill. And on
# request, toxiproxy: the TCP proxy whose toxics are the fault suite's network faults.
#
#   brokers.sh up     [BROKER ...]
#   brokers.sh down   [--purge] [BROKER ...]
#   brokers.sh status [BROKER ...]
#
# BROKER: kafka redis nats redis-secure nats-secure kafka-secure (the default set), or
# nats-cluster kafka-cluster redis-sentinel, or one of their nodes, or toxiproxy.
#
# See compose/README.md for the environment variables.
set -euo pipefail

readonly HOST=127.0.0.1
readonly ALL_BROKERS=(kafka redis nats redis-secure nats-secure kafka-secure)

KAFKA_VERSION=${KAFKA_VERSION:-4.3.1}
KAFKA_PORT=${KAFKA_PORT:-9092}
KAFKA_CONTROLLER_PORT=${KAFKA_CONTROLLER_PORT:-9093}
KAFKA_HEAP_OPTS=${KAFKA_HEAP_OPTS:--Xmx512m -Xms256m}
REDIS_PORT=${REDIS_PORT:-6379}
REDIS_SECURE_PORT=${REDIS_SECURE_PORT:-6390}
NATS_SECURE_PORT=${NATS_SECURE_PORT:-4232}
NATS_SECURE_MONITOR_PORT=${NATS_SECURE_MONITOR_PORT:-8232}
KAFKA_SECURE_PORT=${KAFKA_SECURE_PORT:-9094}
KAFKA_SECURE_CONTROLLER_PORT=${KAFKA_SECURE_CONTROLLER_PORT:-9095}
NATS_PORT=${NATS_PORT:-4222}
NATS_MONITOR_PORT=${NATS_MONITOR_PORT:-8222}
# Durability (docs/reliability.md): when Redis fsyncs its append-only file (everysec:
# up to a second of acknowledged writes lost in an OS crash; always: none, at a cost),
# and after how many messages Kafka fsyncs a log (unset: the OS decides; Kafka's own
# durability is replication, acks=all with min.insync.replicas on a cluster).
REDIS_APPENDFSYNC=${REDIS_APPENDFSYNC:-everysec}
KAFKA_FLUSH_MESSAGES=${KAFKA_FLUSH_MESSAGES:-}
UP_TIMEOUT=${BROKER_SCHED_UP_TIMEOUT:-90}
STOP_TIMEOUT=${BROKER_SCHED_STOP_TIMEOUT:-30}
STATE_DIR=${BROKER_SCHED_STATE_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/broker-sched}
mkdir -p "$STATE_DIR/logs" "$STATE_DIR/run"
STATE_DIR=$(cd "$STATE_DIR" && pwd -P)
readonly STATE_DIR

KAFKA_HOME=${KAFKA_HOME:-$STATE_DIR/kafka-$KAFKA_VERSION} # another state dir's jars may be reused
readonly KAFKA_HOME
readonly KAFKA_LIBS="$KAFKA_HOME/libs"
readonly KAFKA_PROPS="$STATE_DIR/kafka.properties"
readonly SLF4J_VERSION=1.7.36 # the slf4j-api line every Kafka 4.x pom declares
readonly DEPENDENCY_PLUGIN=org.apache.maven.plugins:maven-dependency-plugin:3.8.1
readonly SECURITY_DIR="$STATE_DIR/security"

# ---------------------------------------------------------------- helpers

info() { printf '%s\n' "$*" >&2; }

usage() {
  cat >&2 <<'EOF'
usage: brokers.sh up     [BROKER ...]
       brokers.sh down   [--purge] [BROKER ...]
       brokers.sh status [BROKER ...]
BROKER: kafka redis nats redis-secure nats-secure kafka-secure (default: all of these),
        nats-cluster kafka-cluster redis-sentinel, or a node: nats-c1..3 kafka-c1..3
        redis-s1..3 sentinel-1..3; toxiproxy
EOF
  exit "${1:-2}"
}

log_file() { printf '%s/logs/%s.log' "$STATE_DIR" "$1"; }
pid_file() { printf '%s/run/%s.pid' "$STATE_DIR" "$1"; }
data_dir() { printf '%s/%s-data' "$STATE_DIR" "$1"; }

# Prints the last lines of a log, indented, to stderr.
log_tail() {
  [[ -s $1 ]] || { info "    (log $1 is empty or missing)"; return 0; }
  info "    last lines of $1:"
  tail -n 15 "$1" | sed 's/\x1b\[[0-9;]*m//g; s/^/    | /' >&2
}

# One-line error about a broker plus the tail of the log that explains it.
fail() { # name message log
  info "error: $1: $2"
  log_tail "$3"
}

# shellcheck disable=SC2016 # the inner scripts get their values as arguments
port_open() { timeout 2 bash -c 'exec 3<>"/dev/tcp/$0/$1"' "$HOST" "$1" 2>/dev/null; }

http_200() { # port path
  local status
  # shellcheck disable=SC2016
  status=$(timeout 3 bash -c 'exec 3<>"/dev/tcp/$0/$1" || exit 1
    printf "GET %s HTTP/1.0\r\nHost: %s\r\n\r\n" "$2" "$0" >&3
    head -n 1 <&3' "$HOST" "$1" "$2" 2>/dev/null) || return 1
  [[ $status == *" 200 "* ]]
}

# A pid is one of our brokers if it runs the expected program from a directory
# inside the state dir (spawn starts them there). Zombies have no cwd.
pid_alive() { # pid comm
  local cwd
  [[ $(cat "/proc/$1/comm" 2>/dev/null) == "$2" ]] &&
    cwd=$(readlink "/proc/$1/cwd" 2>/dev/null) &&
    [[ $cwd == "$STATE_DIR" || $cwd == "$STATE_DIR"/* ]]
}

# Prints the pid of a running broker; removes a stale pid file.
running_pid() { # name
  local file pid
  file=$(pid_file "$1")
  [[ -s $file ]] || return 1
  pid=$(<"$file")
  if [[ $pid =~ ^[0-9]+$ ]] && pid_alive "$pid" "$("$1"_comm)"; then
    printf '%s' "$pid"
  else
    rm -f "$file"
    return 1
  fi
}

as_root() {
  if ((EUID == 0)); then "$@"; else sudo "$@"; fi
}

# Installs a Debian package unless its command is already on PATH.
ensure_deb() { # command package
  command -v "$1" >/dev/null && return 0
  local log="$STATE_DIR/logs/apt.log"
  info "installing Debian package $2 (apt log: $log)"
  export DEBIAN_FRONTEND=noninteractive
  # Try the package lists at hand first; refresh them only if that fails.
  as_root apt-get install -y -q --no-install-recommends "$2" >>"$log" 2>&1 && return 0
  if ! as_root apt-get update -q >>"$log" 2>&1 ||
    ! as_root apt-get install -y -q --no-install-recommends "$2" >>"$log" 2>&1; then
    fail "$2" "apt-get install $2 failed" "$log"
    return 1
  fi
}

# Starts a command detached from this shell; the pid file holds its pid.
spawn() { # name command...
  local name=$1 log pidf
  shift
  log=$(log_file "$name")
  pidf=$(pid_file "$name")
  [[ -f $log ]] && mv -f "$log" "$log.1"
  rm -f "$pidf"
  # The inner shell moves to the state dir, drops inherited descriptors (such
  # as the up/down lock), records its pid and becomes the broker.
  # shellcheck disable=SC2016 # $$, $0, $1 and $@ belong to the inner shell
  setsid bash -c 'cd "$1" && shift || exit 1
    for fd in /proc/$$/fd/*; do fd=${fd##*/}; ((fd > 2)) && eval "exec $fd>&-"; done
    echo $$ >"$0"; exec "$@"' "$pidf" "$STATE_DIR" "$@" </dev/null >"$log" 2>&1 &
  local _
  for _ in {1..50}; do [[ -s $pidf ]] && return 0; sleep 0.1; done
  fail "$name" "process did not start" "$log"
  return 1
}

ports_free() { # name port-variable...
  local name=$1 var
  shift
  for var; do
    if port_open "${!var}"; then
      info "error: $name: $HOST:${!var} is already in use by another process (choose another $var)"
      return 1
    fi
  done
}

# ------------------------------------------------------------------ kafka

kafka_comm() { printf java; }
kafka_ports() { printf 'KAFKA_PORT KAFKA_CONTROLLER_PORT'; }
kafka_addr() { printf '%s:%s' "$HOST" "$KAFKA_PORT"; }
kafka_detail() { printf 'controller %s:%s' "$HOST" "$KAFKA_CONTROLLER_PORT"; }

java_major() {
  local v
  v=$(java -version 2>&1 | sed -n 's/.* version "\([0-9.]*\).*/\1/p' | head -n 1)
  v=${v#1.}
  printf '%s' "${v%%.*}"
}

kafka_pom() {
  cat <<EOF
<project xmlns="http://maven.apache.org/POM/4.0.0">
  <modelVersion>4.0.0</modelVersion>
  <groupId>local.broker-sched</groupId>
  <artifactId>kafka-runtime</artifactId>
  <version>$KAFKA_VERSION</version>
  <packaging>pom</packaging>
  <dependencies>
    <dependency>
      <groupId>org.apache.kafka</groupId>
      <artifactId>kafka_2.13</artifactId>
      <version>$KAFKA_VERSION</version>
    </dependency>
    <dependency>
      <!-- admin CLIs (TopicCommand, BrokerApiVersionsCommand); Connect is not needed -->
      <groupId>org.apache.kafka</groupId>
      <artifactId>kafka-tools</artifactId>
      <version>$KAFKA_VERSION</version>
      <exclusions>
        <exclusion><groupId>org.apache.kafka</groupId><artifactId>connect-runtime</artifactId></exclusion>
        <exclusion><groupId>com.fasterxml.jackson.jakarta.rs</groupId><artifactId>*</artifactId></exclusion>
      </exclusions>
    </dependency>
    <dependency>
      <groupId>org.slf4j</groupId>
      <artifactId>slf4j-simple</artifactId>
      <version>$SLF4J_VERSION</version>
    </dependency>
  </dependencies>
</project>
EOF
}

kafka_fetch() {
  [[ -f $KAFKA_LIBS/.complete ]] && return 0
  command -v mvn >/dev/null || { info "error: kafka: Maven (mvn) is needed once to fetch the Kafka jars"; return 1; }
  local log="$STATE_DIR/logs/kafka-fetch.log"
  info "kafka: fetching Apache Kafka $KAFKA_VERSION jars with Maven (first run only; log: $log)"
  mkdir -p "$KAFKA_HOME"
  kafka_pom >"$KAFKA_HOME/pom.xml"
  rm -rf "$KAFKA_LIBS.tmp"
  if ! mvn -B -q -f "$KAFKA_HOME/pom.xml" "$DEPENDENCY_PLUGIN:copy-dependencies" \
    -DincludeScope=runtime -DoutputDirectory="$KAFKA_LIBS.tmp" >"$log" 2>&1; then
    rm -rf "$KAFKA_LIBS.tmp"
    fail kafka "Maven could not fetch Kafka $KAFKA_VERSION" "$log"
    return 1
  fi
  rm -rf "$KAFKA_LIBS"
  mv "$KAFKA_LIBS.tmp" "$KAFKA_LIBS"
  touch "$KAFKA_LIBS/.complete"
}

kafka_write_props() {
  cat >"$KAFKA_PROPS" <<EOF
# Generated by brokers.sh on every 'up'; edits are overwritten.
process.roles=broker,controller
node.id=1
controller.quorum.voters=1@$HOST:$KAFKA_CONTROLLER_PORT
listeners=PLAINTEXT://$HOST:$KAFKA_PORT,CONTROLLER://$HOST:$KAFKA_CONTROLLER_PORT
advertised.listeners=PLAINTEXT://$HOST:$KAFKA_PORT
controller.listener.names=CONTROLLER
inter.broker.listener.name=PLAINTEXT
listener.security.protocol.map=PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT
log.dirs=$(data_dir kafka)
num.partitions=1
auto.create.topics.enable=false
offsets.topic.replication.factor=1
transaction.state.log.replication.factor=1
transaction.state.log.min.isr=1
share.coordinator.state.topic.replication.factor=1
share.coordinator.state.topic.min.isr=1
group.initial.rebalance.delay.ms=0
# Controllers' shard group: a dead controller's shards move after its 2 s session.
group.min.session.timeout.ms=1000
# The log cleaner's 128 MB default buffer alone can exhaust a small heap at start.
log.cleaner.dedupe.buffer.size=8388608
unclean.leader.election.enable=false
${KAFKA_FLUSH_MESSAGES:+log.flush.interval.messages=$KAFKA_FLUSH_MESSAGES}
EOF
}

kafka_java() { # main-class args...
  java -cp "$KAFKA_LIBS/*" "$@"
}

kafka_format() {
  [[ -f $(data_dir kafka)/meta.properties ]] && return 0
  local log="$STATE_DIR/logs/kafka-format.log" cluster_id
  info "kafka: formatting $(data_dir kafka)"
  if ! cluster_id=$(kafka_java kafka.tools.StorageTool random-uuid 2>"$log") ||
    ! kafka_java kafka.tools.StorageTool format --config "$KAFKA_PROPS" \
      --cluster-id "$cluster_id" >>"$log" 2>&1; then
    fail kafka "storage format failed" "$log"
    return 1
  fi
}

kafka_prepare_java() {
  command -v java >/dev/null || { info "error: kafka: java (17+) is not on PATH"; return 1; }
  local major
  major=$(java_major)
  ((${major:-0} >= 17)) || { info "error: kafka: needs Java 17+, found '${major:-unknown}'"; return 1; }
}

kafka_prepare() { kafka_prepare_java && kafka_fetch && kafka_write_props && kafka_format; }

kafka_start() {
  # shellcheck disable=SC2086 # KAFKA_HEAP_OPTS holds several flags
  spawn kafka java $KAFKA_HEAP_OPTS -XX:+UseG1GC -XX:MaxGCPauseMillis=20 \
    -XX:+ExitOnOutOfMemoryError -Djava.awt.headless=true -Djava.net.preferIPv4Stack=true \
    -Dorg.slf4j.simpleLogger.showDateTime=true \
    '-Dorg.slf4j.simpleLogger.dateTimeFormat=yyyy-MM-dd HH:mm:ss,SSS' \
    -cp "$KAFKA_LIBS/*" kafka.Kafka "$KAFKA_PROPS"
}

# The log is rotated on every start, so the marker belongs to this process.
kafka_ready() {
  grep -q 'Kafka Server started' "$(log_file kafka)" 2>/dev/null && port_open "$KAFKA_PORT"
}

# ------------------------------------------------------------------ redis

redis_comm() { printf redis-server; }
redis_ports() { printf 'REDIS_PORT'; }
redis_addr() { printf '%s:%s' "$HOST" "$REDIS_PORT"; }
redis_detail() { :; }
redis_prepare() { ensure_deb redis-server redis-server; }

redis_start() {
  mkdir -p "$(data_dir redis)"
  spawn redis redis-server --bind "$HOST" --port "$REDIS_PORT" --protected-mode yes \
    --daemonize no --dir "$(data_dir redis)" --save '' \
    --appendonly yes --appendfsync "$REDIS_APPENDFSYNC"
}

redis_ready() { [[ $(redis-cli -h "$HOST" -p "$REDIS_PORT" ping 2>/dev/null) == PONG ]]; }

# ------------------------------------------------------------------- nats

nats_comm() { printf nats-server; }
nats_ports() { printf 'NATS_PORT NATS_MONITOR_PORT'; }
nats_addr() { printf '%s:%s' "$HOST" "$NATS_PORT"; }
nats_detail() { printf 'monitor %s:%s' "$HOST" "$NATS_MONITOR_PORT"; }

nats_prepare() {
  ensure_deb nats-server nats-server || return 1
  local v
  v=$(nats-server --version | sed -n 's/.*v\([0-9]*\.[0-9]*\).*/\1/p')
  # JetStream exists since 2.2.
  if [[ ! $v =~ ^([0-9]+)\.([0-9]+)$ ]] ||
    ((BASH_REMATCH[1] < 2 || (BASH_REMATCH[1] == 2 && BASH_REMATCH[2] < 2))); then
    info "error: nats: nats-server ${v:-?} has no JetStream (needs 2.2+)"
    return 1
  fi
}

nats_start() {
  spawn nats nats-server -js -a "$HOST" -p "$NATS_PORT" -m "$NATS_MONITOR_PORT" \
    -sd "$(data_dir nats)"
}

nats_ready() { http_200 "$NATS_MONITOR_PORT" '/healthz?js-enabled-only=true'; }

# ------------------------------------------------------------- security
#
# Generated once into $SECURITY_DIR (owner-only): a CA with a certificate for 127.0.0.1,
# and per secured broker a <broker>.json with its address and generated passwords —
# what the security tests read (BROKER_SCHED_TEST_SECURITY names the directory). Each
# server gets only what it needs from them.

security_prepare() {
  [[ -s $SECURITY_DIR/server.pem ]] && return 0
  command -v openssl >/dev/null || ensure_deb openssl openssl || return 1
  local log="$STATE_DIR/logs/security.log"
  (
    umask 077
    mkdir -p "$SECURITY_DIR"
    cd "$SECURITY_DIR"
    openssl req -x509 -newkey rsa:2048 -nodes -days 3650 -subj /CN=broker-sched-test-ca \
      -keyout ca.key -out ca.pem
    openssl req -newkey rsa:2048 -nodes -subj /CN=127.0.0.1 -keyout server.key -out server.csr
    printf 'subjectAltName=IP:127.0.0.1,DNS:localhost\n' >server.ext
    openssl x509 -req -in server.csr -CA ca.pem -CAkey ca.key -CAcreateserial -days 3650 \
      -extfile server.ext -out server.crt
    openssl pkcs8 -topk8 -nocrypt -in server.key -out server.p8
    cat server.p8 server.crt >server.pem
  ) >"$log" 2>&1 || { fail security "could not generate the test CA" "$log"; return 1; }
}

secret() { openssl rand -hex 24; }

redis_credentials() {
  cat <<EOF
{"url": "redis://$HOST:$REDIS_SECURE_PORT/0", "username": "broker-sched", "password": "$(secret)"}
EOF
}

kafka_credentials() {
  cat <<EOF
{"bootstrap_servers": "$HOST:$KAFKA_SECURE_PORT", "security_protocol": "SASL_SSL",
 "sasl_mechanism": "SCRAM-SHA-256", "sasl_username": "broker-sched",
 "sasl_password": "$(secret)", "ssl_cafile": "$SECURITY_DIR/ca.pem",
 "admin_password": "$(secret)"}
EOF
}

nats_credentials() {
  cat <<EOF
{"servers": "nats://$HOST:$NATS_SECURE_PORT",
 "controller_user": "controller", "controller_password": "$(secret)",
 "invoker_user": "invoker", "invoker_password": "$(secret)"}
EOF
}

credentials_prepare() { # broker
  local file="$SECURITY_DIR/$1.json"
  [[ -s $file ]] && return 0
  security_prepare || return 1
  (umask 077 && "$1"_credentials >"$file.tmp" && mv "$file.tmp" "$file")
}

credential() { # broker key
  python3 -c 'import json, sys; print(json.load(open(sys.argv[1]))[sys.argv[2]])' \
    "$SECURITY_DIR/$1.json" "$2"
}

# ----------------------------------------------------------- redis-secure
#
# Only an ACL user with the commands and key patterns broker-sched uses; the default
# user is off. The ACL file holds the password's SHA-256, not the password.

redis-secure_comm() { printf redis-server; }
redis-secure_ports() { printf 'REDIS_SECURE_PORT'; }
redis-secure_addr() { printf '%s:%s' "$HOST" "$REDIS_SECURE_PORT"; }
redis-secure_detail() { printf 'ACL user broker-sched'; }
redis-secure_prepare() { redis_prepare && credentials_prepare redis && redis_acl_file; }

readonly REDIS_COMMANDS=(
  ping info 'client|setname'
  xadd xreadgroup xack xautoclaim xclaim xdel xlen xpending xrange
  'xgroup|create' 'xgroup|destroy' 'xgroup|delconsumer' 'xinfo|groups'
  exists time del set get mget incr zadd zrevrange zremrangebyscore pexpire
  eval evalsha 'script|load' publish subscribe unsubscribe
)

redis_acl_file() {
  local digest rules=()
  digest=$(printf '%s' "$(credential redis password)" | sha256sum | cut -d' ' -f1)
  rules=(user broker-sched on "#$digest" resetkeys '~bs:*' resetchannels '&bs:c:*' -@all)
  rules+=("${REDIS_COMMANDS[@]/#/+}")
  (umask 077 && printf 'user default off\n%s\n' "${rules[*]}" >"$SECURITY_DIR/redis.acl")
}

redis-secure_start() {
  mkdir -p "$(data_dir redis-secure)"
  spawn redis-secure redis-server --bind "$HOST" --port "$REDIS_SECURE_PORT" \
    --protected-mode yes --daemonize no --dir "$(data_dir redis-secure)" --save '' \
    --appendonly no --aclfile "$SECURITY_DIR/redis.acl"
}

redis-secure_ready() {
  [[ $(REDISCLI_AUTH=$(credential redis password) redis-cli -h "$HOST" -p "$REDIS_SECURE_PORT" \
    --user broker-sched ping 2>/dev/null) == PONG ]]
}

# ----------------------------------------------------------- kafka-secure
#
# A second KRaft node, SASL/SCRAM-SHA-256 over TLS only: its broker listener accepts
# nothing else, the users' SCRAM credentials are written at format time.

readonly KAFKA_SECURE_PROPS="$SECURITY_DIR/kafka.properties"

kafka-secure_comm() { printf java; }
kafka-secure_ports() { printf 'KAFKA_SECURE_PORT KAFKA_SECURE_CONTROLLER_PORT'; }
kafka-secure_addr() { printf '%s:%s' "$HOST" "$KAFKA_SECURE_PORT"; }
kafka-secure_detail() { printf 'SASL_SSL, SCRAM-SHA-256, controller %s:%s' "$HOST" "$KAFKA_SECURE_CONTROLLER_PORT"; }

kafka_secure_write_props() {
  local admin
  admin=$(credential kafka admin_password)
  (umask 077 && cat >"$KAFKA_SECURE_PROPS") <<EOF
# Generated by brokers.sh on every 'up'; edits are overwritten.
process.roles=broker,controller
node.id=1
controller.quorum.voters=1@$HOST:$KAFKA_SECURE_CONTROLLER_PORT
listeners=SASL_SSL://$HOST:$KAFKA_SECURE_PORT,CONTROLLER://$HOST:$KAFKA_SECURE_CONTROLLER_PORT
advertised.listeners=SASL_SSL://$HOST:$KAFKA_SECURE_PORT
controller.listener.names=CONTROLLER
inter.broker.listener.name=SASL_SSL
listener.security.protocol.map=SASL_SSL:SASL_SSL,CONTROLLER:PLAINTEXT
sasl.enabled.mechanisms=SCRAM-SHA-256
sasl.mechanism.inter.broker.protocol=SCRAM-SHA-256
listener.name.sasl_ssl.scram-sha-256.sasl.jaas.config=org.apache.kafka.common.security.scram.ScramLoginModule required username="admin" password="$admin";
ssl.keystore.type=PEM
ssl.keystore.location=$SECURITY_DIR/server.pem
ssl.truststore.type=PEM
ssl.truststore.location=$SECURITY_DIR/ca.pem
log.dirs=$(data_dir kafka-secure)
num.partitions=1
auto.create.topics.enable=false
offsets.topic.replication.factor=1
transaction.state.log.replication.factor=1
transaction.state.log.min.isr=1
share.coordinator.state.topic.replication.factor=1
share.coordinator.state.topic.min.isr=1
group.initial.rebalance.delay.ms=0
# Controllers' shard group: a dead controller's shards move after its 2 s session.
group.min.session.timeout.ms=1000
# The log cleaner's 128 MB default buffer alone can exhaust a small heap at start.
log.cleaner.dedupe.buffer.size=8388608
EOF
}

kafka_secure_format() {
  [[ -f $(data_dir kafka-secure)/meta.properties ]] && return 0
  local log="$STATE_DIR/logs/kafka-secure-format.log" cluster_id
  info "kafka-secure: formatting $(data_dir kafka-secure) with the SCRAM users"
  if ! cluster_id=$(kafka_java kafka.tools.StorageTool random-uuid 2>"$log") ||
    ! kafka_java kafka.tools.StorageTool format --config "$KAFKA_SECURE_PROPS" \
      --cluster-id "$cluster_id" \
      --add-scram "SCRAM-SHA-256=[name=admin,password=$(credential kafka admin_password)]" \
      --add-scram "SCRAM-SHA-256=[name=broker-sched,password=$(credential kafka sasl_password)]" \
      >>"$log" 2>&1; then
    fail kafka-secure "storage format failed" "$log"
    return 1
  fi
}

kafka-secure_prepare() {
  command -v java >/dev/null || { info "error: kafka-secure: java (17+) is not on PATH"; return 1; }
  credentials_prepare kafka && kafka_fetch && kafka_secure_write_props && kafka_secure_format
}

kafka-secure_start() {
  spawn kafka-secure java -Xmx256m -Xms128m -XX:+UseG1GC -XX:+ExitOnOutOfMemoryError \
    -Djava.awt.headless=true -Djava.net.preferIPv4Stack=true \
    -cp "$KAFKA_LIBS/*" kafka.Kafka "$KAFKA_SECURE_PROPS"
}

kafka-secure_ready() {
  grep -q 'Kafka Server started' "$(log_file kafka-secure)" 2>/dev/null && port_open "$KAFKA_SECURE_PORT"
}

# ------------------------------------------------------------ nats-secure
#
# Users per role with subject permissions: a controller publishes work, reads backlogs,
# manages queues and keeps records, but cannot take or ack work; an invoker takes and
# acks work and sends results and heartbeats, but cannot purge or delete a queue or
# write the records (it reads them: the actions made through the API are records); only
# a controller holds the ownership leases. Subjects are the defaults: stream BROKER_SCHED,
# prefix act.

readonly NATS_SECURE_CONF="$SECURITY_DIR/nats.conf"

nats-secure_comm() { printf nats-server; }
nats-secure_ports() { printf 'NATS_SECURE_PORT NATS_SECURE_MONITOR_PORT'; }
nats-secure_addr() { printf '%s:%s' "$HOST" "$NATS_SECURE_PORT"; }
nats-secure_detail() { printf 'users controller and invoker, monitor %s:%s' "$HOST" "$NATS_SECURE_MONITOR_PORT"; }
nats-secure_prepare() { nats_prepare && credentials_prepare nats && nats_secure_write_conf; }

readonly NATS_WORK=('$JS.API.INFO' '$JS.API.STREAM.INFO.BROKER_SCHED'
  '$JS.API.STREAM.CREATE.BROKER_SCHED' 'act.>' '_chan.act.>')
readonly NATS_RECORDS=('$JS.API.STREAM.INFO.KV_BROKER_SCHED_RECORDS'
  '$JS.API.STREAM.CREATE.KV_BROKER_SCHED_RECORDS' '$KV.BROKER_SCHED_RECORDS.>'
  '$JS.API.DIRECT.GET.KV_BROKER_SCHED_RECORDS.>' '$JS.API.STREAM.MSG.GET.KV_BROKER_SCHED_RECORDS'
  '$JS.API.CONSUMER.CREATE.KV_BROKER_SCHED_RECORDS' '$JS.API.CONSUMER.CREATE.KV_BROKER_SCHED_RECORDS.>'
  '$JS.API.CONSUMER.INFO.KV_BROKER_SCHED_RECORDS.>' '$JS.API.CONSUMER.DELETE.KV_BROKER_SCHED_RECORDS.>'
  '$JS.FC.KV_BROKER_SCHED_RECORDS.>')
readonly NATS_RECORDS_READ=('$JS.API.STREAM.INFO.KV_BROKER_SCHED_RECORDS'
  '$JS.API.DIRECT.GET.KV_BROKER_SCHED_RECORDS.>' '$JS.API.STREAM.MSG.GET.KV_BROKER_SCHED_RECORDS')
readonly NATS_LEASES=('$JS.API.STREAM.INFO.KV_BROKER_SCHED_LEASES'
  '$JS.API.STREAM.CREATE.KV_BROKER_SCHED_LEASES' '$KV.BROKER_SCHED_LEASES.>'
  '$JS.API.DIRECT.GET.KV_BROKER_SCHED_LEASES.>' '$JS.API.STREAM.MSG.GET.KV_BROKER_SCHED_LEASES')
readonly NATS_QUEUES=('$JS.API.CONSUMER.INFO.BROKER_SCHED.>' '$JS.API.CONSUMER.NAMES.BROKER_SCHED'
  '$JS.API.STREAM.PURGE.BROKER_SCHED'
  '$JS.API.CONSUMER.DELETE.BROKER_SCHED.>')
readonly NATS_TAKE=('$JS.API.CONSUMER.CREATE.BROKER_SCHED' '$JS.API.CONSUMER.CREATE.BROKER_SCHED.>'
  '$JS.API.CONSUMER.DURABLE.CREATE.BROKER_SCHED.>' '$JS.API.CONSUMER.INFO.BROKER_SCHED.>'
  '$JS.API.CONSUMER.MSG.NEXT.BROKER_SCHED.>' '$JS.ACK.BROKER_SCHED.>')

subjects() { # subject... -> "a", "b"
  local out=() subject
  for subject; do out+=("\"$subject\""); done
  local IFS=,
  printf '%s' "${out[*]}"
}

nats_secure_user() { # role subjects...
  local role=$1
  shift
  printf '    {user: "%s", password: "%s",\n' "$(credential nats "${role}_user")" \
    "$(credential nats "${role}_password")"
  printf '     permissions: {publish: {allow: [%s]},\n' "$(subjects "$@")"
  printf '                   subscribe: {allow: ["_INBOX.>", "_chan.act.>"]}}}\n'
}

nats_secure_write_conf() {
  (
    umask 077
    {
      printf '# Generated by brokers.sh on every up; edits are overwritten.\n'
      printf 'listen: "%s:%s"\nhttp: "%s:%s"\n' "$HOST" "$NATS_SECURE_PORT" "$HOST" \
        "$NATS_SECURE_MONITOR_PORT"
      printf 'jetstream { store_dir: "%s" }\nauthorization {\n  users = [\n' \
        "$(data_dir nats-secure)"
      nats_secure_user controller "${NATS_WORK[@]}" "${NATS_RECORDS[@]}" "${NATS_QUEUES[@]}" \
        "${NATS_LEASES[@]}"
      nats_secure_user invoker "${NATS_WORK[@]}" "${NATS_TAKE[@]}" "${NATS_RECORDS_READ[@]}"
      printf '  ]\n}\n'
    } >"$NATS_SECURE_CONF"
  )
}

nats-secure_start() { spawn nats-secure nats-server -c "$NATS_SECURE_CONF"; }
nats-secure_ready() { http_200 "$NATS_SECURE_MONITOR_PORT" '/healthz?js-enabled-only=true'; }

# ---------------------------------------------------------------- clusters
#
# Clusters on loopback for the fault tests. Each node is a broker name of its own
# (nats-c1, kafka-c2, redis-s1, sentinel-3, ...) so one can be killed and restarted by
# name; nats-cluster, kafka-cluster and redis-sentinel stand for all of a cluster's
# nodes. None is in the default set: `up` without names starts no cluster.

readonly CLUSTER_NODES=(1 2 3)
NATS_CLUSTER_PORT=${NATS_CLUSTER_PORT:-4250} # clients 4250-4252
NATS_CLUSTER_ROUTE_PORT=${NATS_CLUSTER_ROUTE_PORT:-6250}
NATS_CLUSTER_MONITOR_PORT=${NATS_CLUSTER_MONITOR_PORT:-8250}
KAFKA_CLUSTER_PORT=${KAFKA_CLUSTER_PORT:-9290} # clients 9290-9292
KAFKA_CLUSTER_CONTROLLER_PORT=${KAFKA_CLUSTER_CONTROLLER_PORT:-9390}
KAFKA_CLUSTER_HEAP_OPTS=${KAFKA_CLUSTER_HEAP_OPTS:--Xmx384m -Xms128m}
REDIS_SENTINEL_DATA_PORT=${REDIS_SENTINEL_DATA_PORT:-6400} # redis-s1 (master), s2, s3
REDIS_SENTINEL_PORT=${REDIS_SENTINEL_PORT:-26400}          # sentinels 26400-26402
REDIS_SENTINEL_MASTER=${REDIS_SENTINEL_MASTER:-broker-sched}

node_port() { printf '%s' $(($1 + $2 - 1)); } # base index

joined() { # separator values...
  local IFS=$1
  shift
  printf '%s' "$*"
}

nats_node_start() { # index
  local i=$1 n routes=()
  for n in "${CLUSTER_NODES[@]}"; do
    routes+=("nats://$HOST:$(node_port "$NATS_CLUSTER_ROUTE_PORT" "$n")")
  done
  spawn "nats-c$i" nats-server -js -a "$HOST" -p "$(node_port "$NATS_CLUSTER_PORT" "$i")" \
    -m "$(node_port "$NATS_CLUSTER_MONITOR_PORT" "$i")" -sd "$(data_dir "nats-c$i")" \
    -n "nats-c$i" --cluster_name broker-sched \
    --cluster "nats://$HOST:$(node_port "$NATS_CLUSTER_ROUTE_PORT" "$i")" \
    --routes "$(joined , "${routes[@]}")"
}

# Healthy once JetStream has a meta leader, which takes a quorum of the nodes.
nats_node_ready() {
  http_200 "$(node_port "$NATS_CLUSTER_MONITOR_PORT" "$1")" '/healthz?js-enabled-only=true'
}

kafka_node_props() { printf '%s/kafka-c%s.properties' "$STATE_DIR" "$1"; }

# Replication factor 3 everywhere and min.insync.replicas 2: with producers at acks=all
# a write survives any one node, and the cluster keeps taking writes with one node down.
kafka_node_write_props() { # index
  local i=$1 n voters=()
  for n in "${CLUSTER_NODES[@]}"; do
    voters+=("$n@$HOST:$(node_port "$KAFKA_CLUSTER_CONTROLLER_PORT" "$n")")
  done
  cat >"$(kafka_node_props "$i")" <<EOF
# Generated by brokers.sh on every 'up'; edits are overwritten.
process.roles=broker,controller
node.id=$i
controller.quorum.voters=$(joined , "${voters[@]}")
listeners=PLAINTEXT://$HOST:$(node_port "$KAFKA_CLUSTER_PORT" "$i"),CONTROLLER://$HOST:$(node_port "$KAFKA_CLUSTER_CONTROLLER_PORT" "$i")
advertised.listeners=PLAINTEXT://$HOST:$(node_port "$KAFKA_CLUSTER_PORT" "$i")
controller.listener.names=CONTROLLER
inter.broker.listener.name=PLAINTEXT
listener.security.protocol.map=PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT
log.dirs=$(data_dir "kafka-c$i")
num.partitions=1
auto.create.topics.enable=false
default.replication.factor=3
min.insync.replicas=2
# Kafka's default since 0.11, said here: a replica that is not in sync never becomes
# leader, so an acknowledged write is not dropped by an election.
unclean.leader.election.enable=false
${KAFKA_FLUSH_MESSAGES:+log.flush.interval.messages=$KAFKA_FLUSH_MESSAGES}
offsets.topic.replication.factor=3
transaction.state.log.replication.factor=3
transaction.state.log.min.isr=2
share.coordinator.state.topic.replication.factor=3
share.coordinator.state.topic.min.isr=2
group.initial.rebalance.delay.ms=0
# Controllers' shard group: a dead controller's shards move after its 2 s session.
group.min.session.timeout.ms=1000
# The log cleaner's 128 MB default buffer alone can exhaust a small heap at start.
log.cleaner.dedupe.buffer.size=8388608
EOF
}

kafka_node_prepare() { # index
  local i=$1 log="$STATE_DIR/logs/kafka-c$1-format.log" id_file="$STATE_DIR/kafka-cluster.id"
  kafka_prepare_java && kafka_fetch && kafka_node_write_props "$i" || return 1
  [[ -f $(data_dir "kafka-c$i")/meta.properties ]] && return 0
  # Every node is formatted with the same cluster id, made once.
  if [[ ! -s $id_file ]] && ! kafka_java kafka.tools.StorageTool random-uuid >"$id_file" 2>"$log"; then
    fail "kafka-c$i" "could not make a cluster id" "$log"
    return 1
  fi
  if ! kafka_java kafka.tools.StorageTool format --config "$(kafka_node_props "$i")" \
    --cluster-id "$(<"$id_file")" >>"$log" 2>&1; then
    fail "kafka-c$i" "storage format failed" "$log"
    return 1
  fi
}

kafka_node_start() { # index
  # shellcheck disable=SC2086 # the heap options are several flags
  spawn "kafka-c$1" java $KAFKA_CLUSTER_HEAP_OPTS -XX:+UseG1GC -XX:MaxGCPauseMillis=20 \
    -XX:+ExitOnOutOfMemoryError -Djava.awt.headless=true -Djava.net.preferIPv4Stack=true \
    -cp "$KAFKA_LIBS/*" kafka.Kafka "$(kafka_node_props "$1")"
}

kafka_node_ready() {
  grep -q 'Kafka Server started' "$(log_file "kafka-c$1")" 2>/dev/null &&
    port_open "$(node_port "$KAFKA_CLUSTER_PORT" "$1")"
}

# redis-s1 starts as the master, redis-s2 and redis-s3 as its replicas; after a
# failover the sentinels re-point whichever node comes back. A master takes writes only
# while a replica is in sync (min-replicas-to-write 1): a killed master that is restarted
# before the sentinels have failed over comes back alone and refuses writes, instead of
# taking writes that the resync under the new master would silently drop.
redis_node_start() { # index
  local i=$1 role=()
  ((i > 1)) && role=(--replicaof "$HOST" "$REDIS_SENTINEL_DATA_PORT")
  mkdir -p "$(data_dir "redis-s$i")"
  spawn "redis-s$i" redis-server --bind "$HOST" \
    --port "$(node_port "$REDIS_SENTINEL_DATA_PORT" "$i")" --protected-mode yes \
    --daemonize no --dir "$(data_dir "redis-s$i")" --save '' \
    --appendonly yes --appendfsync "$REDIS_APPENDFSYNC" --min-replicas-to-write 1 \
    --min-replicas-max-lag 2 "${role[@]}"
}

redis_node_ready() {
  [[ $(redis-cli -h "$HOST" -p "$(node_port "$REDIS_SENTINEL_DATA_PORT" "$1")" ping 2>/dev/null) == PONG ]]
}

# A sentinel rewrites its own config file (what it learnt of the replicas and the
# other sentinels), so the file lives in its data dir and is only written once.
sentinel_start() { # index
  local i=$1 dir
  dir=$(data_dir "sentinel-$i")
  mkdir -p "$dir"
  [[ -s $dir/sentinel.conf ]] || cat >"$dir/sentinel.conf" <<EOF
bind $HOST
port $(node_port "$REDIS_SENTINEL_PORT" "$i")
dir $dir
sentinel monitor $REDIS_SENTINEL_MASTER $HOST $REDIS_SENTINEL_DATA_PORT 2
sentinel down-after-milliseconds $REDIS_SENTINEL_MASTER 1000
sentinel failover-timeout $REDIS_SENTINEL_MASTER 5000
sentinel parallel-syncs $REDIS_SENTINEL_MASTER 1
EOF
  spawn "sentinel-$i" redis-server "$dir/sentinel.conf" --sentinel --daemonize no
}

sentinel_ready() {
  redis-cli -h "$HOST" -p "$(node_port "$REDIS_SENTINEL_PORT" "$1")" \
    sentinel get-master-addr-by-name "$REDIS_SENTINEL_MASTER" 2>/dev/null | grep -q .
}

# The functions every broker name has (see redis above), for each node.
for n in "${CLUSTER_NODES[@]}"; do
  declare "NATS_C${n}_PORT=$(node_port "$NATS_CLUSTER_PORT" "$n")"
  declare "NATS_C${n}_ROUTE_PORT=$(node_port "$NATS_CLUSTER_ROUTE_PORT" "$n")"
  declare "NATS_C${n}_MONITOR_PORT=$(node_port "$NATS_CLUSTER_MONITOR_PORT" "$n")"
  declare "KAFKA_C${n}_PORT=$(node_port "$KAFKA_CLUSTER_PORT" "$n")"
  declare "KAFKA_C${n}_CONTROLLER_PORT=$(node_port "$KAFKA_CLUSTER_CONTROLLER_PORT" "$n")"
  declare "SENTINEL_${n}_PORT=$(node_port "$REDIS_SENTINEL_PORT" "$n")"
  eval "
nats-c${n}_comm() { printf nats-server; }
nats-c${n}_ports() { printf 'NATS_C${n}_PORT NATS_C${n}_ROUTE_PORT NATS_C${n}_MONITOR_PORT'; }
nats-c${n}_addr() { printf '%s:%s' \$HOST \$NATS_C${n}_PORT; }
nats-c${n}_detail() { printf 'monitor %s:%s' \$HOST \$NATS_C${n}_MONITOR_PORT; }
nats-c${n}_prepare() { nats_prepare; }
nats-c${n}_start() { nats_node_start ${n}; }
nats-c${n}_ready() { nats_node_ready ${n}; }
kafka-c${n}_comm() { printf java; }
kafka-c${n}_ports() { printf 'KAFKA_C${n}_PORT KAFKA_C${n}_CONTROLLER_PORT'; }
kafka-c${n}_addr() { printf '%s:%s' \$HOST \$KAFKA_C${n}_PORT; }
kafka-c${n}_detail() { printf 'controller %s:%s' \$HOST \$KAFKA_C${n}_CONTROLLER_PORT; }
kafka-c${n}_prepare() { kafka_node_prepare ${n}; }
kafka-c${n}_start() { kafka_node_start ${n}; }
kafka-c${n}_ready() { kafka_node_ready ${n}; }
sentinel-${n}_comm() { printf redis-server; }
sentinel-${n}_ports() { printf 'SENTINEL_${n}_PORT'; }
sentinel-${n}_addr() { printf '%s:%s' \$HOST \$SENTINEL_${n}_PORT; }
sentinel-${n}_detail() { printf 'master name %s' \$REDIS_SENTINEL_MASTER; }
sentinel-${n}_prepare() { redis_prepare; }
sentinel-${n}_start() { sentinel_start ${n}; }
sentinel-${n}_ready() { sentinel_ready ${n}; }
"
done
for n in "${CLUSTER_NODES[@]}"; do
  declare "REDIS_S${n}_PORT=$(node_port "$REDIS_SENTINEL_DATA_PORT" "$n")"
  eval "
redis-s${n}_comm() { printf redis-server; }
redis-s${n}_ports() { printf 'REDIS_S${n}_PORT'; }
redis-s${n}_addr() { printf '%s:%s' \$HOST \$REDIS_S${n}_PORT; }
redis-s${n}_detail() { printf 'monitored by the sentinels'; }
redis-s${n}_prepare() { redis_prepare; }
redis-s${n}_start() { redis_node_start ${n}; }
redis-s${n}_ready() { redis_node_ready ${n}; }
"
done
unset n

# A cluster's name stands for its nodes.
cluster_nodes() { # name
  case $1 in
    nats-cluster) printf '%s\n' nats-c1 nats-c2 nats-c3 ;;
    kafka-cluster) printf '%s\n' kafka-c1 kafka-c2 kafka-c3 ;;
    redis-sentinel) printf '%s\n' redis-s1 redis-s2 redis-s3 sentinel-1 sentinel-2 sentinel-3 ;;
    *) printf '%s\n' "$1" ;;
  esac
}

# -------------------------------------------------------------- toxiproxy
#
# Toxiproxy's server, built once with `go install` from the Go module proxy (a Go
# toolchain, or Debian's golang-go, is needed for that first build only) into
# $TOXIPROXY_HOME, which another state dir's build may be: like KAFKA_HOME.

TOXIPROXY_VERSION=${TOXIPROXY_VERSION:-v2.5.0}
TOXIPROXY_PORT=${TOXIPROXY_PORT:-8474}
TOXIPROXY_HOME=${TOXIPROXY_HOME:-$STATE_DIR/toxiproxy-$TOXIPROXY_VERSION}

toxiproxy_comm() { printf toxiproxy-serve; } # the kernel keeps 15 characters
toxiproxy_ports() { printf 'TOXIPROXY_PORT'; }
toxiproxy_addr() { printf '%s:%s' "$HOST" "$TOXIPROXY_PORT"; }
toxiproxy_detail() { printf 'HTTP API, %s' "$TOXIPROXY_VERSION"; }

toxiproxy_prepare() {
  [[ -x $TOXIPROXY_HOME/toxiproxy-server ]] && return 0
  command -v go >/dev/null || ensure_deb go golang-go || return 1
  local log="$STATE_DIR/logs/toxiproxy-build.log"
  info "toxiproxy: building $TOXIPROXY_VERSION with go install (first run only; log: $log)"
  mkdir -p "$TOXIPROXY_HOME"
  if ! GOBIN="$TOXIPROXY_HOME" go install \
    "github.com/Shopify/toxiproxy/v2/cmd/server@$TOXIPROXY_VERSION" >"$log" 2>&1; then
    fail toxiproxy "go install failed" "$log"
    return 1
  fi
  mv "$TOXIPROXY_HOME/server" "$TOXIPROXY_HOME/toxiproxy-server"
}

toxiproxy_start() {
  spawn toxiproxy "$TOXIPROXY_HOME/toxiproxy-server" -host "$HOST" -port "$TOXIPROXY_PORT"
}

toxiproxy_ready() { http_200 "$TOXIPROXY_PORT" /version; }

# --------------------------------------------------------------- commands

status_line() { # name state [pid]
  local detail
  if [[ -n ${3:-} ]]; then
    detail=$("$1"_detail)
    printf '%-10s %-8s %s (%spid %s)\n' "$1" "$2" "$("$1"_addr)" "${detail:+$detail, }" "$3"
  else
    printf '%-10s %s\n' "$1" "$2"
  fi
}

start_broker() { # name
  local ports
  read -ra ports <<<"$("$1"_ports)"
  "$1"_prepare && ports_free "$1" "${ports[@]}" && "$1"_start
}

# Starts each broker that is not running yet, then waits for all of them.
cmd_up() {
  local name pid rc=0 pending=()
  for name; do
    if running_pid "$name" >/dev/null; then
      pending+=("$name")
    elif start_broker "$name"; then
      pending+=("$name")
    else
      rc=1
    fi
  done
  local deadline=$((SECONDS + UP_TIMEOUT)) waiting
  while ((${#pending[@]})); do
    waiting=()
    for name in "${pending[@]}"; do
      if ! pid=$(running_pid "$name"); then
        fail "$name" "exited during startup" "$(log_file "$name")"
        rc=1
      elif "$name"_ready; then
        status_line "$name" up "$pid"
      elif ((SECONDS >= deadline)); then
        fail "$name" "not ready after ${UP_TIMEOUT}s (still running as pid $pid)" "$(log_file "$name")"
        rc=1
      else
        waiting+=("$name")
      fi
    done
    pending=("${waiting[@]+"${waiting[@]}"}")
    ((${#pending[@]})) && sleep 0.5
  done
  return "$rc"
}

stop_broker() { # name
  local name=$1 pid _
  if ! pid=$(running_pid "$name"); then
    status_line "$name" down
    return 0
  fi
  kill -TERM "$pid" 2>/dev/null || true
  for _ in $(seq $((STOP_TIMEOUT * 5))); do
    pid_alive "$pid" "$("$name"_comm)" || break
    sleep 0.2
  done
  if pid_alive "$pid" "$("$name"_comm)"; then
    info "$name: still running after ${STOP_TIMEOUT}s, sending SIGKILL"
    kill -KILL "$pid" 2>/dev/null || true
    sleep 0.5
  fi
  rm -f "$(pid_file "$name")"
  printf '%-6s stopped (pid %s)\n' "$name" "$pid"
}

cmd_down() { # purge names...
  local purge=$1 name
  shift
  for name; do
    stop_broker "$name"
    if ((purge)); then
      rm -rf "$(data_dir "$name")"
      info "$name: removed $(data_dir "$name")"
    fi
  done
}

cmd_status() {
  local name pid rc=0
  for name; do
    if ! pid=$(running_pid "$name"); then
      status_line "$name" down
      rc=1
    elif "$name"_ready; then
      status_line "$name" up "$pid"
    else
      status_line "$name" starting "$pid"
      rc=1
    fi
  done
  return "$rc"
}

main() {
  local cmd=${1:-} purge=0 names=() arg
  (($#)) && shift
  for arg; do
    case $arg in
      kafka | redis | nats | redis-secure | nats-secure | kafka-secure | toxiproxy) names+=("$arg") ;;
      nats-cluster | kafka-cluster | redis-sentinel | nats-c[123] | kafka-c[123] | redis-s[123] | sentinel-[123])
        mapfile -t -O "${#names[@]}" names < <(cluster_nodes "$arg") ;;
      --purge) [[ $cmd == down ]] || usage; purge=1 ;;
      -h | --help) usage 0 ;;
      *) usage ;;
    esac
  done
  ((${#names[@]})) || names=("${ALL_BROKERS[@]}")
  case $cmd in
    up | down)
      # One up/down at a time per state dir.
      exec 9>"$STATE_DIR/run/lock"
      flock -w $((UP_TIMEOUT + STOP_TIMEOUT * 3)) 9 ||
        { info "error: another brokers.sh up/down still holds $STATE_DIR/run/lock"; exit 1; }
      if [[ $cmd == up ]]; then cmd_up "${names[@]}"; else cmd_down "$purge" "${names[@]}"; fi
      ;;
    status) cmd_status "${names[@]}" ;;
    help | -h | --help) usage 0 ;;
    *) usage ;;
  esac
}

main "$@"
