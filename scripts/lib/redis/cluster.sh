# shellcheck shell=bash
# scripts/redis start --cluster, stop --cluster, kill --cluster PORT,
# failover PORT, status/logs/pid/cli --cluster: a local Redis Cluster of 3
# primaries (ports base..base+2) and 3 replicas (base+3..base+5), one
# directory per node in $KDP_REDIS_DIR/cluster/node-<port>.

cluster_node_dir() { echo "$CLUSTER_DIR/node-$1"; }
cluster_ports() {
    local i
    for ((i = 0; i < CLUSTER_NODES; i++)); do echo $((PORT_BASE + i)); done
}
cluster_url() {
    local i seeds=""
    for ((i = 0; i < CLUSTER_PRIMARIES; i++)); do
        seeds+="${seeds:+,}127.0.0.1:$((PORT_BASE + i))"
    done
    echo "$(url_scheme)+cluster://$seeds"
}

need_cluster() {
    [[ -f "$CLUSTER_STATE" ]] || die "no Redis Cluster in $CLUSTER_DIR (run scripts/redis start --cluster)"
    load_cluster_state
}

check_cluster_port() {
    if ! [[ "${1:-}" =~ ^[0-9]+$ ]] || (( $1 < PORT_BASE || $1 >= PORT_BASE + CLUSTER_NODES )); then
        die "PORT must be a port of the cluster, $PORT_BASE..$((PORT_BASE + CLUSTER_NODES - 1))"
    fi
}

live_ports() {
    local port
    for port in $(cluster_ports); do
        [[ -n "$(dir_pid "$(cluster_node_dir "$port")")" ]] && echo "$port"
    done
    return 0
}

# CLUSTER NODES as one live node sees it (fails when none answers)
cluster_nodes() {
    local port
    for port in $(live_ports); do
        rcli "$port" cluster nodes 2>/dev/null && return 0
    done
    return 1
}

# cluster_problem: empty when every live node says cluster_state:ok with all
# 16384 slots assigned and served, and `redis-cli --cluster check` finds
# every slot covered and the nodes agreeing; else what is missing
cluster_problem() {
    local port info ports check
    mapfile -t ports < <(live_ports)
    (( ${#ports[@]} > 0 )) || { echo "no node is running"; return 0; }
    for port in "${ports[@]}"; do
        info="$(rcli "$port" cluster info 2>&1 | tr -d '\r')" || { echo "127.0.0.1:$port: $info"; return 0; }
        if ! grep -qx 'cluster_state:ok' <<<"$info" || ! grep -qx 'cluster_slots_ok:16384' <<<"$info"; then
            echo "127.0.0.1:$port: $(grep -E '^cluster_(state|slots_assigned|slots_ok|slots_fail)' <<<"$info" | tr '\n' ' ')"
            return 0
        fi
    done
    check="$(rcli_timeout 10 "${ports[0]}" --cluster check "127.0.0.1:${ports[0]}" 2>&1 \
        | sed 's/\x1b\[[0-9;]*m//g' || true)"
    if ! grep -qF '[OK] All 16384 slots covered.' <<<"$check" || grep -qF '[ERR]' <<<"$check" \
        || ! grep -qF '[OK] All nodes agree about slots configuration.' <<<"$check"; then
        echo "redis-cli --cluster check: $(grep -E '\[ERR\]|\[WARNING\]|Could not connect' <<<"$check" | head -n 3 | tr '\n' ' ')"
    fi
    return 0
}

# replicas_problem: empty when every running replica's link to its primary is up
replicas_problem() {
    local port info
    for port in $(live_ports); do
        info="$(rcli "$port" info replication 2>&1 | tr -d '\r')" || { echo "127.0.0.1:$port: $info"; return 0; }
        if grep -qx 'role:slave' <<<"$info" && ! grep -qx 'master_link_status:up' <<<"$info"; then
            echo "replica 127.0.0.1:$port: link to its primary not up yet"
            return 0
        fi
    done
}

# wait_cluster_ok DEADLINE [replicas]: until cluster_problem (and, with
# "replicas", replicas_problem) report nothing, or fail with the logs (and,
# with "replicas", as during a start, stop the nodes)
wait_cluster_ok() {
    local deadline=$1 problem
    while :; do
        problem="$(cluster_problem)"
        [[ -z "$problem" && "${2:-}" == replicas ]] && problem="$(replicas_problem)"
        [[ -z "$problem" ]] && return 0
        if (( SECONDS >= deadline )); then
            cluster_print_logs 20 >&2
            [[ "${2:-}" != replicas ]] || cluster_stop
            die "timeout: the Redis Cluster is not ok after ${START_TIMEOUT}s: $problem"
        fi
        sleep 0.2
    done
}

cluster_start() {
    local t0=$SECONDS port dir deadline=$((SECONDS + START_TIMEOUT)) live
    load_cluster_state
    live="$(live_ports | wc -l)"
    if (( live > 0 )); then
        if [[ -n "${KDP_REDIS_CLUSTER_PORT_BASE:-}" && "$KDP_REDIS_CLUSTER_PORT_BASE" != "$PORT_BASE" ]]; then
            die "a Redis Cluster on ports $PORT_BASE.. runs in $CLUSTER_DIR; stop it first (scripts/redis stop --cluster)"
        fi
        if (( live < CLUSTER_NODES )); then
            # nodes that were killed rejoin with their nodes.conf and data
            for port in $(cluster_ports); do
                dir="$(cluster_node_dir "$port")"
                [[ -n "$(dir_pid "$dir")" ]] && continue
                check_port_free "$port" cluster
                launch_node "$dir"
                wait_node_ready "$dir" "$port" "$deadline"
                log "node 127.0.0.1:$port started again (pid $(dir_pid "$dir"))"
            done
            wait_cluster_ok "$deadline" replicas
            log "Redis Cluster ok again, $CLUSTER_NODES nodes running"
        else
            log "Redis Cluster already running ($CLUSTER_NODES nodes, ports $PORT_BASE..$((PORT_BASE + CLUSTER_NODES - 1)))"
        fi
        cluster_url
        return 0
    fi

    PORT_BASE="${KDP_REDIS_CLUSTER_PORT_BASE:-22400}"
    TLS="${KDP_REDIS_TLS:-0}"
    AUTH=0
    [[ -n "${KDP_REDIS_PASSWORD:-}" ]] && AUTH=1
    if ! [[ "$PORT_BASE" =~ ^[0-9]+$ ]] || (( PORT_BASE < 1 || PORT_BASE + CLUSTER_NODES + 10000 > 65535 )); then
        die "KDP_REDIS_CLUSTER_PORT_BASE must leave room for 6 ports and their bus ports (+10000) below 65536"
    fi
    for port in $(cluster_ports); do
        check_port_free "$port" cluster
    done
    # A fresh cluster every start: old nodes.conf files would name node ids
    # and slots of another cluster.
    remove_dir "$CLUSTER_DIR"
    mkdir -p "$CLUSTER_DIR"
    tls_on && write_certificates
    printf 'PORT_BASE=%s\nTLS=%s\nAUTH=%s\n' "$PORT_BASE" "$TLS" "$AUTH" > "$CLUSTER_STATE"
    local addrs=()
    for port in $(cluster_ports); do
        dir="$(cluster_node_dir "$port")"
        write_node_config "$dir" "$port" cluster
        launch_node "$dir"
        addrs+=("127.0.0.1:$port")
    done
    for port in $(cluster_ports); do
        wait_node_ready "$(cluster_node_dir "$port")" "$port" "$deadline"
    done
    # The first 3 addresses become the primaries, the last 3 their replicas.
    if ! rcli_timeout "$START_TIMEOUT" "$PORT_BASE" --cluster create "${addrs[@]}" \
        --cluster-replicas 1 --cluster-yes >"$CLUSTER_DIR/create.log" 2>&1; then
        cat "$CLUSTER_DIR/create.log" >&2
        cluster_stop
        die "redis-cli --cluster create failed (output above; node logs kept: scripts/redis logs --cluster)"
    fi
    wait_cluster_ok "$deadline" replicas
    log "$(redis_version) Cluster ready in $((SECONDS - t0))s: primaries 127.0.0.1:$PORT_BASE..$((PORT_BASE + CLUSTER_PRIMARIES - 1)), replicas ..$((PORT_BASE + CLUSTER_NODES - 1)), all 16384 slots covered (password: $( ((AUTH)) && echo yes || echo no); TLS: $(tls_on && echo yes || echo no); data and logs: $CLUSTER_DIR)"
    cluster_url
}

cluster_stop() {
    if [[ ! -f "$CLUSTER_STATE" ]]; then
        log "no Redis Cluster in $CLUSTER_DIR"
        return 0
    fi
    load_cluster_state
    local port pid pids=()
    for port in $(cluster_ports); do
        rm -f "$(cluster_node_dir "$port")/killed"
        pid="$(dir_pid "$(cluster_node_dir "$port")")"
        [[ -n "$pid" ]] && pids+=("$pid")
    done
    if (( ${#pids[@]} == 0 )); then
        log "Redis Cluster not running"
        return 0
    fi
    stop_pids "${pids[@]}"
    log "stopped ${#pids[@]} Redis Cluster node(s); logs kept in $CLUSTER_DIR"
}

cluster_kill() {
    need_cluster
    check_cluster_port "${1:-}"
    local pid
    pid="$(kill_node "$(cluster_node_dir "$1")")" || die "node 127.0.0.1:$1 is not running"
    log "SIGKILL sent to Redis Cluster node 127.0.0.1:$1 (pid $pid); scripts/redis start --cluster starts it again"
}

# node_line PORT: the CLUSTER NODES line of the node at 127.0.0.1:PORT
node_line() { grep -E "^[0-9a-f]+ 127\.0\.0\.1:$1@" <<<"$2" | head -n 1 || true; }

cluster_failover() {
    need_cluster
    check_cluster_port "${1:-}"
    local port=$1 nodes line id flags rport="" rline t0=$SECONDS deadline=$((SECONDS + START_TIMEOUT))
    nodes="$(cluster_nodes | tr -d '\r')" || die "no node of the Redis Cluster answers"
    line="$(node_line "$port" "$nodes")"
    [[ -n "$line" ]] || die "127.0.0.1:$port is not in the cluster"
    read -r id _ flags _ <<<"$line"
    if [[ ",$flags," != *,master,* ]]; then
        local of
        of="$(awk -v id="$(awk '{print $4}' <<<"$line")" '$1 == id {sub(/@.*/, "", $2); print $2}' <<<"$nodes")"
        die "127.0.0.1:$port is no primary (a replica of ${of:-?}: try scripts/redis failover ${of##*:})"
    fi
    # a replica of it that runs and is not marked failing
    while read -r rline; do
        local raddr rflags
        read -r _ raddr rflags _ <<<"$rline"
        [[ ",$rflags," == *,fail,* || ",$rflags," == *,fail\?,* ]] && continue
        raddr="${raddr%@*}"
        if [[ -n "$(dir_pid "$(cluster_node_dir "${raddr##*:}")")" ]]; then
            rport="${raddr##*:}"
            break
        fi
    done < <(awk -v id="$id" '$4 == id' <<<"$nodes")
    [[ -n "$rport" ]] || die "127.0.0.1:$port has no running replica to fail over to"
    local mode=""
    if [[ -z "$(dir_pid "$(cluster_node_dir "$port")")" ]]; then
        # the primary is down: its replica takes over without its agreement
        mode=FORCE
    fi
    local out
    out="$(rcli "$rport" cluster failover $mode 2>&1 | tr -d '\r')"
    [[ "$out" == OK ]] || die "CLUSTER FAILOVER $mode on 127.0.0.1:$rport: $out"
    while [[ "$(rcli "$rport" role 2>/dev/null | head -n 1 | tr -d '\r')" != master ]]; do
        (( SECONDS < deadline )) || die "timeout: 127.0.0.1:$rport is not primary ${START_TIMEOUT}s after CLUSTER FAILOVER $mode"
        sleep 0.1
    done
    wait_cluster_ok "$deadline"
    log "127.0.0.1:$rport is primary now (was the replica of 127.0.0.1:$port; CLUSTER FAILOVER${mode:+ $mode}, $((SECONDS - t0))s, cluster_state:ok)"
    echo "$rport"
}

cluster_status() {
    need_cluster
    local port pid state nodes line flags primary slots role
    nodes="$(cluster_nodes 2>/dev/null | tr -d '\r' || true)"
    echo "$(redis_version) Cluster, ports $PORT_BASE..$((PORT_BASE + CLUSTER_NODES - 1)), data in $CLUSTER_DIR"
    for port in $(cluster_ports); do
        pid="$(dir_pid "$(cluster_node_dir "$port")")"
        state="$(proc_state "$pid")"
        [[ -z "$pid" && -f "$(cluster_node_dir "$port")/killed" ]] && state="killed"
        role=""
        line="$(node_line "$port" "$nodes")"
        if [[ -n "$line" ]]; then
            read -r _ _ flags primary _ _ _ _ slots <<<"$line"
            if [[ ",$flags," == *,master,* ]]; then
                role="primary, slots ${slots:-none}"
            else
                local paddr
                paddr="$(awk -v id="$primary" '$1 == id {sub(/@.*/, "", $2); print $2}' <<<"$nodes")"
                role="replica of ${paddr:-?}"
            fi
            [[ ",$flags," == *,fail* ]] && role+=" (${flags#*,})"
        fi
        echo "127.0.0.1:$port pid=${pid:--} $state${role:+, $role}"
    done
    local problem
    problem="$(cluster_problem)"
    echo "cluster: ${problem:-ok, all 16384 slots covered}"
}

cluster_print_logs() { # cluster_print_logs [LINES]
    local port
    for port in $(cluster_ports); do
        node_log_tail "$(cluster_node_dir "$port")" "${1:-50}"
    done
}

cluster_logs() {
    need_cluster
    if [[ -n "${1:-}" ]]; then
        check_cluster_port "$1"
        node_log_tail "$(cluster_node_dir "$1")"
    else
        cluster_print_logs 50
    fi
}

cluster_pid() {
    need_cluster
    check_cluster_port "${1:-}"
    local pid
    pid="$(dir_pid "$(cluster_node_dir "$1")")"
    [[ -n "$pid" ]] || die "node 127.0.0.1:$1 is not running"
    echo "$pid"
}

cluster_cli() {
    need_cluster
    check_cluster_port "${1:-}"
    local port=$1
    shift
    rcli_timeout 0 "$port" "$@"
}
