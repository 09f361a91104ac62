#!/usr/bin/env bash
# Provision the native infrastructure into the git-ignored cache folder (.stack/ by default):
#   .stack/kafka/libs/  Apache Kafka broker + console tools + log4j2 backend (jars from Maven Central)
#   .stack/bin/minio    MinIO server built from source with `go install`
#   .stack/bin/vegeta   HTTP load generator of the API benchmark, built with `go install`
#   .stack/spark/jars/  Delta Lake for Spark + Hadoop's s3a connector, for the outside-reader test's PySpark
#   chromium            Debian's headless browser for the dashboard's browser test (apt-get)
# Versions come from infra/versions.env. Idempotent: each part is skipped when its stamp file
# records the same versions, so a warm run takes about a second.
#
# Usage: scripts/provision.sh [--force]     (LAB_STACK_HOME overrides the cache folder)
set -euo pipefail

PROJECT_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
# shellcheck source=SCRIPTDIR/../infra/versions.env
source "$PROJECT_ROOT/infra/versions.env"
STACK_HOME="${LAB_STACK_HOME:-$PROJECT_ROOT/.stack}"
KAFKA_HOME="$STACK_HOME/kafka"
BIN_DIR="$STACK_HOME/bin"
FORCE=0
[[ "${1:-}" == "--force" ]] && FORCE=1

log() { printf '[provision] %s\n' "$*"; }
die() { printf '[provision] ERROR: %s\n' "$*" >&2; exit 1; }
now() { date +%s.%N; }
elapsed() { awk -v a="$1" -v b="$(now)" 'BEGIN { printf "%.1fs", b - a }'; }
# version_ge A B: true when dotted version A >= B.
version_ge() { [[ "$(printf '%s\n%s\n' "$2" "$1" | sort -V | head -n1)" == "$2" ]]; }

T0=$(now)

# --- prerequisites ------------------------------------------------------------------------------
command -v java >/dev/null || die "java not found: install a JDK >= $MIN_JAVA_VERSION (Debian: apt-get install openjdk-17-jdk-headless)"
java_version=$(java -version 2>&1 | awk -F'"' '/version/ { print $2; exit }')
java_major=${java_version%%.*}
[[ "$java_major" == "1" ]] && java_major=$(echo "$java_version" | cut -d. -f2)
[[ "$java_major" =~ ^[0-9]+$ ]] || die "cannot parse the Java version from 'java -version' (got '$java_version')"
(( java_major >= MIN_JAVA_VERSION )) || die "Java $java_version is too old: Kafka $KAFKA_VERSION needs Java >= $MIN_JAVA_VERSION"
command -v mvn >/dev/null || die "mvn not found: install Maven >= 3.6 (Debian: apt-get install maven)"
command -v go >/dev/null || die "go not found: install Go >= $MIN_GO_VERSION (https://go.dev/dl/) to build MinIO"
go_version=$(go env GOVERSION); go_version=${go_version#go}
version_ge "$go_version" "$MIN_GO_VERSION" || die "Go $go_version is too old: MinIO needs Go >= $MIN_GO_VERSION"
log "java $java_version, go $go_version, $(command -v mvn); cache: $STACK_HOME"
mkdir -p "$KAFKA_HOME" "$BIN_DIR"

# --- Kafka jars ---------------------------------------------------------------------------------
POM="$PROJECT_ROOT/infra/kafka/pom.xml"
pom_sum=$(sha256sum "$POM" | cut -c1-16)
kafka_stamp="kafka=$KAFKA_VERSION scala=$KAFKA_SCALA_VERSION log4j=$LOG4J_VERSION pom=$pom_sum"
kafka_jar="$KAFKA_HOME/libs/kafka_${KAFKA_SCALA_VERSION}-${KAFKA_VERSION}.jar"
if [[ $FORCE == 0 && -f "$kafka_jar" && "$(cat "$KAFKA_HOME/.stamp" 2>/dev/null)" == "$kafka_stamp" ]]; then
  log "kafka: up to date ($kafka_stamp)"
else
  t=$(now)
  log "kafka: copying jars for Kafka $KAFKA_VERSION (Scala $KAFKA_SCALA_VERSION) + log4j $LOG4J_VERSION from Maven Central"
  rm -rf "$KAFKA_HOME/libs.tmp"
  # Into a temp folder first, so an interrupted download never leaves a half-filled libs/.
  # Output goes to a log (Maven 3.8 -q still prints stray colour codes); shown on failure.
  if ! mvn -q -B -f "$POM" dependency:copy-dependencies \
      -Dkafka.version="$KAFKA_VERSION" -Dscala.binary.version="$KAFKA_SCALA_VERSION" \
      -Dlog4j.version="$LOG4J_VERSION" -DoutputDirectory="$KAFKA_HOME/libs.tmp" \
      > "$KAFKA_HOME/mvn.log" 2>&1; then
    tail -n 40 "$KAFKA_HOME/mvn.log" >&2
    die "mvn could not copy the Kafka jars (is Maven Central reachable? full log: $KAFKA_HOME/mvn.log)"
  fi
  rm -rf "$KAFKA_HOME/libs" && mv "$KAFKA_HOME/libs.tmp" "$KAFKA_HOME/libs"
  echo "$kafka_stamp" > "$KAFKA_HOME/.stamp"
  log "kafka: $(find "$KAFKA_HOME/libs" -name '*.jar' | wc -l) jars in $KAFKA_HOME/libs ($(elapsed "$t"))"
fi

# --- MinIO binary -------------------------------------------------------------------------------
minio_stamp="minio=$MINIO_MODULE_VERSION go=$go_version"
minio_bin="$BIN_DIR/minio"
if [[ $FORCE == 0 && -x "$minio_bin" && "$(cat "$BIN_DIR/.minio.stamp" 2>/dev/null)" == "$minio_stamp" ]]; then
  log "minio: up to date ($minio_stamp)"
else
  t=$(now)
  # Two compiles of MinIO at once on a small machine take twice as long: wait for one already
  # running (the Go build cache is shared, so ours then finishes in seconds).
  waited=0
  while pgrep -f "go install github.com/minio/minio" >/dev/null; do
    (( waited % 30 == 0 )) && log "minio: another 'go install' of MinIO is running; waiting for it (${waited}s)"
    (( waited >= 1200 )) && die "minio: the other 'go install' is still running after ${waited}s"
    sleep 5; waited=$((waited + 5))
  done
  log "minio: go install github.com/minio/minio@$MINIO_MODULE_VERSION (cold: several minutes)"
  GOBIN="$BIN_DIR" GOFLAGS=-buildvcs=false GOTOOLCHAIN=local \
    go install "github.com/minio/minio@$MINIO_MODULE_VERSION" \
    || die "go install of MinIO failed (see the output above)"
  echo "$minio_stamp" > "$BIN_DIR/.minio.stamp"
  log "minio: built $minio_bin ($(elapsed "$t"))"
fi

# --- vegeta (the API benchmark's load generator) ------------------------------------------------
vegeta_stamp="vegeta=$VEGETA_MODULE_VERSION go=$go_version"
vegeta_bin="$BIN_DIR/vegeta"
if [[ $FORCE == 0 && -x "$vegeta_bin" && "$(cat "$BIN_DIR/.vegeta.stamp" 2>/dev/null)" == "$vegeta_stamp" ]]; then
  log "vegeta: up to date ($vegeta_stamp)"
else
  t=$(now)
  log "vegeta: go install github.com/tsenart/vegeta/v12@$VEGETA_MODULE_VERSION"
  GOBIN="$BIN_DIR" GOFLAGS=-buildvcs=false GOTOOLCHAIN=local \
    go install "github.com/tsenart/vegeta/v12@$VEGETA_MODULE_VERSION" \
    || die "go install of vegeta failed (see the output above)"
  echo "$vegeta_stamp" > "$BIN_DIR/.vegeta.stamp"
  log "vegeta: built $vegeta_bin ($(elapsed "$t"))"
fi

# --- Spark jars (the outside-reader test) -------------------------------------------------------
# PySpark itself comes from uv.lock (group outside-readers); these are the jars it lacks to read Delta
# tables on s3a://. archlab/lake/spark.py lists them in spark.jars, so no session downloads anything.
SPARK_HOME_DIR="$STACK_HOME/spark"
SPARK_POM="$PROJECT_ROOT/infra/spark/pom.xml"
spark_pom_sum=$(sha256sum "$SPARK_POM" | cut -c1-16)
spark_stamp="delta=$DELTA_SPARK_VERSION scala=$SPARK_SCALA_VERSION hadoop=$SPARK_HADOOP_VERSION aws-sdk=$SPARK_AWS_SDK_VERSION pom=$spark_pom_sum"
delta_jar="$SPARK_HOME_DIR/jars/delta-spark_${SPARK_SCALA_VERSION}-${DELTA_SPARK_VERSION}.jar"
if [[ $FORCE == 0 && -f "$delta_jar" && "$(cat "$SPARK_HOME_DIR/.stamp" 2>/dev/null)" == "$spark_stamp" ]]; then
  log "spark: up to date ($spark_stamp)"
else
  t=$(now)
  log "spark: copying Delta $DELTA_SPARK_VERSION and hadoop-aws $SPARK_HADOOP_VERSION jars from Maven Central"
  mkdir -p "$SPARK_HOME_DIR"
  rm -rf "$SPARK_HOME_DIR/jars.tmp"
  if ! mvn -q -B -f "$SPARK_POM" dependency:copy-dependencies \
      -Ddelta.version="$DELTA_SPARK_VERSION" -Dscala.binary.version="$SPARK_SCALA_VERSION" \
      -Dhadoop.version="$SPARK_HADOOP_VERSION" -Daws.sdk.version="$SPARK_AWS_SDK_VERSION" \
      -DoutputDirectory="$SPARK_HOME_DIR/jars.tmp" > "$SPARK_HOME_DIR/mvn.log" 2>&1; then
    tail -n 40 "$SPARK_HOME_DIR/mvn.log" >&2
    die "mvn could not copy the Spark jars (is Maven Central reachable? full log: $SPARK_HOME_DIR/mvn.log)"
  fi
  rm -rf "$SPARK_HOME_DIR/jars" && mv "$SPARK_HOME_DIR/jars.tmp" "$SPARK_HOME_DIR/jars"
  echo "$spark_stamp" > "$SPARK_HOME_DIR/.stamp"
  log "spark: $(find "$SPARK_HOME_DIR/jars" -name '*.jar' | wc -l) jars, $(du -sh "$SPARK_HOME_DIR/jars" | cut -f1) in $SPARK_HOME_DIR/jars ($(elapsed "$t"))"
fi

# --- Chromium (browser test of the dashboard) ---------------------------------------------------
# Debian's own package: Playwright drives it through `executable_path`, so nothing is downloaded at
# test time. apt-get needs root: sudo when available. LAB_SKIP_CHROMIUM=1 skips it (no browser test).
if [[ "${LAB_SKIP_CHROMIUM:-0}" == "1" ]]; then
  log "chromium: skipped (LAB_SKIP_CHROMIUM=1)"
elif [[ $FORCE == 0 ]] && command -v chromium >/dev/null; then
  log "chromium: up to date ($(chromium --version 2>/dev/null | head -n1))"
else
  t=$(now)
  if [[ $(id -u) == 0 ]]; then SUDO=(); elif command -v sudo >/dev/null; then SUDO=(sudo -n); else
    die "chromium not found and not root: install it (apt-get install chromium) or set LAB_SKIP_CHROMIUM=1"; fi
  log "chromium: apt-get install chromium"
  if ! { "${SUDO[@]}" apt-get update -qq && DEBIAN_FRONTEND=noninteractive "${SUDO[@]}" apt-get install -y -qq \
      --no-install-recommends chromium; } > "$STACK_HOME/chromium-apt.log" 2>&1; then
    tail -n 20 "$STACK_HOME/chromium-apt.log" >&2
    die "apt-get could not install chromium (full log: $STACK_HOME/chromium-apt.log)"
  fi
  log "chromium: $(chromium --version 2>/dev/null | head -n1) ($(elapsed "$t"))"
fi

# --- verification -------------------------------------------------------------------------------
"$minio_bin" --version >/dev/null 2>&1 || die "$minio_bin does not run; re-run with --force"
log "minio: $("$minio_bin" --version 2>&1 | head -n1)"
"$vegeta_bin" -version >/dev/null 2>&1 || die "$vegeta_bin does not run; re-run with --force"
[[ -f "$kafka_jar" ]] || die "$kafka_jar is missing; re-run with --force"
unzip -l "$kafka_jar" kafka/Kafka.class >/dev/null 2>&1 || die "$kafka_jar holds no kafka.Kafka class"
# Exactly one SLF4J 1.x binding, or the broker logs to a random backend (or to nothing).
bindings=$(for j in "$KAFKA_HOME"/libs/*.jar; do
  unzip -l "$j" org/slf4j/impl/StaticLoggerBinder.class >/dev/null 2>&1 && basename "$j"; done || true)
[[ $(grep -c . <<< "$bindings") == 1 ]] || die "expected one SLF4J binding in $KAFKA_HOME/libs, found: ${bindings:-none}"
log "kafka: kafka.Kafka present, SLF4J binding: $bindings"
unzip -l "$delta_jar" io/delta/sql/DeltaSparkSessionExtension.class >/dev/null 2>&1 \
  || die "$delta_jar holds no Delta session extension; re-run with --force"
# hadoop-aws works only beside the very Hadoop that pyspark bundles (skipped before `make env`).
pyspark_jars=$(compgen -G "$PROJECT_ROOT/.venv/lib/python3*/site-packages/pyspark/jars" | head -n1 || true)
if [[ -n "$pyspark_jars" ]]; then
  [[ -f "$pyspark_jars/hadoop-client-api-$SPARK_HADOOP_VERSION.jar" ]] || die "pyspark in .venv does not bundle \
Hadoop $SPARK_HADOOP_VERSION (found: $(cd "$pyspark_jars" && ls hadoop-client-api-*.jar)): align SPARK_HADOOP_VERSION \
in infra/versions.env with the pyspark of uv.lock"
  log "spark: $(basename "$delta_jar") beside pyspark's hadoop-client-api-$SPARK_HADOOP_VERSION.jar"
fi
log "done in $(elapsed "$T0")"
