# shellcheck shell=bash
# One redis-server process: its config, launch, readiness, stop and kill.
# Used by the single node (single.sh) and by each node of the cluster
# (cluster.sh).

# conf_quote STRING: STRING as a double-quoted redis.conf argument
conf_quote() {
    local s=$1
    [[ "$s" != *$'\n'* && "$s" != *$'\r'* ]] || die "KDP_REDIS_PASSWORD must be one line"
    s="${s//\\/\\\\}"
    s="${s//\"/\\\"}"
    printf '"%s"' "$s"
}

# write_node_config DIR PORT cluster|single
write_node_config() {
    local dir=$1 port=$2 kind=$3 pw
    mkdir -p "$dir/data"
    render_template node.conf "PORT=$port" "NODE_DIR=$dir" > "$dir/redis.conf"
    if [[ "$kind" == cluster ]]; then
        render_template cluster.conf "NODE_DIR=$dir" "NODE_TIMEOUT_MS=$CLUSTER_NODE_TIMEOUT_MS" \
            >> "$dir/redis.conf"
    fi
    if tls_on; then
        render_template tls.conf "PORT=$port" "TLS_DIR=$TLS_DIR" >> "$dir/redis.conf"
    fi
    pw="$(password)"
    if [[ -n "$pw" ]]; then
        # masterauth: a replica authenticates to its primary with it
        printf 'requirepass %s\nmasterauth %s\n' "$(conf_quote "$pw")" "$(conf_quote "$pw")" \
            >> "$dir/redis.conf"
    fi
    chmod 600 "$dir/redis.conf"
}

# launch_node DIR: start the redis-server of DIR/redis.conf in the background
launch_node() {
    local dir=$1 i
    rm -f "$dir/pid" "$dir/killed"
    echo "=== $(date '+%F %T') starting redis-server ($dir/redis.conf)" >> "$dir/stdout.log"
    # setsid: the node must not share the caller's process group (a test
    # runner's Ctrl-C or group kill must not take it down with it). The inner
    # shell writes its own pid, which `exec` hands to redis-server.
    # shellcheck disable=SC2016
    setsid nohup bash -c 'echo $$ > "$1"; shift; exec "$@"' kdp-redis \
        "$dir/pid" redis-server "$dir/redis.conf" >>"$dir/stdout.log" 2>&1 </dev/null &
    for ((i = 0; i < 50; i++)); do
        [[ -s "$dir/pid" ]] && break
        sleep 0.1
    done
}

node_log_tail() { # node_log_tail DIR [LINES]
    local dir=$1 lines=${2:-50}
    echo "===== $dir/redis.log (last $lines lines) ====="
    tail -n "$lines" "$dir/redis.log" 2>/dev/null || echo "(no redis.log)"
    if [[ -s "$dir/stdout.log" ]] && grep -qv '^===' "$dir/stdout.log"; then
        echo "===== $dir/stdout.log (last 20 lines) ====="
        tail -n 20 "$dir/stdout.log"
    fi
}

# wait_node_ready DIR PORT DEADLINE: until the node answers PING (and has
# loaded its data set), or fail with its log (stopping the node, so that the
# next start does not take a node that never became ready for a running one)
wait_node_ready() {
    local dir=$1 port=$2 deadline=$3 out
    while :; do
        if [[ -z "$(dir_pid "$dir")" ]]; then
            node_log_tail "$dir" >&2
            die "redis-server on port $port exited during start-up (log above)"
        fi
        out="$(rcli "$port" ping 2>&1 || true)"
        [[ "$out" == PONG ]] && return 0
        if (( SECONDS >= deadline )); then
            node_log_tail "$dir" >&2
            local pid
            pid="$(dir_pid "$dir")"
            [[ -z "$pid" ]] || stop_pids "$pid"
            die "timeout: redis-server on port $port does not answer PING after ${START_TIMEOUT}s (last answer: ${out:-none})"
        fi
        sleep 0.1
    done
}

# check_port_free PORT [cluster]: the port (and a cluster node's bus port) unused
check_port_free() {
    local port=$1
    port_open "$port" && die "port $port is already in use"
    if [[ "${2:-}" == cluster ]] && port_open $((port + 10000)); then
        die "port $((port + 10000)) (cluster bus of port $port) is already in use"
    fi
    return 0
}

# kill_node DIR: SIGKILL; the next start restarts from the node's data
kill_node() {
    local dir=$1 pid
    pid="$(dir_pid "$dir")"
    [[ -n "$pid" ]] || return 1
    kill_pid "$pid"
    touch "$dir/killed"
    echo "$pid"
}
