# shellcheck shell=bash
# scripts/redis start, stop, kill, status, logs, pid, cli without --cluster:
# the single node, in $KDP_REDIS_DIR/single.

single_url() { echo "$(url_scheme)://127.0.0.1:$PORT"; }

single_start() {
    local pid t0=$SECONDS
    load_single_state
    pid="$(dir_pid "$SINGLE_DIR")"
    if [[ -n "$pid" ]]; then
        if [[ -n "${KDP_REDIS_PORT:-}" && "$KDP_REDIS_PORT" != "$PORT" ]]; then
            die "a Redis on port $PORT runs in $SINGLE_DIR; stop it first (scripts/redis stop)"
        fi
        log "Redis already running (127.0.0.1:$PORT, pid $pid)"
        single_url
        return 0
    fi
    local resume=0
    if [[ -f "$SINGLE_DIR/killed" ]]; then
        # killed: restart from the append-only file, as a crashed Redis
        # restarts, with the settings it was started with
        resume=1
    else
        PORT="${KDP_REDIS_PORT:-22379}"
        TLS="${KDP_REDIS_TLS:-0}"
        AUTH=0
        [[ -n "${KDP_REDIS_PASSWORD:-}" ]] && AUTH=1
    fi
    if ! [[ "$PORT" =~ ^[0-9]+$ ]] || (( PORT < 1 || PORT > 65535 )); then
        die "KDP_REDIS_PORT must be 1..65535"
    fi
    check_port_free "$PORT"
    if (( ! resume )); then
        remove_dir "$SINGLE_DIR"
        mkdir -p "$SINGLE_DIR"
        tls_on && write_certificates
        printf 'PORT=%s\nTLS=%s\nAUTH=%s\n' "$PORT" "$TLS" "$AUTH" > "$SINGLE_STATE"
        write_node_config "$SINGLE_DIR" "$PORT" single
    fi
    launch_node "$SINGLE_DIR"
    wait_node_ready "$SINGLE_DIR" "$PORT" $((SECONDS + START_TIMEOUT))
    local how="empty"
    (( resume )) && how="restarted from its append-only file after kill, $(rcli "$PORT" dbsize) key(s)"
    log "$(redis_version) on 127.0.0.1:$PORT ready in $((SECONDS - t0))s ($how; password: $( ((AUTH)) && echo yes || echo no); TLS: $(tls_on && echo yes || echo no); data and log: $SINGLE_DIR)"
    single_url
}

redis_version() { redis-server --version | sed -n 's/^Redis server v=\([^ ]*\).*/Redis \1/p'; }

single_stop() {
    load_single_state
    local pid
    pid="$(dir_pid "$SINGLE_DIR")"
    if [[ -z "$pid" ]]; then
        rm -f "$SINGLE_DIR/killed"
        log "Redis not running ($SINGLE_DIR)"
        return 0
    fi
    stop_pids "$pid"
    rm -f "$SINGLE_DIR/killed"
    log "stopped Redis on 127.0.0.1:$PORT (pid $pid); log kept in $SINGLE_DIR"
}

single_kill() {
    load_single_state
    local pid
    pid="$(kill_node "$SINGLE_DIR")" || die "Redis is not running ($SINGLE_DIR)"
    log "SIGKILL sent to Redis on 127.0.0.1:$PORT (pid $pid); scripts/redis start restarts it with its data"
}

single_status() {
    [[ -f "$SINGLE_STATE" ]] || die "no Redis in $SINGLE_DIR (run scripts/redis start)"
    load_single_state
    local pid state
    pid="$(dir_pid "$SINGLE_DIR")"
    state="$(proc_state "$pid")"
    [[ -z "$pid" && -f "$SINGLE_DIR/killed" ]] && state="killed"
    echo "$(redis_version), single node, data in $SINGLE_DIR"
    echo "127.0.0.1:$PORT pid=${pid:--} $state$( [[ "$state" == running ]] && echo ", $(rcli "$PORT" dbsize 2>/dev/null || echo '?') key(s)")"
}

single_logs() {
    [[ -d "$SINGLE_DIR" ]] || die "no Redis in $SINGLE_DIR"
    node_log_tail "$SINGLE_DIR"
}

single_pid() {
    load_single_state
    local pid
    pid="$(dir_pid "$SINGLE_DIR")"
    [[ -n "$pid" ]] || die "Redis is not running ($SINGLE_DIR)"
    echo "$pid"
}

single_cli() {
    [[ -f "$SINGLE_STATE" ]] || die "no Redis in $SINGLE_DIR (run scripts/redis start)"
    load_single_state
    rcli_timeout 0 "$PORT" "$@"
}
