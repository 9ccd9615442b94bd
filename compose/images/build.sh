#!/usr/bin/env bash
# Build broker-sched's local Docker images; no registry is used, nothing is pulled.
#
#   build.sh [--force] [base|kafka|redis|nats|prometheus|action-python ...]   (default: all)
#
# base           Debian bookworm from `debootstrap --variant=minbase`, via `docker import`
# kafka          Apache Kafka $KAFKA_VERSION (KRaft) from Maven Central jars + Java 17
# redis, nats    Debian's redis-server and nats-server (JetStream)
# prometheus     Debian's prometheus, for compose/docker-compose.yml beside the brokers
# action-python  python3 + broker_sched/runtime/action_server.py (the docker runtime's image)
#
# Image names are in images.env. Every image carries the hash of its inputs in the label
# broker-sched.inputs (a Dockerfile image's inputs are its build context and its base
# image's id); an image whose label matches is not rebuilt, so a second run takes seconds.
# The debootstrap tree is cached too, so a deleted base image is re-imported without
# downloading anything.
#
# Debian packages come from the mirror apt already uses on this machine (read from
# /etc/apt/sources.list and sources.list.d); DEBIAN_MIRROR and DEBIAN_SECURITY_MIRROR
# override it. The engine must be running (compose/images/engine.sh).
set -euo pipefail

HERE=$(cd "$(dirname "$0")" && pwd)
readonly HERE
readonly REPO=${HERE%/compose/images}
# shellcheck disable=SC1091 # images.env holds plain assignments
. "$HERE/images.env"

STATE_DIR=${BROKER_SCHED_STATE_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/broker-sched}
KAFKA_VERSION=${KAFKA_VERSION:-4.3.1}
readonly CACHE="$STATE_DIR/images"
readonly SUITE=bookworm
readonly KAFKA_LIBS="$STATE_DIR/kafka-$KAFKA_VERSION/libs"
readonly ALL_IMAGES=(base kafka redis nats prometheus action-python)
readonly LABEL=broker-sched.inputs
FORCE=0

info() { printf '%s\n' "$*" >&2; }
die() { info "error: $*"; exit 1; }

as_root() {
  if ((EUID == 0)); then "$@"; else sudo "$@"; fi
}

# Installs a Debian package on this machine unless its command is already on PATH.
ensure_deb() { # command package
  command -v "$1" >/dev/null && return 0
  info "installing Debian package $2"
  export DEBIAN_FRONTEND=noninteractive
  as_root apt-get install -y -q --no-install-recommends "$2" >/dev/null ||
    { as_root apt-get update -q >/dev/null &&
      as_root apt-get install -y -q --no-install-recommends "$2" >/dev/null; } ||
    die "apt-get install $2 failed"
}

image_label() { # image → the inputs hash it was built from, or nothing
  docker image inspect -f "{{index .Config.Labels \"$LABEL\"}}" "$1" 2>/dev/null || true
}

up_to_date() { # image hash
  ((FORCE == 0)) && [[ $(image_label "$1") == "$2" ]]
}

# A content hash of a directory tree: names, modes and bytes, not timestamps.
tree_hash() {
  tar --sort=name --mtime=@0 --owner=0 --group=0 --numeric-owner -C "$1" -c . | sha256sum |
    cut -c1-16
}

# ------------------------------------------------------------------- base

# Prints "MIRROR SECURITY_MIRROR": the URIs apt uses for $SUITE and $SUITE-security.
apt_mirrors() {
  python3 - "$SUITE" <<'EOF'
import glob
import re
import sys

suite = sys.argv[1]


def sources():
    """(uri, suites, components) of every enabled deb source, one-line and deb822."""
    for path in ["/etc/apt/sources.list", *sorted(glob.glob("/etc/apt/sources.list.d/*.list"))]:
        try:
            lines = open(path).read().splitlines()
        except OSError:
            continue
        for line in lines:
            match = re.match(r"\s*deb\s+(?:\[[^\]]*\]\s+)?(\S+)\s+(\S+)\s*(.*)", line.split("#")[0])
            if match:
                yield match[1], [match[2]], match[3].split()
    for path in sorted(glob.glob("/etc/apt/sources.list.d/*.sources")):
        for block in re.split(r"\n\s*\n", open(path).read()):
            fields = {}
            for line in block.splitlines():
                key, sep, value = line.partition(":")
                if sep and not line.startswith(("#", " ", "\t")):
                    fields[key.strip().lower()] = value.strip()
            if "deb" in fields.get("types", "").split() and fields.get("enabled") != "no":
                for uri in fields.get("uris", "").split():
                    yield uri, fields.get("suites", "").split(), fields.get("components", "").split()


found = {}
for uri, suites, components in sources():
    for name in suites:
        if name in (suite, f"{suite}-security") and "main" in components:
            found.setdefault(name, uri.rstrip("/"))
print(found.get(suite, ""), found.get(f"{suite}-security", ""))
EOF
}

# Helper for Dockerfiles: install packages with the base's package lists, refreshing them
# only when the lists are too old to find a package.
install_debs_script() {
  cat <<'EOF'
#!/bin/sh
set -e
export DEBIAN_FRONTEND=noninteractive
apt-get install -y -q --no-install-recommends "$@" ||
  { apt-get update -q && apt-get install -y -q --no-install-recommends "$@"; }
apt-get clean
EOF
}

# Keeps images small: package lists stay compressed, no translations, no docs or manuals.
slim_config_apt() {
  printf '%s\n' 'Acquire::Languages "none";' 'Acquire::GzipIndexes "true";' \
    'Acquire::CompressionTypes::Order:: "gz";'
}

slim_config_dpkg() {
  printf '%s\n' 'path-exclude=/usr/share/doc/*' 'path-include=/usr/share/doc/*/copyright' \
    'path-exclude=/usr/share/man/*' 'path-exclude=/usr/share/locale/*'
}

sources_list() { # mirror security-mirror
  printf 'deb %s %s main\ndeb %s %s-updates main\n' "$1" "$SUITE" "$1" "$SUITE"
  [[ -n $2 ]] && printf 'deb %s %s-security main\n' "$2" "$SUITE"
  return 0
}

# Unmounts whatever a failed debootstrap left mounted below a directory, deepest first,
# so removing the directory cannot reach the host's /proc or /sys.
unmount_below() {
  local target
  while read -r target; do
    if [[ $target == "$1"/* ]]; then as_root umount -l "$target"; fi
  done < <(findmnt -rn -o TARGET | sort -r)
}

build_base() {
  local mirror security
  read -r mirror security < <(apt_mirrors)
  mirror=${DEBIAN_MIRROR:-$mirror}
  security=${DEBIAN_SECURITY_MIRROR:-$security}
  [[ -n $mirror ]] || die "no apt source for $SUITE main on this machine; set DEBIAN_MIRROR"
  local hash rootfs="$CACHE/rootfs-$SUITE"
  # The recipe is the sources plus the code that builds the tree.
  hash=$({ sources_list "$mirror" "$security"
    declare -f build_base install_debs_script slim_config_apt slim_config_dpkg; } |
    sha256sum | cut -c1-16)
  if up_to_date "$BASE_IMAGE" "$hash"; then
    info "base: $BASE_IMAGE is up to date"
    return 0
  fi
  if ((FORCE)) || [[ $(cat "$rootfs.inputs" 2>/dev/null) != "$hash" ]]; then
    ensure_deb debootstrap debootstrap
    info "base: debootstrap --variant=minbase $SUITE from $mirror"
    mkdir -p "$CACHE/debs"
    unmount_below "$rootfs.tmp"
    as_root rm -rf "$rootfs.tmp"
    as_root debootstrap --variant=minbase --cache-dir="$CACHE/debs" "$SUITE" "$rootfs.tmp" \
      "$mirror" >"$CACHE/debootstrap.log" 2>&1 ||
      { tail -n 20 "$CACHE/debootstrap.log" >&2; unmount_below "$rootfs.tmp"; die "debootstrap failed"; }
    sources_list "$mirror" "$security" | as_root tee "$rootfs.tmp/etc/apt/sources.list" >/dev/null
    install_debs_script | as_root tee "$rootfs.tmp/usr/local/bin/install-debs" >/dev/null
    as_root chmod 755 "$rootfs.tmp/usr/local/bin/install-debs"
    # Packages installed during image builds must not try to start their services.
    printf '#!/bin/sh\nexit 101\n' | as_root tee "$rootfs.tmp/usr/sbin/policy-rc.d" >/dev/null
    as_root chmod 755 "$rootfs.tmp/usr/sbin/policy-rc.d"
    slim_config_apt | as_root tee "$rootfs.tmp/etc/apt/apt.conf.d/90broker-sched" >/dev/null
    slim_config_dpkg | as_root tee "$rootfs.tmp/etc/dpkg/dpkg.cfg.d/90broker-sched" >/dev/null
    as_root find "$rootfs.tmp/usr/share/doc" "$rootfs.tmp/usr/share/man" \
      "$rootfs.tmp/usr/share/locale" -mindepth 1 ! -name copyright ! -type d -delete
    # Package lists in the base: Dockerfiles install without downloading them again.
    as_root rm -rf "$rootfs.tmp/var/lib/apt/lists"/*
    as_root cp /etc/resolv.conf "$rootfs.tmp/etc/resolv.conf"
    as_root chroot "$rootfs.tmp" apt-get update -q >>"$CACHE/debootstrap.log" 2>&1 ||
      die "apt-get update in the new tree failed (log: $CACHE/debootstrap.log)"
    as_root chroot "$rootfs.tmp" apt-get clean
    as_root rm -rf "$rootfs"
    as_root mv "$rootfs.tmp" "$rootfs"
    printf '%s\n' "$hash" >"$rootfs.inputs"
  fi
  info "base: importing $rootfs as $BASE_IMAGE"
  as_root tar --numeric-owner -C "$rootfs" -c . |
    docker import --change "LABEL $LABEL=$hash" \
      --change 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
      --change 'CMD ["/bin/bash"]' - "$BASE_IMAGE" >/dev/null
}

# ------------------------------------------------------------------- kafka

# The same Maven fetch as compose/native/brokers.sh, into the same cache directory, so
# whichever script runs first downloads the jars for both.
kafka_fetch() {
  [[ -f $KAFKA_LIBS/.complete ]] && return 0
  command -v mvn >/dev/null || die "kafka: Maven (mvn) is needed once to fetch the Kafka jars"
  local home=${KAFKA_LIBS%/libs} log="$CACHE/kafka-fetch.log"
  info "kafka: fetching Apache Kafka $KAFKA_VERSION jars with Maven (log: $log)"
  mkdir -p "$home"
  cat >"$home/pom.xml" <<EOF
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
      <version>1.7.36</version>
    </dependency>
  </dependencies>
</project>
EOF
  rm -rf "$KAFKA_LIBS.tmp"
  mvn -B -q -f "$home/pom.xml" org.apache.maven.plugins:maven-dependency-plugin:3.8.1:copy-dependencies \
    -DincludeScope=runtime -DoutputDirectory="$KAFKA_LIBS.tmp" >"$log" 2>&1 ||
    { tail -n 20 "$log" >&2; rm -rf "$KAFKA_LIBS.tmp"; die "Maven could not fetch Kafka $KAFKA_VERSION"; }
  rm -rf "$KAFKA_LIBS"
  mv "$KAFKA_LIBS.tmp" "$KAFKA_LIBS"
  touch "$KAFKA_LIBS/.complete"
}

# --------------------------------------------------------- Dockerfile images

# Copies an image's directory (plus extra files) into a fresh build context.
stage() { # name extra-files...
  local context="$CACHE/context/$1"
  rm -rf "$context"
  mkdir -p "$context"
  cp -a "$HERE/$1/." "$context/"
  shift
  (($#)) && cp -a "$@" "$context/"
  printf '%s' "$context"
}

build_dockerfile() { # name image context
  local name=$1 image=$2 context=$3 base_id hash
  base_id=$(docker image inspect -f '{{.Id}}' "$BASE_IMAGE" 2>/dev/null) ||
    die "$name: base image $BASE_IMAGE is missing (build.sh base)"
  hash=$({ tree_hash "$context"; echo "$base_id"; } | sha256sum | cut -c1-16)
  if up_to_date "$image" "$hash"; then
    info "$name: $image is up to date"
    return 0
  fi
  info "$name: building $image"
  local log="$CACHE/build-$name.log"
  # The legacy builder: this engine's CLI has no buildx plugin, and BuildKit would add
  # nothing for single-stage builds. Host networking lets apt reach the mirror.
  DOCKER_BUILDKIT=0 docker build --network host --build-arg "BASE_IMAGE=$BASE_IMAGE" \
    --label "$LABEL=$hash" -t "$image" "$context" >"$log" 2>&1 ||
    { tail -n 25 "$log" >&2; die "$name: docker build failed (log: $log)"; }
}

build_kafka() {
  kafka_fetch
  local context
  context=$(stage kafka)
  mkdir -p "$context/libs"
  # Hard links when the cache shares a file system with the context: no 40 MB copy.
  cp -l "$KAFKA_LIBS"/*.jar "$context/libs/" 2>/dev/null || cp "$KAFKA_LIBS"/*.jar "$context/libs/"
  build_dockerfile kafka "$KAFKA_IMAGE" "$context"
}

build_redis() { build_dockerfile redis "$REDIS_IMAGE" "$(stage redis)"; }
build_nats() { build_dockerfile nats "$NATS_IMAGE" "$(stage nats)"; }
build_prometheus() { build_dockerfile prometheus "$PROMETHEUS_IMAGE" "$(stage prometheus)"; }

build_action-python() {
  build_dockerfile action-python "$ACTION_PYTHON_IMAGE" \
    "$(stage action-python "$REPO/broker_sched/runtime/action_server.py")"
}

main() {
  local names=() name arg
  for arg; do
    case $arg in
      --force) FORCE=1 ;;
      base | kafka | redis | nats | prometheus | action-python) names+=("$arg") ;;
      -h | --help) sed -n '2,4p' "$0" | sed 's/^# \{0,1\}//' >&2; exit 0 ;;
      *) die "unknown argument $arg (see build.sh --help)" ;;
    esac
  done
  ((${#names[@]})) || names=("${ALL_IMAGES[@]}")
  docker info >/dev/null 2>&1 || die "no Docker engine answers; start one with compose/images/engine.sh"
  mkdir -p "$CACHE"
  local started=$SECONDS
  # Every other image is built FROM the base; make sure it exists first.
  if [[ " ${names[*]} " == *" base "* ]] || [[ -z $(image_label "$BASE_IMAGE") ]]; then
    build_base
  fi
  for name in "${names[@]}"; do
    [[ $name == base ]] || "build_$name"
  done
  # Drop the images these builds replaced (untagged, with our label), nothing else.
  docker image prune -f --filter "label=$LABEL" >/dev/null
  info "done in $((SECONDS - started)) s"
}

main "$@"
