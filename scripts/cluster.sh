#!/usr/bin/env bash
# Local 3-node clusters for tests, on this one machine, next to (never instead of) the single-node services of
# scripts/services.sh:
#   RabbitMQ   3 nodes of Debian's rabbitmq-server in one cluster: rcl1@localhost, rcl2@localhost, rcl3@localhost,
#              AMQP on 127.0.0.1:5681 / 5682 / 5683 (guest/guest), distribution ports 25681 / 25682 / 25683
#   Cassandra  3 nodes of Apache Cassandra 5.0.9 (the jars of services.sh) in cluster 'nestjs-celery local cluster',
#              on 127.0.0.1, 127.0.0.2, 127.0.0.3: CQL 9242 and storage 7200 on each address, data centre
#              'datacenter1', PasswordAuthenticator (cassandra/cassandra), system_auth at RF 3, keyspace
#              celery_cluster (NetworkTopologyStrategy, datacenter1: 3)
#
# Usage: bash scripts/cluster.sh up|down|status [--verify]   (npm run services:up:cluster|services:down:cluster|
#        services:status:cluster; `bash scripts/services.sh up|down|status --cluster` comes here too)
#   up       start all six nodes, join them into the two clusters, check them (3 running RabbitMQ nodes, a quorum
#            queue with 3 members; every Cassandra node sees 2 peers, the driver connects to 3 hosts) and create
#            the keyspace. Fresh data every time, unless CLUSTER_KEEP_DATA=1. Quick when all six already run;
#            when only some run, they are stopped and all six started again.
#   down     stop all six (Cassandra: TERM, KILL after 30 s; RabbitMQ: rabbitmqctl stop).
#   status   one line per node; exit 0 when all six are up, 1 otherwise. With --verify also: a message published
#            to a quorum queue through 5681 is read through 5683, and a row is written and read at LOCAL_QUORUM
#            in celery_cluster through all three contact points.
#
# Serialize runs with `flock -o /tmp/nestjs-celery-cluster.lock bash scripts/cluster.sh ...` (not the lock of
# the single-node services, which this script never touches).
#
# Environment overrides:
#   CLUSTER_KEEP_DATA       1: start the nodes on the data of their last run instead of fresh ones
#   CASSANDRA_CLUSTER_HEAP  heap of each Cassandra node (-Xms and -Xmx); default 384m
#   CLUSTER_TIMEOUT         seconds to wait for each node; default 240
#   CASSANDRA_VERSION       default 5.0.9; its jars are fetched by `bash scripts/services.sh fetch` if missing
#   CASSANDRA_USERNAME, CASSANDRA_PASSWORD   default cassandra/cassandra
#
# Needs root (Debian's RabbitMQ runs as the rabbitmq user), Java 17 and `npm install` (the probes use the
# project's cassandra-driver and amqplib). Files: everything under tools/cluster/.run (rabbit-N, cassandra-N:
# data, logs, pid files), which `up` replaces unless CLUSTER_KEEP_DATA=1. The Erlang cookie is the rabbitmq user's
# (/var/lib/rabbitmq/.erlang.cookie), as for every node and rabbitmqctl run as root through Debian's wrappers.
set -euo pipefail

# The nodes outlive this script: they must not inherit its open files (a lock's descriptor, say). Bash keeps 255.
for fd_path in /proc/$$/fd/*; do
  fd_number="${fd_path##*/}"
  if [ "$fd_number" -gt 2 ] && [ "$fd_number" -lt 255 ]; then eval "exec ${fd_number}>&-" 2>/dev/null || true; fi
done
unset fd_path fd_number

REPO_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
export PATH="$PATH:/usr/local/sbin:/usr/sbin:/sbin"

CLUSTER_DIR="$REPO_ROOT/tools/cluster"
RUN_DIR="$CLUSTER_DIR/.run"
CLUSTER_TIMEOUT="${CLUSTER_TIMEOUT:-240}"
CLUSTER_KEEP_DATA="${CLUSTER_KEEP_DATA:-0}"
CASSANDRA_CLUSTER_HEAP="${CASSANDRA_CLUSTER_HEAP:-384m}"
CASSANDRA_VERSION="${CASSANDRA_VERSION:-5.0.9}"
CASSANDRA_LIB="$REPO_ROOT/tools/cassandra/.cassandra-$CASSANDRA_VERSION/lib"
export CASSANDRA_USERNAME="${CASSANDRA_USERNAME:-cassandra}" CASSANDRA_PASSWORD="${CASSANDRA_PASSWORD:-cassandra}"

NODES=(1 2 3)
# Not 9142-9145 / 7100-7104: test/integration/cassandra-stream-misroute runs private nodes there.
CQL_PORT=9242
STORAGE_PORT=7200
KEYSPACE=celery_cluster
# initial_token of node 1, 2, 3 (tools/cluster/cassandra.yaml.in says how they are chosen).
CASSANDRA_TOKENS=(
  "-8454757700450211158,-3843071682022823255,768614336404564648,5380300354831952551"
  "-6917529027641081857,-2305843009213693954,2305843009213693949,6917529027641081852"
  "-5380300354831952556,-768614336404564653,3843071682022823250,8454757700450211153"
)
# For scripts/cluster-probe.js.
export CLUSTER_CQL_PORT="$CQL_PORT" CLUSTER_KEYSPACE="$KEYSPACE" CLUSTER_AMQP_PORTS="5681,5682,5683"
export CLUSTER_WAIT_MS=$((CLUSTER_TIMEOUT * 1000))

rabbit_name() { echo "rcl$1@localhost"; }
rabbit_port() { echo $((5680 + $1)); }
rabbit_dist_port() { echo $((25680 + $1)); }
rabbit_dir() { echo "$RUN_DIR/rabbit-$1"; }
cassandra_address() { echo "127.0.0.$1"; }
cassandra_dir() { echo "$RUN_DIR/cassandra-$1"; }

# ---------------------------------------------------------------------------------------------------- helpers

log() { printf '[cluster] %s\n' "$*"; }

FAILURE_REPORTED=
fail() {
  printf '[cluster] FAILED: %s\n' "$*" >&2
  FAILURE_REPORTED=1
  exit 1
}
on_exit() {
  local rc=$?
  if [ "$rc" != 0 ] && [ -z "$FAILURE_REPORTED" ]; then
    printf '[cluster] FAILED: "%s" exited with %s\n' "$BASH_COMMAND" "$rc" >&2
  fi
}
trap on_exit EXIT

now() { date +%s.%N; }
since() { awk -v s="$1" -v e="$(date +%s.%N)" 'BEGIN { printf "%.1f s", e - s }'; }

# port_open <address> <port>
port_open() { timeout 2 bash -c "exec 3<>/dev/tcp/$1/$2" 2>/dev/null; }

show_log() {
  [ -s "$1" ] || return 0
  printf '[cluster] last %s lines of %s:\n' "$2" "$1" >&2
  tail -n "$2" "$1" >&2
}

# alive <pid>: a live process, not a zombie.
alive() {
  [ -n "$1" ] && [ -r "/proc/$1/stat" ] || return 1
  local state
  state="$(sed 's/.*) //' "/proc/$1/stat" 2>/dev/null | cut -c1)"
  [ -n "$state" ] && [ "$state" != Z ]
}

rss_of() { awk '/^VmRSS:/ { printf "%.0f MiB", $2 / 1024 }' "/proc/$1/status" 2>/dev/null || echo "? MiB"; }

# --------------------------------------------------------------------------------------------------- RabbitMQ

# True when 127.0.0.1:<port> answers the AMQP 0-9-1 header with a Connection.Start frame.
rabbit_answers() {
  local reply
  reply="$(timeout 3 bash -c "exec 3<>/dev/tcp/127.0.0.1/$1 && printf 'AMQP\x00\x00\x09\x01' >&3 && head -c 3 <&3" \
    2>/dev/null | od -An -tx1 | tr -d ' \n')" || true
  [ "$reply" = "010000" ]
}

# Prints the pid of node n's Erlang VM if it is alive (RabbitMQ writes the pid file at boot).
rabbit_pid() {
  local pid cmdline
  pid="$(cat "$(rabbit_dir "$1")/rabbit.pid" 2>/dev/null)" || return 1
  alive "$pid" || return 1
  cmdline="$(tr '\0' ' ' <"/proc/$pid/cmdline" 2>/dev/null)" || return 1
  [[ "$cmdline" == *"-nestjs_celery_cluster_node $(rabbit_name "$1")"* ]] && echo "$pid"
}

rabbit_up() { rabbit_pid "$1" >/dev/null && rabbit_answers "$(rabbit_port "$1")"; }

# rabbitmqctl against node n (as root, Debian's wrapper runs it as the rabbitmq user, with its cookie).
ctl() {
  local n="$1"
  shift
  rabbitmqctl -q -n "$(rabbit_name "$n")" "$@"
}

rabbit_start() {
  local n="$1" dir
  dir="$(rabbit_dir "$n")"
  mkdir -p "$dir/mnesia" "$dir/log"
  printf '[].\n' >"$dir/enabled_plugins" # no plugins: no management UI, no other listeners
  # Its own (nearly empty) config, so that nothing of /etc/rabbitmq or of the single node's config applies.
  printf 'loopback_users.guest = true\n' >"$dir/rabbitmq.conf"
  chown -R rabbitmq:rabbitmq "$dir"
  # The node runs in the foreground of a new session, as services.sh runs the single node, rather than with
  # -detached: a node that cannot boot then leaves its reason in start.log and its exit is seen at once.
  # Debian's wrapper runs it as the rabbitmq user; the RABBITMQ_* variables go along.
  (
    RABBITMQ_NODENAME="$(rabbit_name "$n")"
    RABBITMQ_NODE_PORT="$(rabbit_port "$n")"
    RABBITMQ_DIST_PORT="$(rabbit_dist_port "$n")"
    export RABBITMQ_NODENAME RABBITMQ_NODE_PORT RABBITMQ_DIST_PORT RABBITMQ_NODE_IP_ADDRESS=127.0.0.1
    export RABBITMQ_MNESIA_BASE="$dir/mnesia" RABBITMQ_LOG_BASE="$dir/log" RABBITMQ_PID_FILE="$dir/rabbit.pid"
    export RABBITMQ_ENABLED_PLUGINS_FILE="$dir/enabled_plugins" RABBITMQ_CONFIG_FILE="$dir/rabbitmq.conf"
    export RABBITMQ_ADVANCED_CONFIG_FILE="$dir/advanced.config"
    export RABBITMQ_CONF_ENV_FILE="$dir/rabbitmq-env.conf" # none: /etc/rabbitmq/rabbitmq-env.conf does not apply
    # The Erlang VM's command line does not name the node; this unused init flag does (for rabbit_pid, pgrep, ps).
    export RABBITMQ_SERVER_ADDITIONAL_ERL_ARGS="-nestjs_celery_cluster_node $RABBITMQ_NODENAME"
    setsid nohup rabbitmq-server </dev/null >"$dir/start.log" 2>&1 &
    echo $! >"$dir/launcher.pid"
  )
  log "rabbitmq $(rabbit_name "$n"): starting, AMQP 127.0.0.1:$(rabbit_port "$n"), dist $(rabbit_dist_port "$n"), log $dir/log"
}

rabbit_wait() {
  local n="$1" dir deadline launcher
  dir="$(rabbit_dir "$n")"
  deadline=$((SECONDS + CLUSTER_TIMEOUT))
  launcher="$(cat "$dir/launcher.pid" 2>/dev/null || true)"
  until rabbit_answers "$(rabbit_port "$n")"; do
    if [ -n "$launcher" ] && ! alive "$launcher"; then
      show_log "$dir/start.log" 40
      show_log "$dir/log/$(rabbit_name "$n").log" 40
      fail "RabbitMQ node $(rabbit_name "$n") exited while starting"
    fi
    if [ "$SECONDS" -ge "$deadline" ]; then
      show_log "$dir/start.log" 40
      show_log "$dir/log/$(rabbit_name "$n").log" 40
      fail "RabbitMQ node $(rabbit_name "$n") did not answer AMQP on 127.0.0.1:$(rabbit_port "$n") within $CLUSTER_TIMEOUT s"
    fi
    sleep 0.5
  done
}

# Prints the running nodes of node 1's cluster, one a line.
rabbit_running_nodes() {
  ctl 1 cluster_status --formatter json |
    node -e 'let s = ""; process.stdin.on("data", (d) => (s += d)).on("end", () =>
      console.log((JSON.stringify(JSON.parse(s).running_nodes).match(/[\w.-]+@[\w.-]+/g) || []).sort().join("\n")))'
}

rabbit_check_quorum_queue() {
  local queue="cluster-check-$$" members
  node "$REPO_ROOT/scripts/cluster-probe.js" rabbit-declare "$(rabbit_port 1)" "$queue"
  members="$(ctl 1 list_queues --no-table-headers name type members | awk -v q="$queue" '$1 == q')"
  ctl 1 delete_queue "$queue" >/dev/null
  [ "$(grep -o 'rcl[123]@localhost' <<<"$members" | sort -u | wc -l)" = 3 ] ||
    fail "quorum queue $queue does not have 3 members: $members"
  log "rabbitmq: quorum queue check: $members (deleted)"
}

rabbit_cluster_up() {
  local n started keep=0
  started="$(now)"
  if [ "$CLUSTER_KEEP_DATA" = 1 ] && [ -d "$(rabbit_dir 1)/mnesia/$(rabbit_name 1)" ]; then
    keep=1
    log "rabbitmq: keeping the data of the last run (CLUSTER_KEEP_DATA=1); the nodes rejoin their cluster"
  fi
  # All three at once: a node restarted on its data waits for the others of its cluster while it boots.
  for n in "${NODES[@]}"; do rabbit_start "$n"; done
  for n in "${NODES[@]}"; do rabbit_wait "$n"; done
  log "rabbitmq: 3 nodes answer AMQP (took $(since "$started"))"
  if [ "$keep" = 0 ]; then
    started="$(now)"
    for n in 2 3; do
      ctl "$n" stop_app
      ctl "$n" join_cluster "$(rabbit_name 1)"
      ctl "$n" start_app
      log "rabbitmq: $(rabbit_name "$n") joined $(rabbit_name 1)"
    done
    log "rabbitmq: joined (took $(since "$started"))"
  fi
  local running
  running="$(rabbit_running_nodes)"
  [ "$(wc -l <<<"$running")" = 3 ] || fail "rabbitmqctl cluster_status shows these running nodes, not 3: $running"
  log "rabbitmq: cluster_status: running nodes $(tr '\n' ' ' <<<"$running")"
  rabbit_check_quorum_queue
}

rabbit_stop() {
  local n="$1" pid started
  if ! pid="$(rabbit_pid "$n")"; then
    log "rabbitmq $(rabbit_name "$n"): not running"
    return
  fi
  started="$(now)"
  # With the pid file, rabbitmqctl returns only once the node's OS process has exited.
  if ! ctl "$n" stop "$(rabbit_dir "$n")/rabbit.pid"; then
    log "rabbitmq $(rabbit_name "$n"): rabbitmqctl stop failed; sending TERM to pid $pid"
    kill -TERM "$pid" 2>/dev/null || true
    for _ in $(seq 60); do
      alive "$pid" || break
      sleep 0.5
    done
    if alive "$pid"; then kill -KILL "$pid" 2>/dev/null || true; fi
  fi
  log "rabbitmq $(rabbit_name "$n"): stopped (took $(since "$started"))"
}

# -------------------------------------------------------------------------------------------------- Cassandra

JAVA=

java_major() { "$1" -version 2>&1 | awk -F'"' '/version/ { split($2, v, "."); print (v[1] == "1") ? v[2] : v[1]; exit }'; }

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
  fail "no Java 17 (or 11) runtime; \`bash scripts/services.sh up\` installs one"
}

cassandra_pid() {
  local pid
  pid="$(cat "$(cassandra_dir "$1")/cassandra.pid" 2>/dev/null)" || return 1
  alive "$pid" && grep -qa CassandraDaemon "/proc/$pid/cmdline" && echo "$pid"
}

cassandra_up() { cassandra_pid "$1" >/dev/null && port_open "$(cassandra_address "$1")" "$CQL_PORT"; }

cassandra_start() {
  local n="$1" dir address pid
  dir="$(cassandra_dir "$n")"
  address="$(cassandra_address "$n")"
  if [ "$CLUSTER_KEEP_DATA" = 1 ] && [ -d "$dir/data" ]; then
    log "cassandra node $n: keeping the data of the last run (CLUSTER_KEEP_DATA=1)"
    [ "$n" != 1 ] || CASSANDRA_KEPT_DATA=1
  else
    rm -rf "$dir"
  fi
  mkdir -p "$dir"/{conf,data,logs,tmp,triggers}
  sed -e "s#@RUN@#$dir#g" -e "s#@ADDRESS@#$address#g" -e "s#@TOKENS@#${CASSANDRA_TOKENS[$((n - 1))]}#g" \
    -e "s#@NATIVE_PORT@#$CQL_PORT#g" -e "s#@STORAGE_PORT@#$STORAGE_PORT#g" \
    "$CLUSTER_DIR/cassandra.yaml.in" >"$dir/conf/cassandra.yaml"
  cp "$CLUSTER_DIR/cassandra-rackdc.properties" "$dir/conf/"
  cp "$REPO_ROOT/tools/cassandra/logback.xml" "$dir/conf/logback.xml"
  local jamm=("$CASSANDRA_LIB"/jamm-*.jar)
  # The command line of services.sh's single node (cassandra-test-node.md 2.3): no JMX port (none is set), and
  # the system properties that make a test node start quickly.
  local -a jvm_options=(
    "-Xms$CASSANDRA_CLUSTER_HEAP" "-Xmx$CASSANDRA_CLUSTER_HEAP" -Xss256k -XX:+UseG1GC -XX:+ExitOnOutOfMemoryError
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
    "-Dcassandra.config=file://$dir/conf/cassandra.yaml"
    "-Dcassandra.storagedir=$dir/data"
    "-Dcassandra.logdir=$dir/logs"
    "-Dcassandra.triggers_dir=$dir/triggers"
    "-Dlogback.configurationFile=$dir/conf/logback.xml"
    "-Djava.io.tmpdir=$dir/tmp" "-Djna.tmpdir=$dir/tmp"
    -Dcassandra.skip_wait_for_gossip_to_settle=0 -Dcassandra.ring_delay_ms=1000
    -Dcassandra.load_ring_state=false -Dcassandra.superuser_setup_delay_ms=500
    -Dcassandra.unsafesystem=true
    -Dcassandra.test.flush_local_schema_changes=false
    -Dcassandra.memtable_row_overhead_computation_step=100
    -cp "$dir/conf:$CASSANDRA_LIB/*"
  )
  setsid nohup "$JAVA" "${jvm_options[@]}" org.apache.cassandra.service.CassandraDaemon \
    </dev/null >"$dir/logs/cassandra.out" 2>&1 &
  pid=$!
  echo "$pid" >"$dir/cassandra.pid"
  log "cassandra node $n: starting on $address (CQL $CQL_PORT, storage $STORAGE_PORT), heap $CASSANDRA_CLUSTER_HEAP, pid $pid, log $dir/logs/cassandra.out"
}

# Waits until node n accepts a login (fresh cluster) or, with CLUSTER_KEEP_DATA=1, node 1 until it listens for CQL:
# a login needs 2 of the 3 replicas of system_auth then, and nodes 2 and 3 start only after node 1.
cassandra_wait() {
  local n="$1" rc=0 pid deadline
  if [ "$n" = 1 ] && [ "$CASSANDRA_KEPT_DATA" = 1 ]; then
    pid="$(cat "$(cassandra_dir 1)/cassandra.pid")"
    deadline=$((SECONDS + CLUSTER_TIMEOUT))
    until port_open "$(cassandra_address 1)" "$CQL_PORT"; do
      alive "$pid" && [ "$SECONDS" -lt "$deadline" ] || {
        show_log "$(cassandra_dir 1)/logs/cassandra.out" 60
        fail "Cassandra node 1 did not listen on $(cassandra_address 1):$CQL_PORT (pid $pid exited or $CLUSTER_TIMEOUT s passed)"
      }
      sleep 1
    done
    log "cassandra node 1: listens on $(cassandra_address 1):$CQL_PORT (restarted on its data)"
    return
  fi
  CLUSTER_PID="$(cat "$(cassandra_dir "$n")/cassandra.pid")" node "$REPO_ROOT/scripts/cluster-probe.js" cassandra-wait "$n" || rc=$?
  if [ "$rc" != 0 ]; then
    show_log "$(cassandra_dir "$n")/logs/cassandra.out" 60
    fail "Cassandra node $n is not ready (cluster-probe.js exited with $rc)"
  fi
}

cassandra_stop_all() {
  local n pid started any=0
  local -a pids=()
  started="$(now)"
  for n in "${NODES[@]}"; do
    if pid="$(cassandra_pid "$n")"; then
      log "cassandra node $n: stopping pid $pid"
      kill -TERM "$pid" 2>/dev/null || true # the shutdown hook drains: transports stop, memtables flush
      pids+=("$pid")
      any=1
    else
      log "cassandra node $n: not running"
    fi
  done
  [ "$any" = 1 ] || return 0
  for _ in $(seq 60); do
    local left=0
    for pid in "${pids[@]}"; do alive "$pid" && left=1; done
    [ "$left" = 0 ] && break
    sleep 0.5
  done
  for pid in "${pids[@]}"; do
    if alive "$pid"; then
      log "cassandra: pid $pid still running after 30 s; sending KILL"
      kill -KILL "$pid" 2>/dev/null || true
    fi
  done
  for _ in $(seq 20); do
    local left=0
    for pid in "${pids[@]}"; do alive "$pid" && left=1; done
    [ "$left" = 0 ] && break
    sleep 0.5
  done
  log "cassandra: stopped (took $(since "$started"))"
}

cassandra_cluster_up() {
  local started
  # Node 1 (the seed, started by up() before RabbitMQ) first, then 2 and 3 together: with fixed tokens and no
  # bootstrap nothing stops two nodes from joining at once (Cassandra refuses only concurrent bootstraps).
  cassandra_wait 1
  log "cassandra node 1: ready (took $(since "$CASSANDRA1_STARTED"))"
  started="$(now)"
  cassandra_start 2
  cassandra_start 3
  cassandra_wait 2
  cassandra_wait 3
  log "cassandra nodes 2, 3: ready (took $(since "$started"))"
  started="$(now)"
  node "$REPO_ROOT/scripts/cluster-probe.js" cassandra-setup || fail "Cassandra cluster setup or check failed"
  log "cassandra: cluster set up and checked (took $(since "$started"))"
}

# ------------------------------------------------------------------------------------------------------- main

# Prints one line per node; returns 0 when all six are up.
status() {
  local n pid rc=0
  for n in "${NODES[@]}"; do
    if pid="$(rabbit_pid "$n")" && rabbit_answers "$(rabbit_port "$n")"; then
      log "rabbitmq $(rabbit_name "$n"): running, AMQP on 127.0.0.1:$(rabbit_port "$n") (pid $pid, RSS $(rss_of "$pid"))"
    else
      log "rabbitmq $(rabbit_name "$n"): stopped"
      rc=1
    fi
  done
  for n in "${NODES[@]}"; do
    if pid="$(cassandra_pid "$n")" && port_open "$(cassandra_address "$n")" "$CQL_PORT"; then
      log "cassandra node $n: running, CQL on $(cassandra_address "$n"):$CQL_PORT (pid $pid, RSS $(rss_of "$pid"))"
    else
      log "cassandra node $n: stopped"
      rc=1
    fi
  done
  return "$rc"
}

any_running() {
  local n
  for n in "${NODES[@]}"; do
    if rabbit_pid "$n" >/dev/null || cassandra_pid "$n" >/dev/null; then return 0; fi
  done
  return 1
}

# Ports of the clusters that something else (the single-node services, a test's private node) may hold.
check_ports_free() {
  local n
  for n in "${NODES[@]}"; do
    ! port_open 127.0.0.1 "$(rabbit_port "$n")" || fail "something already listens on 127.0.0.1:$(rabbit_port "$n")"
    ! port_open 127.0.0.1 "$(rabbit_dist_port "$n")" || fail "something already listens on port $(rabbit_dist_port "$n")"
    ! port_open "$(cassandra_address "$n")" "$CQL_PORT" || fail "something already listens on $(cassandra_address "$n"):$CQL_PORT"
    ! port_open "$(cassandra_address "$n")" "$STORAGE_PORT" || fail "something already listens on $(cassandra_address "$n"):$STORAGE_PORT"
  done
}

CASSANDRA1_STARTED=
CASSANDRA_KEPT_DATA=0

up() {
  local started n
  started="$(now)"
  [[ "$CLUSTER_TIMEOUT" =~ ^[1-9][0-9]*$ ]] || fail "CLUSTER_TIMEOUT=$CLUSTER_TIMEOUT is not a whole number of seconds"
  [ "$(id -u)" = 0 ] || fail "up needs root (Debian's RabbitMQ runs as the rabbitmq user)"
  command -v node >/dev/null 2>&1 || fail "node is not on PATH"
  command -v rabbitmq-server >/dev/null 2>&1 || fail "rabbitmq-server is not installed; \`bash scripts/services.sh up\` installs it"
  [ -f "$REPO_ROOT/node_modules/cassandra-driver/package.json" ] && [ -f "$REPO_ROOT/node_modules/amqplib/package.json" ] ||
    fail "node_modules lacks cassandra-driver or amqplib; run \`npm install\` in $REPO_ROOT first"
  if status >/dev/null; then
    status
    log "up: all six nodes already run (checked in $(since "$started"))"
    return
  fi
  if any_running; then
    log "up: only some of the nodes run; stopping them and starting all six"
    down
  fi
  check_ports_free
  [ "$CLUSTER_KEEP_DATA" = 1 ] || rm -rf "$RUN_DIR"
  mkdir -p "$RUN_DIR"
  find_java
  [ -f "$CASSANDRA_LIB/cassandra-all-$CASSANDRA_VERSION.jar" ] || {
    log "cassandra: fetching the jars of $CASSANDRA_VERSION with services.sh"
    CASSANDRA_VERSION="$CASSANDRA_VERSION" CASSANDRA_EXTRA_VERSIONS='' bash "$REPO_ROOT/scripts/services.sh" fetch
  }
  # Cassandra's seed boots while the RabbitMQ nodes start and join.
  CASSANDRA1_STARTED="$(now)"
  cassandra_start 1
  rabbit_cluster_up
  cassandra_cluster_up
  status
  log "up: RabbitMQ cluster (rcl1..3@localhost, AMQP 5681-5683) and Cassandra cluster (127.0.0.1-3:$CQL_PORT," \
    "keyspace $KEYSPACE) are ready (total $(since "$started"))"
}

down() {
  local started
  started="$(now)"
  cassandra_stop_all
  rabbit_stop 3
  rabbit_stop 2
  rabbit_stop 1
  log "down: done (took $(since "$started"))"
}

case "${1:-}" in
  up) up ;;
  down) down ;;
  status)
    FAILURE_REPORTED=1 # a stopped node is an answer, not a failure of this script
    status || exit 1
    if [ "${2:-}" = --verify ]; then
      started="$(now)"
      node "$REPO_ROOT/scripts/cluster-probe.js" verify || exit 1
      log "verify: passed (took $(since "$started"))"
    fi
    ;;
  *)
    FAILURE_REPORTED=1
    echo "usage: bash scripts/cluster.sh up|down|status [--verify]" >&2
    exit 2
    ;;
esac
