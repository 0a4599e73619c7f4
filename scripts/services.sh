#!/usr/bin/env bash
# The integration tests' services, installed when missing and started in the background:
#   RabbitMQ   Debian's rabbitmq-server, AMQP on 127.0.0.1:5672 (amqp://guest:guest@127.0.0.1:5672)
#   Cassandra  a single-node Apache Cassandra 5.0.9 (CASSANDRA_VERSION) run from the Maven Central jars with
#              Java 17, CQL on 127.0.0.1:9042, data centre 'datacenter1' (../shared/cassandra-test-node.md section 7)
#
# Usage: bash scripts/services.sh up|down|status        (npm run services:up|down|status; `npm test` runs `up`)
#        bash scripts/services.sh up|down|status --cluster   the local 3-node clusters instead: scripts/cluster.sh
#   up      install what is missing, start what is not running, wait until both accept connections and create
#           the test keyspace. Quick when both already run. The services keep running after the script exits.
#   down    stop both (Cassandra: TERM, KILL after 30 s; RabbitMQ: rabbitmqctl stop).
#   status  one line per service; exit 0 when both are up, 1 otherwise.
#   node-up / node-down
#           start (and wait for) / stop a private Cassandra node of a test, never the shared one: needs
#           CASSANDRA_RUN (its own directory), CASSANDRA_PORT and CASSANDRA_STORAGE_PORT (not 9042 / 7000);
#           CASSANDRA_EXTRA_YAML (a file) is appended to its cassandra.yaml. Fetches the jars of
#           CASSANDRA_VERSION first if needed, so a test can run any 5.0.x the machine has not seen.
#   fetch   fetch the jars of CASSANDRA_VERSION (and of each version in CASSANDRA_EXTRA_VERSIONS) only.
#
# Environment overrides:
#   CASSANDRA_KEYSPACE   keyspace `up` creates (SimpleStrategy, RF 1); default celery_test
#   CASSANDRA_HEAP       Cassandra JVM heap (-Xms and -Xmx); default 512m
#   SERVICES_TIMEOUT     seconds to wait for each service to accept connections; default 180
#   CASSANDRA_USERNAME, CASSANDRA_PASSWORD
#                        credentials of the readiness probe and keyspace creation; default cassandra/cassandra
#                        (the node runs PasswordAuthenticator, see tools/cassandra/cassandra.yaml.in)
#   CASSANDRA_KEEP_DATA  1: start Cassandra on the data of its last run (a restart) instead of a fresh node
#   CASSANDRA_VERSION    Apache Cassandra release to run; default 5.0.9, the newest 5.0.x on Maven Central
#                        (5.0.8 still runs: CASSANDRA_VERSION=5.0.8; its jars go to their own directory)
#   CASSANDRA_EXTRA_VERSIONS
#                        more versions `up` fetches (not runs), for the suites that start their own nodes of
#                        them; default 5.0.8 (the compatibility run of test/integration/cassandra-stream-misroute)
#   CASSANDRA_SKIP_SYNC  1: start Cassandra with -Dcassandra.skip_sync=true (no fsync of the commit log or of
#                        sstables, as Cassandra's own unit tests). Default 0: fsync as in production (the fault suite
#                        needs it; it costs the suites next to nothing with periodic commit log sync)
#   RABBITMQ_NODENAME    default rabbit@localhost: the machine's hostname may not resolve in a container
#
# Needs root to install packages and to run Debian's RabbitMQ. Needs `npm install` first (the Cassandra probe uses
# the project's cassandra-driver). Files: Cassandra jars in tools/cassandra/.cassandra-<version>/lib (kept, and
# ~/.m2 caches them too); each Cassandra start gets a fresh tools/cassandra/.run (yaml, data, logs/cassandra.out,
# cassandra.pid); RabbitMQ logs in /var/log/rabbitmq.
set -euo pipefail

# The services outlive this script: they must not inherit its open files. Run under `flock LOCK cmd`
# (without -o), the lock's descriptor would otherwise stay open in RabbitMQ and Cassandra and hold the
# lock for as long as they run. Bash keeps 255 for reading this script.
for fd_path in /proc/$$/fd/*; do
  fd_number="${fd_path##*/}"
  if [ "$fd_number" -gt 2 ] && [ "$fd_number" -lt 255 ]; then eval "exec ${fd_number}>&-" 2>/dev/null || true; fi
done
unset fd_path fd_number

REPO_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"

# `up|down|status --cluster`: the local 3-node clusters of scripts/cluster.sh, not the single nodes.
if [ "${2:-}" = --cluster ]; then
  case "$1" in
    up | down | status) exec bash "$REPO_ROOT/scripts/cluster.sh" "$1" "${@:3}" ;;
    *) echo "services.sh: --cluster goes with up, down or status" >&2 && exit 2 ;;
  esac
fi
export PATH="$PATH:/usr/local/sbin:/usr/sbin:/sbin"

CASSANDRA_KEYSPACE="${CASSANDRA_KEYSPACE:-celery_test}"
export CASSANDRA_USERNAME="${CASSANDRA_USERNAME:-cassandra}" CASSANDRA_PASSWORD="${CASSANDRA_PASSWORD:-cassandra}"
CASSANDRA_HEAP="${CASSANDRA_HEAP:-512m}"
SERVICES_TIMEOUT="${SERVICES_TIMEOUT:-180}"

# The default version is also CASSANDRA_DEFAULT_VERSION in test/support/private-cassandra.ts.
CASSANDRA_VERSION="${CASSANDRA_VERSION:-5.0.9}"
CASSANDRA_EXTRA_VERSIONS="${CASSANDRA_EXTRA_VERSIONS-5.0.8}"
CASSANDRA_DIR="$REPO_ROOT/tools/cassandra"
CASSANDRA_SHARED_RUN="$CASSANDRA_DIR/.run"
# node-up / node-down take these from the environment; up / down / status always mean the shared node.
case "${1:-}" in
  node-up | node-down)
    CASSANDRA_PORT="${CASSANDRA_PORT:-}"
    CASSANDRA_STORAGE_PORT="${CASSANDRA_STORAGE_PORT:-}"
    CASSANDRA_RUN="${CASSANDRA_RUN:-}"
    ;;
  *)
    CASSANDRA_PORT=9042
    CASSANDRA_STORAGE_PORT=7000
    CASSANDRA_RUN="$CASSANDRA_SHARED_RUN"
    ;;
esac
CASSANDRA_LIB="$CASSANDRA_DIR/.cassandra-$CASSANDRA_VERSION/lib"
CASSANDRA_PID_FILE="$CASSANDRA_RUN/cassandra.pid"
CASSANDRA_LOG="$CASSANDRA_RUN/logs/cassandra.out"

RABBITMQ_PORT=5672
RABBITMQ_TLS_PORT=5671
# Test certificates for TLS to RabbitMQ (amqps on 5671) and Cassandra (client_encryption_options, optional,
# so 9042 serves TLS and plaintext). Made once by openssl; never committed. The RabbitMQ node runs as the
# rabbitmq user, so its copy lives under /var/lib/rabbitmq.
TLS_DIR="$REPO_ROOT/tools/tls/.certs"
RABBITMQ_TLS_DIR="/var/lib/rabbitmq/test-tls"
export RABBITMQ_CONFIG_FILE="$RABBITMQ_TLS_DIR/rabbitmq.conf"
export RABBITMQ_NODENAME="${RABBITMQ_NODENAME:-rabbit@localhost}"
export RABBITMQ_PID_FILE="/var/lib/rabbitmq/mnesia/$RABBITMQ_NODENAME.pid"
RABBITMQ_LOG="/var/log/rabbitmq/$RABBITMQ_NODENAME.log"
RABBITMQ_START_LOG="/var/log/rabbitmq/services-start.log"

# ---------------------------------------------------------------------------------------------------- helpers

log() { printf '[services] %s\n' "$*"; }

# Failures are reported once: by fail() with its reason, or by the EXIT trap with the command that stopped set -e.
FAILURE_REPORTED=
fail() {
  printf '[services] FAILED: %s\n' "$*" >&2
  FAILURE_REPORTED=1
  exit 1
}

POLICY_RC_D=/usr/sbin/policy-rc.d
ADDED_POLICY_RC_D=
remove_policy_rc_d() {
  [ -z "$ADDED_POLICY_RC_D" ] || rm -f "$POLICY_RC_D"
  ADDED_POLICY_RC_D=
}

on_exit() {
  local rc=$?
  remove_policy_rc_d
  if [ "$rc" != 0 ] && [ -z "$FAILURE_REPORTED" ]; then
    printf '[services] FAILED: "%s" exited with %s\n' "$BASH_COMMAND" "$rc" >&2
  fi
}
trap on_exit EXIT

now() { date +%s.%N; }
since() { awk -v s="$1" -v e="$(date +%s.%N)" 'BEGIN { printf "%.1f s", e - s }'; }

need_root() { [ "$(id -u)" = 0 ] || fail "$1 needs root; run as root or do it yourself first"; }

port_open() { timeout 2 bash -c "exec 3<>/dev/tcp/127.0.0.1/$1" 2>/dev/null; }

# Prints the last lines of a log file, if there is one.
show_log() {
  [ -s "$1" ] || return 0
  printf '[services] last %s lines of %s:\n' "$2" "$1" >&2
  tail -n "$2" "$1" >&2
}

APT_UPDATED=

# apt_install <package>...: installs without starting any service (there may be no init system).
apt_install() {
  need_root "installing $*"
  local started rc=0
  started="$(now)"
  log "installing $* with apt-get"
  if [ -z "$APT_UPDATED" ]; then
    apt-get update || log "apt-get update failed; trying the package lists already there"
    APT_UPDATED=1
  fi
  # A postinst that starts its service through invoke-rc.d is told "not now" (101) instead of failing.
  if [ ! -e "$POLICY_RC_D" ]; then
    printf '#!/bin/sh\nexit 101\n' >"$POLICY_RC_D"
    chmod 755 "$POLICY_RC_D"
    ADDED_POLICY_RC_D=1
  fi
  mkdir -p /usr/share/man/man1 # openjdk's postinst fails without it on slim images
  DEBIAN_FRONTEND=noninteractive apt-get install -y -o DPkg::Lock::Timeout=120 "$@" || rc=$?
  remove_policy_rc_d
  [ "$rc" = 0 ] || fail "apt-get install $* exited with $rc"
  log "installed $* in $(since "$started")"
}

# --------------------------------------------------------------------------------------------------- RabbitMQ

# ---------------------------------------------------------------------------------------------------- TLS

tls_certs() {
  if [ ! -f "$TLS_DIR/client.key" ]; then
    command -v openssl >/dev/null 2>&1 || apt_install openssl
    rm -rf "$TLS_DIR"
    mkdir -p "$TLS_DIR"
    (
      cd "$TLS_DIR"
      openssl req -x509 -newkey rsa:2048 -nodes -days 3650 -subj "/CN=nestjs-celery Test CA" -keyout ca.key -out ca.crt
      printf "subjectAltName=IP:127.0.0.1,DNS:localhost\nextendedKeyUsage=serverAuth\n" >server.ext
      openssl req -newkey rsa:2048 -nodes -subj "/CN=localhost" -keyout server.key -out server.csr
      openssl x509 -req -in server.csr -CA ca.crt -CAkey ca.key -CAcreateserial -days 3650 -extfile server.ext -out server.crt
      cat server.key server.crt >server-keystore.pem
      printf "extendedKeyUsage=clientAuth\n" >client.ext
      openssl req -newkey rsa:2048 -nodes -subj "/CN=nestjs-celery-test-client" -keyout client.key -out client.csr
      openssl x509 -req -in client.csr -CA ca.crt -CAkey ca.key -CAcreateserial -days 3650 -extfile client.ext -out client.crt
    ) >"$TLS_DIR/openssl.log" 2>&1 || { cat "$TLS_DIR/openssl.log"; fail "could not make the test certificates"; }
    log "tls: test CA and certificates made in $TLS_DIR"
  fi
}

rabbitmq_tls_config() {
  mkdir -p "$RABBITMQ_TLS_DIR"
  cp "$TLS_DIR"/{ca.crt,server.crt,server.key} "$RABBITMQ_TLS_DIR/"
  cat >"$RABBITMQ_CONFIG_FILE" <<CONF
listeners.tcp.default = $RABBITMQ_PORT
listeners.ssl.default = $RABBITMQ_TLS_PORT
ssl_options.cacertfile = $RABBITMQ_TLS_DIR/ca.crt
ssl_options.certfile = $RABBITMQ_TLS_DIR/server.crt
ssl_options.keyfile = $RABBITMQ_TLS_DIR/server.key
ssl_options.verify = verify_peer
ssl_options.fail_if_no_peer_cert = false
CONF
  chown -R rabbitmq:rabbitmq "$RABBITMQ_TLS_DIR" 2>/dev/null || true
  chmod 600 "$RABBITMQ_TLS_DIR/server.key"
}

rabbitmq_installed() { command -v rabbitmq-server >/dev/null 2>&1; }

# True when 127.0.0.1:5672 answers the AMQP 0-9-1 protocol header with a Connection.Start frame (type 1, channel 0).
rabbitmq_answers() {
  local reply
  reply="$(timeout 3 bash -c "exec 3<>/dev/tcp/127.0.0.1/$RABBITMQ_PORT && printf 'AMQP\x00\x00\x09\x01' >&3 && head -c 3 <&3" \
    2>/dev/null | od -An -tx1 | tr -d ' \n')" || true
  [ "$reply" = "010000" ]
}

# Prints the pid of our RabbitMQ node if it is alive.
rabbitmq_pid() {
  local pid
  pid="$(cat "$RABBITMQ_PID_FILE" 2>/dev/null)" || return 1
  [ -n "$pid" ] && kill -0 "$pid" 2>/dev/null && echo "$pid"
}

RABBITMQ_WAIT_PID=

rabbitmq_start() {
  if rabbitmq_answers; then
    log "rabbitmq: already running, AMQP on 127.0.0.1:$RABBITMQ_PORT"
    return
  fi
  rabbitmq_installed || apt_install rabbitmq-server
  need_root "starting RabbitMQ"
  if RABBITMQ_WAIT_PID="$(rabbitmq_pid)"; then
    log "rabbitmq: node $RABBITMQ_NODENAME is still starting (pid $RABBITMQ_WAIT_PID)"
    return
  fi
  rabbitmq_tls_config
  log "rabbitmq: starting node $RABBITMQ_NODENAME (amqp $RABBITMQ_PORT, amqps $RABBITMQ_TLS_PORT), log $RABBITMQ_LOG"
  # Debian's wrapper runs the node as the rabbitmq user; the environment (RABBITMQ_*) goes along. The node runs in
  # the foreground of a new session rather than with -detached: a node that cannot boot (an unresolvable host in
  # its name, say) then leaves its reason in the start log and its exit is seen at once; -detached loses both.
  setsid nohup rabbitmq-server </dev/null >"$RABBITMQ_START_LOG" 2>&1 &
  RABBITMQ_WAIT_PID=$!
}

rabbitmq_wait() {
  local started deadline
  started="$(now)"
  deadline=$((SECONDS + SERVICES_TIMEOUT))
  until rabbitmq_answers; do
    if [ -n "$RABBITMQ_WAIT_PID" ] && ! kill -0 "$RABBITMQ_WAIT_PID" 2>/dev/null; then
      show_log "$RABBITMQ_START_LOG" 50
      show_log "$RABBITMQ_LOG" 50
      fail "RabbitMQ node $RABBITMQ_NODENAME exited while starting"
    fi
    if [ "$SECONDS" -ge "$deadline" ]; then
      show_log "$RABBITMQ_START_LOG" 50
      show_log "$RABBITMQ_LOG" 50
      fail "RabbitMQ did not answer AMQP on 127.0.0.1:$RABBITMQ_PORT within $SERVICES_TIMEOUT s"
    fi
    sleep 0.5
  done
  log "rabbitmq: ready, AMQP on 127.0.0.1:$RABBITMQ_PORT (waited $(since "$started"))"
}

rabbitmq_stop() {
  if ! rabbitmq_pid >/dev/null; then
    if rabbitmq_answers; then
      log "rabbitmq: something else serves 127.0.0.1:$RABBITMQ_PORT (not node $RABBITMQ_NODENAME); left alone"
    else
      log "rabbitmq: not running"
    fi
    return
  fi
  local started
  started="$(now)"
  log "rabbitmq: stopping node $RABBITMQ_NODENAME"
  # With the pid file, rabbitmqctl returns only once the node's OS process has exited.
  rabbitmqctl stop "$RABBITMQ_PID_FILE" || fail "rabbitmqctl stop"
  log "rabbitmq: stopped in $(since "$started")"
}

rabbitmq_status() {
  if rabbitmq_answers; then
    log "rabbitmq: running, AMQP on 127.0.0.1:$RABBITMQ_PORT"
  else
    log "rabbitmq: stopped (nothing answers AMQP on 127.0.0.1:$RABBITMQ_PORT)"
    return 1
  fi
}

# -------------------------------------------------------------------------------------------------- Cassandra

JAVA=

java_major() { "$1" -version 2>&1 | awk -F'"' '/version/ { split($2, v, "."); print (v[1] == "1") ? v[2] : v[1]; exit }'; }

# Sets JAVA to a Java 17 (or 11) runtime, the only ones Cassandra 5.0 runs on; installs Java 17 if there is none.
find_java() {
  local candidate
  for candidate in "${JAVA_HOME:+$JAVA_HOME/bin/java}" "$(command -v java || true)" /usr/lib/jvm/java-17-openjdk-*/bin/java; do
    if [ -z "$candidate" ] || [ ! -x "$candidate" ]; then continue; fi
    case "$(java_major "$candidate")" in
      17 | 11)
        JAVA="$candidate"
        return
        ;;
    esac
  done
  apt_install openjdk-17-jre-headless
  for candidate in /usr/lib/jvm/java-17-openjdk-*/bin/java; do
    [ -x "$candidate" ] && JAVA="$candidate" && return
  done
  fail "no Java 17 runtime found after installing openjdk-17-jre-headless"
}

# Copies cassandra-all and its runtime dependencies from Maven Central into CASSANDRA_LIB, once.
cassandra_fetch() {
  [[ "$CASSANDRA_VERSION" =~ ^[0-9]+\.[0-9]+\.[0-9]+$ ]] || fail "CASSANDRA_VERSION=$CASSANDRA_VERSION is not a release number like 5.0.9"
  [ -f "$CASSANDRA_LIB/cassandra-all-$CASSANDRA_VERSION.jar" ] && return
  command -v mvn >/dev/null 2>&1 || apt_install maven
  local started partial="$CASSANDRA_LIB.partial" mvn_log="$CASSANDRA_LIB.mvn.log"
  started="$(now)"
  log "cassandra: fetching cassandra-all $CASSANDRA_VERSION and its dependencies with Maven (cached in ~/.m2)"
  rm -rf "$partial"
  mkdir -p "$(dirname "$CASSANDRA_LIB")"
  # Maven's output goes to a log (shown on failure): even in batch mode, 3.8 prints colour escapes.
  JAVA_HOME="$(dirname "$(dirname "$(readlink -f "$JAVA")")")" mvn -B -ntp -f "$CASSANDRA_DIR/pom.xml" \
    -Dcassandra.version="$CASSANDRA_VERSION" \
    org.apache.maven.plugins:maven-dependency-plugin:3.8.1:copy-dependencies \
    -DoutputDirectory="$partial" -DincludeScope=runtime >"$mvn_log" 2>&1 || {
    show_log "$mvn_log" 40
    fail "mvn copy-dependencies of cassandra-all $CASSANDRA_VERSION (log: $mvn_log)"
  }
  [ -f "$partial/cassandra-all-$CASSANDRA_VERSION.jar" ] || fail "Maven did not deliver cassandra-all-$CASSANDRA_VERSION.jar"
  mv "$partial" "$CASSANDRA_LIB" # only a complete download counts
  log "cassandra: $(find "$CASSANDRA_LIB" -name '*.jar' | wc -l) jars, $(du -sh "$CASSANDRA_LIB" | cut -f1)," \
    "fetched in $(since "$started")"
}

# Prints the pid of our Cassandra JVM if it is alive.
cassandra_pid() {
  local pid
  pid="$(cat "$CASSANDRA_PID_FILE" 2>/dev/null)" || return 1
  [ -n "$pid" ] && grep -qa CassandraDaemon "/proc/$pid/cmdline" 2>/dev/null && echo "$pid"
}

CASSANDRA_WAIT_PID=

cassandra_start() {
  local pid
  if pid="$(cassandra_pid)"; then
    log "cassandra: already running (pid $pid)"
    CASSANDRA_WAIT_PID="$pid"
    return
  fi
  if port_open "$CASSANDRA_PORT"; then
    log "cassandra: something not started by this script listens on 127.0.0.1:$CASSANDRA_PORT; using it"
    return
  fi
  find_java
  cassandra_fetch
  log "cassandra: starting $CASSANDRA_VERSION with $JAVA (Java $(java_major "$JAVA")), heap $CASSANDRA_HEAP"
  if [ "${CASSANDRA_KEEP_DATA:-0}" = 1 ] && [ -d "$CASSANDRA_RUN/data" ]; then
    log "cassandra: keeping the data of the last run (CASSANDRA_KEEP_DATA=1)"
  else
    rm -rf "$CASSANDRA_RUN"
  fi
  mkdir -p "$CASSANDRA_RUN"/{conf,data,logs,tmp,triggers}
  sed -e "s#@RUN@#$CASSANDRA_RUN#g" -e "s#@TLS@#$TLS_DIR#g" -e "s#@NATIVE_PORT@#$CASSANDRA_PORT#g" \
    -e "s#@STORAGE_PORT@#$CASSANDRA_STORAGE_PORT#g" "$CASSANDRA_DIR/cassandra.yaml.in" >"$CASSANDRA_RUN/conf/cassandra.yaml"
  if [ -n "${CASSANDRA_EXTRA_YAML:-}" ]; then
    printf '# from CASSANDRA_EXTRA_YAML=%s\n' "$CASSANDRA_EXTRA_YAML" >>"$CASSANDRA_RUN/conf/cassandra.yaml"
    cat "$CASSANDRA_EXTRA_YAML" >>"$CASSANDRA_RUN/conf/cassandra.yaml"
  fi
  cp "$CASSANDRA_DIR/logback.xml" "$CASSANDRA_RUN/conf/logback.xml"
  local jamm=("$CASSANDRA_LIB"/jamm-*.jar)

  # The command line of cassandra-test-node.md 2.3: conf/jvm17-server.options, jvm-server.options and bin/cassandra
  # of the 5.0 distribution, plus system properties that make a single test node start quickly.
  local -a jvm_options=(
    "-Xms$CASSANDRA_HEAP" "-Xmx$CASSANDRA_HEAP" -Xss256k -XX:+UseG1GC -XX:+ExitOnOutOfMemoryError
    -XX:+PerfDisableSharedMem -ea -da:net.openhft...
    -Djava.net.preferIPv4Stack=true -Dchronicle.analytics.disable=true -Djdk.attach.allowAttachSelf=true
    -Dio.netty.tryReflectionSetAccessible=true -Dio.netty.allocator.useCacheForAllThreads=true
    -Dio.netty.allocator.maxOrder=11
  )
  local module
  for module in java.base/jdk.internal.misc java.management.rmi/com.sun.jmx.remote.internal.rmi \
    java.management/com.sun.jmx.remote.security java.rmi/sun.rmi.registry java.rmi/sun.rmi.server java.sql/java.sql \
    java.base/java.lang.ref jdk.unsupported/sun.misc jdk.attach/sun.tools.attach jdk.compiler/com.sun.tools.javac.file; do
    jvm_options+=(--add-exports "$module=ALL-UNNAMED")
  done
  for module in java.base/java.lang.module java.base/jdk.internal.loader java.base/jdk.internal.ref \
    java.base/jdk.internal.reflect java.base/jdk.internal.math java.base/jdk.internal.module \
    java.base/jdk.internal.util.jar jdk.management/com.sun.management.internal java.base/sun.nio.ch java.base/java.io \
    java.base/java.lang.reflect java.base/java.lang java.base/java.util java.base/java.nio jdk.compiler/com.sun.tools.javac; do
    jvm_options+=(--add-opens "$module=ALL-UNNAMED")
  done
  jvm_options+=(
    "-javaagent:${jamm[0]}"
    -Dcassandra-foreground=yes
    "-Dcassandra.config=file://$CASSANDRA_RUN/conf/cassandra.yaml"
    "-Dcassandra.storagedir=$CASSANDRA_RUN/data"
    "-Dcassandra.logdir=$CASSANDRA_RUN/logs"
    "-Dcassandra.triggers_dir=$CASSANDRA_RUN/triggers"
    "-Dlogback.configurationFile=$CASSANDRA_RUN/conf/logback.xml"
    "-Djava.io.tmpdir=$CASSANDRA_RUN/tmp" "-Djna.tmpdir=$CASSANDRA_RUN/tmp"
    -Dcassandra.skip_wait_for_gossip_to_settle=0 -Dcassandra.ring_delay_ms=1000
    -Dcassandra.load_ring_state=false -Dcassandra.superuser_setup_delay_ms=500
    -Dcassandra.unsafesystem=true
    -Dcassandra.test.flush_local_schema_changes=false
    -Dcassandra.memtable_row_overhead_computation_step=100
    -cp "$CASSANDRA_RUN/conf:$CASSANDRA_LIB/*"
  )
  if [ "${CASSANDRA_SKIP_SYNC:-0}" = 1 ]; then
    jvm_options=(-Dcassandra.skip_sync=true "${jvm_options[@]}")
    log "cassandra: no fsync (CASSANDRA_SKIP_SYNC=1)"
  fi
  # setsid + nohup + no inherited stdio: the JVM outlives this script and does not hold the caller's pipes open.
  setsid nohup "$JAVA" "${jvm_options[@]}" org.apache.cassandra.service.CassandraDaemon \
    </dev/null >"$CASSANDRA_LOG" 2>&1 &
  CASSANDRA_WAIT_PID=$!
  echo "$CASSANDRA_WAIT_PID" >"$CASSANDRA_PID_FILE"
  log "cassandra: pid $CASSANDRA_WAIT_PID, log $CASSANDRA_LOG"
}

# Waits for CQL and creates the keyspace; on failure shows the end of Cassandra's log.
cassandra_wait() {
  local started rc=0
  started="$(now)"
  CASS_PID="$CASSANDRA_WAIT_PID" CASS_WAIT_MS=$((SERVICES_TIMEOUT * 1000)) CASSANDRA_KEYSPACE="$CASSANDRA_KEYSPACE" \
    CASS_PORT="$CASSANDRA_PORT" node "$REPO_ROOT/scripts/wait-for-cassandra.js" || rc=$?
  if [ "$rc" != 0 ]; then
    show_log "$CASSANDRA_LOG" 100
    fail "Cassandra is not ready (wait-for-cassandra.js exited with $rc)"
  fi
  log "cassandra: ready, CQL on 127.0.0.1:$CASSANDRA_PORT (waited $(since "$started"))"
}

cassandra_stop() {
  local pid started
  if ! pid="$(cassandra_pid)"; then
    rm -f "$CASSANDRA_PID_FILE"
    if port_open "$CASSANDRA_PORT"; then
      log "cassandra: something not started by this script listens on 127.0.0.1:$CASSANDRA_PORT; left alone"
    else
      log "cassandra: not running"
    fi
    return
  fi
  started="$(now)"
  log "cassandra: stopping pid $pid"
  kill -TERM "$pid" 2>/dev/null || true # the shutdown hook drains: transports stop, memtables flush
  for _ in $(seq 60); do
    cassandra_pid >/dev/null || break
    sleep 0.5
  done
  if cassandra_pid >/dev/null; then
    log "cassandra: still running after 30 s; sending KILL"
    kill -KILL "$pid" 2>/dev/null || true
    for _ in $(seq 20); do
      cassandra_pid >/dev/null || break
      sleep 0.5
    done
  fi
  rm -f "$CASSANDRA_PID_FILE"
  log "cassandra: stopped in $(since "$started")"
}

cassandra_status() {
  local pid
  if port_open "$CASSANDRA_PORT"; then
    pid="$(cassandra_pid)" || pid="not started by this script"
    log "cassandra: running, CQL on 127.0.0.1:$CASSANDRA_PORT (pid $pid)"
  else
    log "cassandra: stopped (nothing listens on 127.0.0.1:$CASSANDRA_PORT)"
    return 1
  fi
}

# ------------------------------------------------------------------------------------------------------- main

up() {
  local started
  started="$(now)"
  # Settings and the Cassandra probe's needs (the project's cassandra-driver) are checked before anything starts.
  [[ "$CASSANDRA_KEYSPACE" =~ ^[A-Za-z][A-Za-z0-9_]{0,47}$ ]] ||
    fail "CASSANDRA_KEYSPACE=$CASSANDRA_KEYSPACE is not a plain CQL identifier (a letter, then letters, digits, _; 48 at most)"
  [[ "$SERVICES_TIMEOUT" =~ ^[1-9][0-9]*$ ]] || fail "SERVICES_TIMEOUT=$SERVICES_TIMEOUT is not a whole number of seconds"
  command -v node >/dev/null 2>&1 || fail "node is not on PATH"
  [ -f "$REPO_ROOT/node_modules/cassandra-driver/package.json" ] ||
    fail "node_modules/cassandra-driver is missing; run \`npm install\` in $REPO_ROOT first"
  tls_certs
  # Both start in the background first, so that their boots overlap.
  rabbitmq_start
  cassandra_start
  rabbitmq_wait
  cassandra_wait
  log "up: RabbitMQ and Cassandra are ready (total $(since "$started"))"
}

down() {
  cassandra_stop
  rabbitmq_stop
}

# Fetches the jars of CASSANDRA_VERSION and of CASSANDRA_EXTRA_VERSIONS (cached in ~/.m2 and tools/cassandra).
fetch_all() {
  local version
  find_java
  cassandra_fetch
  for version in $CASSANDRA_EXTRA_VERSIONS; do
    [ "$version" = "$CASSANDRA_VERSION" ] && continue
    CASSANDRA_VERSION="$version" CASSANDRA_LIB="$CASSANDRA_DIR/.cassandra-$version/lib" cassandra_fetch
  done
}

# A private node of a test: never the shared node's port, storage port or directory.
private_node_checks() {
  [[ "$CASSANDRA_PORT" =~ ^[0-9]+$ ]] && [ "$CASSANDRA_PORT" != 9042 ] ||
    fail "node-up/node-down need CASSANDRA_PORT, a port other than the shared node's 9042 (got '$CASSANDRA_PORT')"
  [[ "$CASSANDRA_STORAGE_PORT" =~ ^[0-9]+$ ]] && [ "$CASSANDRA_STORAGE_PORT" != 7000 ] ||
    fail "node-up/node-down need CASSANDRA_STORAGE_PORT, a port other than the shared node's 7000 (got '$CASSANDRA_STORAGE_PORT')"
  [[ "$CASSANDRA_RUN" = /* ]] || fail "node-up/node-down need CASSANDRA_RUN, an absolute directory (got '$CASSANDRA_RUN')"
  [ "$(readlink -f "$CASSANDRA_RUN")" != "$(readlink -f "$CASSANDRA_SHARED_RUN")" ] || fail "CASSANDRA_RUN is the shared node's directory"
  CASSANDRA_PID_FILE="$CASSANDRA_RUN/cassandra.pid"
  CASSANDRA_LOG="$CASSANDRA_RUN/logs/cassandra.out"
}

node_up() {
  private_node_checks
  ! port_open "$CASSANDRA_PORT" || fail "something already listens on 127.0.0.1:$CASSANDRA_PORT"
  command -v node >/dev/null 2>&1 || fail "node is not on PATH"
  tls_certs
  cassandra_start
  cassandra_wait
}

status() {
  local rc=0
  rabbitmq_status || rc=1
  cassandra_status || rc=1
  return "$rc"
}

case "${1:-}" in
  up)
    up
    fetch_all # the versions of the suites' private nodes, while the shared one serves
    ;;
  down) down ;;
  node-up) node_up ;;
  node-down)
    private_node_checks
    cassandra_stop
    ;;
  fetch) fetch_all ;;
  status)
    FAILURE_REPORTED=1 # a stopped service is an answer, not a failure of this script
    status
    ;;
  *)
    FAILURE_REPORTED=1
    echo "usage: bash scripts/services.sh up|down|status|node-up|node-down|fetch" >&2
    exit 2
    ;;
esac
