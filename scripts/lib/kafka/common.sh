# shellcheck shell=bash
# scripts/kafka: settings, the state of the running cluster, and the helpers
# every subcommand uses (messages, versions, ports, pids, templates).

DATA_DIR="${KDP_KAFKA_DIR:-/tmp/kdp-kafka}"
STATE_FILE="$DATA_DIR/cluster.env"
HARNESS_SRC="$REPO_DIR/tests/java/ClientHarness.java"
TEMPLATES_DIR="$KAFKA_LIB_DIR/templates"

# A running cluster remembers how it was started, so `stop`, `bootstrap`,
# `restart-node`... act on it whatever the caller's environment says.
# CONTROLLERS: nodes 1..CONTROLLERS form the quorum (all NODES unless nodes
# were added as brokers only with `add-node`).
STATE_VERSION="" STATE_NODES="" STATE_PORT_BASE="" STATE_SECURITY="" STATE_CONTROLLERS=""
if [[ -f "$STATE_FILE" ]]; then
    STATE_VERSION="$(sed -n 's/^KAFKA_VERSION=//p' "$STATE_FILE")"
    STATE_NODES="$(sed -n 's/^NODES=//p' "$STATE_FILE")"
    STATE_PORT_BASE="$(sed -n 's/^PORT_BASE=//p' "$STATE_FILE")"
    STATE_SECURITY="$(sed -n 's/^SECURITY=//p' "$STATE_FILE")"
    STATE_CONTROLLERS="$(sed -n 's/^CONTROLLERS=//p' "$STATE_FILE")"
    STATE_CONTROLLERS="${STATE_CONTROLLERS:-$STATE_NODES}"
fi
TLS_DIR="$DATA_DIR/tls"
# The SCRAM and PLAIN users of a cluster started with KDP_KAFKA_SECURITY=1
# (user:password; admin is a super user).
SECURITY_USERS="alice:alice-secret bob:bob-secret admin:admin-secret"

DEFAULT_KAFKA_VERSION=4.4.0
REQUESTED_VERSION="${KAFKA_VERSION:-}"
CACHE_ROOT="${KDP_CACHE_DIR:-$REPO_DIR/.cache}"

# set_version <version>: select the jar cache of that Kafka version
set_version() {
    KAFKA_VERSION="$1"
    CACHE_DIR="$CACHE_ROOT/kafka-$KAFKA_VERSION"
    LIBS_DIR="$CACHE_DIR/libs"
    TOOLS_LIBS_DIR="$CACHE_DIR/tools-libs"
    HARNESS_DIR="$CACHE_DIR/harness"
}

# KAFKA_VERSION wins; else the version of the running cluster; else the default.
# Commands that act on the cluster of $KDP_KAFKA_DIR use its recorded version.
PORT_BASE="${STATE_PORT_BASE:-${KDP_KAFKA_PORT_BASE:-29092}}"
set_version "${REQUESTED_VERSION:-$DEFAULT_KAFKA_VERSION}"
START_TIMEOUT="${KDP_KAFKA_START_TIMEOUT:-90}"
NODE_HEAP_OPTS="${KDP_KAFKA_HEAP_OPTS:--Xms256m -Xmx512m}"
TOOL_HEAP_OPTS="${KDP_TOOL_HEAP_OPTS:--Xmx512m}"
# the JVM's own warnings go to stderr: stdout of `run` is the tool's output
JVM_LOG_OPTS="-Xlog:disable -Xlog:all=warning:stderr -Xlog:cds=off -Xlog:cds+dynamic=off"

die() { echo "scripts/kafka: $*" >&2; exit 1; }
log() { echo "scripts/kafka: $*" >&2; }

major_version() { echo "${1%%.*}"; }
is_kafka4() { (( $(major_version "$KAFKA_VERSION") >= 4 )); }

tools_version() {
    if [[ -n "${KAFKA_TOOLS_VERSION:-}" ]]; then
        echo "$KAFKA_TOOLS_VERSION"
        return
    fi
    case "$KAFKA_VERSION" in
        4.4.0) echo 4.3.1 ;;  # kafka-tools 4.4.0 is not published
        *) echo "$KAFKA_VERSION" ;;
    esac
}

# render_template <file> [KEY=value...]: the template with every @KEY@
# replaced by its value (literally: no shell expansion of the template or
# the values), ending in one newline as a here-document would.
render_template() {
    local file=$1 text kv
    shift
    text="$(<"$TEMPLATES_DIR/$file")"
    for kv in "$@"; do
        text="${text//"@${kv%%=*}@"/"${kv#*=}"}"
    done
    if [[ "$text" =~ @[A-Z][A-Z0-9_]*@ ]]; then
        die "template $file: no value for ${BASH_REMATCH[0]}"
    fi
    printf '%s\n' "$text"
}

node_dir() { echo "$DATA_DIR/node-$1"; }
broker_port() { echo $((PORT_BASE + $1 - 1)); }
controller_port() { echo $((PORT_BASE + 100 + $1 - 1)); }
sasl_port() { echo $((PORT_BASE + 200 + $1 - 1)); }

nodes_count() {
    [[ -n "$STATE_NODES" ]] || die "no cluster in $DATA_DIR (run scripts/kafka start)"
    echo "$STATE_NODES"
}

bootstrap_for() {
    local n=$1 id out=""
    for ((id = 1; id <= n; id++)); do
        out+="${out:+,}127.0.0.1:$(broker_port "$id")"
    done
    echo "$out"
}

check_id() {
    local n
    n="$(nodes_count)"
    if ! [[ "${1:-}" =~ ^[0-9]+$ ]] || (( $1 < 1 || $1 > n )); then
        die "node id must be 1..$n"
    fi
}

# pid of a live node (empty if the node is not running). The pid file
# outlives its process and pids are reused (pid_max may be 32768): only a
# process started with this node's own server.properties counts, never a
# broker of another cluster on the machine that took the pid over (a
# SIGSTOP/SIGCONT/SIGTERM meant for this node must never reach it).
node_pid() {
    local f pid props
    f="$(node_dir "$1")/pid"
    props="$(node_dir "$1")/server.properties"
    [[ -f "$f" ]] || return 0
    pid="$(cat "$f")"
    [[ -n "$pid" ]] || return 0
    if kill -0 "$pid" 2>/dev/null && tr '\0' '\n' < "/proc/$pid/cmdline" 2>/dev/null \
        | grep -qxF "$props"; then
        echo "$pid"
    fi
}

cluster_alive() {
    local id
    [[ -n "$STATE_NODES" ]] || return 1
    for ((id = 1; id <= STATE_NODES; id++)); do
        [[ -n "$(node_pid "$id")" ]] && return 0
    done
    return 1
}

port_open() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }
