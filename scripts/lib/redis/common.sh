# shellcheck shell=bash
# scripts/redis: settings, the state of what runs, and the helpers every
# subcommand uses (messages, ports, pids, templates, redis-cli).

DATA_DIR="${KDP_REDIS_DIR:-/tmp/kdp-redis}"
[[ "$DATA_DIR" == /* ]] || DATA_DIR="$PWD/$DATA_DIR"
TEMPLATES_DIR="$REDIS_LIB_DIR/templates"
SINGLE_DIR="$DATA_DIR/single"
CLUSTER_DIR="$DATA_DIR/cluster"
TLS_DIR="$DATA_DIR/tls"
START_TIMEOUT="${KDP_REDIS_START_TIMEOUT:-30}"
# cluster-node-timeout: how long a primary may be unreachable before its
# replica takes over. Redis's default is 15 s; the tests want failovers to
# finish quickly, but a busy machine must not trigger spurious ones.
CLUSTER_NODE_TIMEOUT_MS="${KDP_REDIS_CLUSTER_NODE_TIMEOUT_MS:-5000}"
# Nodes per role of the cluster: 3 primaries, each with one replica.
CLUSTER_PRIMARIES=3
CLUSTER_NODES=6

die() { echo "scripts/redis: $*" >&2; exit 1; }
log() { echo "scripts/redis: $*" >&2; }

# A running node or cluster remembers how it was started (port, password,
# TLS) in its state file, so `stop`, `kill`, `status`... act on it whatever
# the caller's environment says.
SINGLE_STATE="$SINGLE_DIR/state.env"
CLUSTER_STATE="$CLUSTER_DIR/state.env"
state_get() { # state_get FILE KEY: the value recorded for KEY, empty if none
    [[ -f "$1" ]] || return 0
    sed -n "s/^$2=//p" "$1"
}

# The settings of a new start come from the environment; those of a running
# one from its state file (set by load_single_state/load_cluster_state).
PORT="${KDP_REDIS_PORT:-22379}"
PORT_BASE="${KDP_REDIS_CLUSTER_PORT_BASE:-22400}"
TLS="${KDP_REDIS_TLS:-0}"
AUTH=0
[[ -n "${KDP_REDIS_PASSWORD:-}" ]] && AUTH=1

load_single_state() {
    [[ -f "$SINGLE_STATE" ]] || return 0
    PORT="$(state_get "$SINGLE_STATE" PORT)"
    TLS="$(state_get "$SINGLE_STATE" TLS)"
    AUTH="$(state_get "$SINGLE_STATE" AUTH)"
}

load_cluster_state() {
    [[ -f "$CLUSTER_STATE" ]] || return 0
    PORT_BASE="$(state_get "$CLUSTER_STATE" PORT_BASE)"
    TLS="$(state_get "$CLUSTER_STATE" TLS)"
    AUTH="$(state_get "$CLUSTER_STATE" AUTH)"
}

tls_on() { [[ "$TLS" == 1 ]]; }

# The password of a node started with KDP_REDIS_PASSWORD. It is not kept in
# the state file: the caller must still have it in its environment.
password() {
    (( AUTH )) || return 0
    [[ -n "${KDP_REDIS_PASSWORD:-}" ]] \
        || die "the Redis in $DATA_DIR requires a password: set KDP_REDIS_PASSWORD"
    printf '%s' "$KDP_REDIS_PASSWORD"
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

port_open() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

# pid of the live redis-server whose config file is $1/redis.conf (empty if
# none). The pid file outlives its process and pids are reused: only a
# redis-server that was started with this config counts (its process title,
# set by proc-title-template, ends with the config file; Debian's
# /usr/bin/redis-server is a link to redis-check-rdb), so a SIGKILL meant
# for this node never reaches another process that took the pid over.
dir_pid() {
    local dir=$1 pid
    [[ -f "$dir/pid" ]] || return 0
    pid="$(cat "$dir/pid")"
    [[ -n "$pid" ]] || return 0
    if pid_alive "$pid" \
        && [[ "$(readlink "/proc/$pid/exe" 2>/dev/null)" == */redis-* ]] \
        && tr '\0' ' ' < "/proc/$pid/cmdline" 2>/dev/null | grep -qF "$dir/redis.conf"; then
        echo "$pid"
    fi
}

proc_state() { # "running", "paused (SIGSTOP)" or "stopped" for a pid (or empty)
    if [[ -z "$1" ]]; then
        echo stopped
    elif [[ "$(awk '{print $3}' "/proc/$1/stat" 2>/dev/null)" == T ]]; then
        echo "paused (SIGSTOP)"
    else
        echo running
    fi
}

# rcli PORT [args...]: redis-cli against 127.0.0.1:PORT with the password
# (through REDISCLI_AUTH, so it is not on any command line) and TLS of the
# running node. Fails after 5 s rather than hang on a paused node.
rcli() { rcli_timeout 5 "$@"; }

# rcli_timeout SECONDS PORT [args...]: rcli with another limit (0: none).
rcli_timeout() {
    local limit=$1 port=$2 pw
    shift 2
    local argv=(redis-cli -h 127.0.0.1 -p "$port")
    if tls_on; then
        argv+=(--tls --cacert "$TLS_DIR/ca.pem")
    fi
    (( limit == 0 )) || argv=(timeout "$limit" "${argv[@]}")
    pw="$(password)"
    if [[ -n "$pw" ]]; then
        REDISCLI_AUTH="$pw" "${argv[@]}" "$@"
    else
        "${argv[@]}" "$@"
    fi
}

url_scheme() { if tls_on; then echo rediss; else echo redis; fi; }

# pid_alive PID: the process exists and is no zombie (a killed node whose
# parent, pid 1 of a container, has not reaped it yet counts as gone)
pid_alive() {
    kill -0 "$1" 2>/dev/null && [[ "$(awk '{print $3}' "/proc/$1/stat" 2>/dev/null)" != Z ]]
}

# stop_pids <pid>...: SIGTERM, wait up to 30 s, then SIGKILL
stop_pids() {
    local pid alive i
    for pid in "$@"; do
        kill -CONT "$pid" 2>/dev/null || true  # a SIGSTOPped node cannot exit
        kill -TERM "$pid" 2>/dev/null || true
    done
    for ((i = 0; i < 300; i++)); do
        alive=0
        for pid in "$@"; do
            pid_alive "$pid" && alive=1
        done
        (( alive )) || return 0
        sleep 0.1
    done
    for pid in "$@"; do
        if pid_alive "$pid"; then
            log "pid $pid did not stop after 30s: SIGKILL"
            kill -KILL "$pid" 2>/dev/null || true
        fi
    done
    sleep 0.2
}

# kill_pid <pid>: SIGKILL and wait until the process is gone
kill_pid() {
    local i
    kill -KILL "$1" 2>/dev/null || true
    for ((i = 0; i < 50; i++)); do
        pid_alive "$1" || return 0
        sleep 0.1
    done
    die "pid $1 still alive 5 s after SIGKILL"
}

# Only ever delete a directory this script made (it holds state.env).
remove_dir() {
    local dir=$1
    [[ -e "$dir" ]] || return 0
    if [[ ! -f "$dir/state.env" && -n "$(ls -A "$dir" 2>/dev/null)" ]]; then
        die "$dir is not empty and is no directory of this script: not deleting it"
    fi
    rm -rf "$dir"
}
