# shellcheck shell=bash
# scripts/kafka start, stop, clean, status, pid, stop-node, restart-node,
# add-node, bootstrap, logs: the lifecycle of the cluster and of its nodes.

format_node() {
    local id=$1 cluster_id=$2 dir
    dir="$(node_dir "$id")"
    # With controller.quorum.voters (a static quorum) both 3.9 and 4.x format
    # without --standalone/--initial-controllers.
    # shellcheck disable=SC2046,SC2086
    if ! java -Xmx256m -XX:+UseSerialGC -XX:TieredStopAtLevel=1 $JVM_LOG_OPTS $(cds_opts) \
        $(tool_log_opts) -cp "$LIBS_DIR/*" kafka.tools.StorageTool format --ignore-formatted \
        -t "$cluster_id" -c "$dir/server.properties" >"$dir/logs/format.log" 2>&1; then
        cat "$dir/logs/format.log" >&2
        return 1
    fi
}

launch_node() {
    local id=$1 dir cds="" archive
    dir="$(node_dir "$id")"
    mkdir -p "$dir/logs"
    rm -f "$dir/pid"
    archive="$(cds_archive)"
    if [[ -n "$archive" ]]; then
        if [[ -f "$archive" ]]; then
            cds="-XX:SharedArchiveFile=$archive"
        elif [[ "$id" == 1 ]]; then
            printf '%s\n%s\n' "$archive" "$LIBS_DIR" > "$dir/cds.pending"
            cds="-XX:DumpLoadedClassList=$dir/classes.lst"
        fi
    fi
    echo "=== $(date '+%F %T') starting node $id (Apache Kafka $KAFKA_VERSION)" >> "$dir/logs/stdout.log"
    # setsid: the nodes must not share the caller's process group (a test
    # runner's Ctrl-C or group kill must not take the cluster down with it).
    # The inner shell writes its own pid, which `exec` hands to the JVM.
    # shellcheck disable=SC2016,SC2046,SC2086
    setsid nohup bash -c 'echo $$ > "$1"; shift; exec "$@"' kdp-node \
        "$dir/pid" java $NODE_HEAP_OPTS -XX:+UseG1GC -XX:MaxGCPauseMillis=20 \
        -XX:+ExitOnOutOfMemoryError -Djava.awt.headless=true $cds -Xlog:cds=off -Xlog:cds+dynamic=off \
        -Dkafka.logs.dir="$dir/logs" $(node_log_opts "$id") ${KDP_KAFKA_JVM_OPTS:-} \
        -cp "$LIBS_DIR/*" kafka.Kafka "$dir/server.properties" \
        >>"$dir/logs/stdout.log" 2>&1 </dev/null &
    local i
    for ((i = 0; i < 50; i++)); do
        [[ -s "$dir/pid" ]] && break
        sleep 0.1
    done
}

print_logs() {
    local n=$1 id dir
    for ((id = 1; id <= n; id++)); do
        dir="$(node_dir "$id")"
        echo "===== node $id: $dir/logs/server.log (last 50 lines) ====="
        tail -n 50 "$dir/logs/server.log" 2>/dev/null || echo "(no server.log)"
        if [[ -s "$dir/logs/stdout.log" ]]; then
            echo "===== node $id: $dir/logs/stdout.log (last 20 lines) ====="
            tail -n 20 "$dir/logs/stdout.log"
        fi
    done
}

fail_start() {
    local n=$1
    shift
    echo "scripts/kafka: $*" >&2
    print_logs "$n" >&2
    exit 1
}

cmd_start() {
    local n=3 n_given=""
    while [[ $# -gt 0 ]]; do
        case "$1" in
            --nodes) n="${2:-}"; n_given=1; shift 2 || die "--nodes needs a value" ;;
            --nodes=*) n="${1#--nodes=}"; n_given=1; shift ;;
            *) die "start: unknown argument $1" ;;
        esac
    done
    [[ "$n" =~ ^[1-9]$ ]] || die "--nodes must be 1..9"
    local t0=$SECONDS tstart=$EPOCHREALTIME

    if cluster_alive; then
        local id running=0
        for ((id = 1; id <= STATE_NODES; id++)); do
            [[ -n "$(node_pid "$id")" ]] && running=$((running + 1))
        done
        if (( running > 0 )); then
            if [[ -n "$REQUESTED_VERSION" && "$REQUESTED_VERSION" != "$STATE_VERSION" ]] \
                || [[ -n "$n_given" && "$n" != "$STATE_NODES" ]]; then
                die "a cluster of $STATE_NODES node(s) of Apache Kafka $STATE_VERSION is running in $DATA_DIR; stop it first (scripts/kafka stop)"
            fi
            if [[ "${KDP_KAFKA_SECURITY:-0}" == 1 ]] && ! security_on; then
                log "warning: the cluster running in $DATA_DIR has no SASL_SSL listener (KDP_KAFKA_SECURITY=1 asks for one; restart it to get one)"
            fi
            echo "scripts/kafka: cluster already running ($running of $STATE_NODES nodes, Apache Kafka $STATE_VERSION)" >&2
            bootstrap_for "$STATE_NODES"
            return 0
        fi
    fi

    ensure_fetched
    cmd_harness
    local id pid cluster_id deadline=$((SECONDS + START_TIMEOUT))
    phase() { [[ -z "${KDP_KAFKA_TRACE:-}" ]] || log "$(awk -v a="$tstart" -v b="$EPOCHREALTIME" 'BEGIN{printf "%6.2fs", b-a}') $*"; }
    for ((id = 1; id <= n; id++)); do
        if port_open "$(broker_port "$id")" || port_open "$(controller_port "$id")" \
            || { [[ "${KDP_KAFKA_SECURITY:-0}" == 1 ]] && port_open "$(sasl_port "$id")"; }; then
            die "port $(broker_port "$id"), $(controller_port "$id") or $(sasl_port "$id") already in use"
        fi
    done

    # A fresh cluster every start: old data of another version or size would
    # not match the new cluster id.
    [[ -n "$STATE_NODES" ]] && cds_finish 1
    remove_data_dir
    mkdir -p "$DATA_DIR"
    # Kafka's Uuid: 16 random bytes in URL-safe base64 without padding.
    cluster_id="-"
    while [[ "$cluster_id" == -* ]]; do
        cluster_id="$(head -c 16 /dev/urandom | base64 | tr '+/' '-_' | tr -d '=')"
    done
    {
        echo "KAFKA_VERSION=$KAFKA_VERSION"
        echo "NODES=$n"
        echo "PORT_BASE=$PORT_BASE"
        echo "CLUSTER_ID=$cluster_id"
        echo "SECURITY=${KDP_KAFKA_SECURITY:-0}"
    } > "$STATE_FILE"
    STATE_NODES=$n STATE_VERSION=$KAFKA_VERSION STATE_SECURITY=${KDP_KAFKA_SECURITY:-0}
    if security_on; then
        phase "certificates"
        write_certificates
    fi

    phase "formatting storage"
    local pids=()
    for ((id = 1; id <= n; id++)); do
        mkdir -p "$(node_dir "$id")/logs" "$(node_dir "$id")/data"
        write_node_config "$id" "$n"
        format_node "$id" "$cluster_id" & pids+=($!)
    done
    for pid in "${pids[@]}"; do
        wait "$pid" || die "formatting the storage failed"
    done
    phase "launching nodes"
    for ((id = 1; id <= n; id++)); do
        launch_node "$id"
    done

    local bootstrap
    bootstrap="$(bootstrap_for "$n")"
    for ((id = 1; id <= n; id++)); do
        while ! port_open "$(broker_port "$id")"; do
            [[ -n "$(node_pid "$id")" ]] || fail_start "$n" "node $id exited during start-up"
            (( SECONDS < deadline )) || fail_start "$n" "timeout: node $id does not listen on $(broker_port "$id") after ${START_TIMEOUT}s"
            sleep 0.2
        done
    done
    phase "all broker ports open; waiting for $n brokers on every node"
    local left=$((deadline - SECONDS))
    (( left > 0 )) || left=1
    local out
    if ! out="$(cmd_harness_java cluster --bootstrap "$bootstrap" --expect-nodes "$n" --nodes-only \
        --wait-ms $((left * 1000)) 2>"$DATA_DIR/ready.err")"; then
        cat "$DATA_DIR/ready.err" >&2
        echo "$out" >&2
        fail_start "$n" "timeout: the cluster did not report $n brokers on every node within ${START_TIMEOUT}s"
    fi
    echo "$out" > "$DATA_DIR/ready.json"
    if security_on; then
        local sid users=()
        mapfile -t users < <(scram_user_args)
        # SCRAM credentials through the Admin API (alterUserScramCredentials),
        # as kafka-configs --add-config 'SCRAM-SHA-256=[password=...]' does
        if ! out="$(cmd_harness_java scram-users --bootstrap "$bootstrap" "${users[@]}" 2>"$DATA_DIR/scram.err")"; then
            cat "$DATA_DIR/scram.err" >&2
            fail_start "$n" "creating the SCRAM users failed: $out"
        fi
        for ((sid = 1; sid <= n; sid++)); do
            while ! port_open "$(sasl_port "$sid")"; do
                (( SECONDS < deadline )) || fail_start "$n" "timeout: node $sid does not listen on SASL_SSL port $(sasl_port "$sid")"
                sleep 0.2
            done
        done
        log "SASL_SSL listeners: $(sasl_bootstrap_for "$n") (CA $TLS_DIR/ca.pem)"
    fi
    log "Apache Kafka $KAFKA_VERSION: $n node(s) ready in $((SECONDS - t0))s (data and logs: $DATA_DIR)"
    echo "$bootstrap"
}

stop_pids() {
    # stop_pids <pid>...: SIGTERM, wait up to 30 s, then SIGKILL
    local pid alive i
    for pid in "$@"; do
        kill -CONT "$pid" 2>/dev/null || true  # a SIGSTOPped node cannot exit
        kill -TERM "$pid" 2>/dev/null || true
    done
    for ((i = 0; i < 300; i++)); do
        alive=0
        for pid in "$@"; do
            kill -0 "$pid" 2>/dev/null && alive=1
        done
        (( alive )) || return 0
        sleep 0.1
    done
    for pid in "$@"; do
        if kill -0 "$pid" 2>/dev/null; then
            log "pid $pid did not stop after 30s: SIGKILL"
            kill -KILL "$pid" 2>/dev/null || true
        fi
    done
    sleep 0.2
}

cmd_stop() {
    if [[ -z "$STATE_NODES" ]]; then
        log "no cluster in $DATA_DIR"
        return 0
    fi
    local id pid pids=()
    for ((id = 1; id <= STATE_NODES; id++)); do
        pid="$(node_pid "$id")"
        [[ -n "$pid" ]] && pids+=("$pid")
    done
    if (( ${#pids[@]} == 0 )); then
        log "cluster not running"
        return 0
    fi
    stop_pids "${pids[@]}"
    for ((id = 1; id <= STATE_NODES; id++)); do
        cds_finish "$id"
    done
    log "stopped ${#pids[@]} node(s); logs kept in $DATA_DIR"
}

cmd_clean() {
    cmd_stop
    remove_data_dir
}

# Only ever delete a directory this script made (it holds cluster.env).
remove_data_dir() {
    [[ -e "$DATA_DIR" ]] || return 0
    if [[ ! -f "$STATE_FILE" && -n "$(ls -A "$DATA_DIR" 2>/dev/null)" ]]; then
        die "$DATA_DIR is not empty and is no cluster directory of this script: not deleting it"
    fi
    rm -rf "$DATA_DIR"
}

cmd_status() {
    local n id pid
    n="$(nodes_count)"
    echo "Apache Kafka $STATE_VERSION, $n node(s), data in $DATA_DIR"
    for ((id = 1; id <= n; id++)); do
        pid="$(node_pid "$id")"
        local state="stopped"
        if [[ -n "$pid" ]]; then
            state="running"
            [[ "$(awk '{print $3}' "/proc/$pid/stat" 2>/dev/null)" == T ]] && state="paused (SIGSTOP)"
        fi
        echo "node $id: 127.0.0.1:$(broker_port "$id") pid=${pid:--} $state"
    done
}

cmd_pid() {
    check_id "${1:-}"
    local pid
    pid="$(node_pid "$1")"
    [[ -n "$pid" ]] || die "node $1 is not running"
    echo "$pid"
}

cmd_stop_node() {
    check_id "${1:-}"
    local pid
    pid="$(node_pid "$1")"
    if [[ -z "$pid" ]]; then
        log "node $1 is not running"
        return 0
    fi
    stop_pids "$pid"
    cds_finish "$1"
}

cmd_restart_node() {
    check_id "${1:-}"
    local id=$1 pid controllers
    controllers="${STATE_CONTROLLERS:-$(nodes_count)}"
    pid="$(node_pid "$id")"
    if [[ -n "$pid" ]]; then
        log "node $id already running (pid $pid)"
        return 0
    fi
    ensure_fetched
    local port cport="" deadline=$((SECONDS + START_TIMEOUT))
    port="$(broker_port "$id")"
    # a node added as a broker only has no controller port
    (( id <= controllers )) && cport="$(controller_port "$id")"
    # the killed JVM's sockets may linger for a moment
    while port_open "$port" || { [[ -n "$cport" ]] && port_open "$cport"; }; do
        (( SECONDS < deadline )) || die "port $port or $cport still in use"
        sleep 0.2
    done
    launch_node "$id"
    # The broker port opens once the node has caught up with the metadata
    # and is unfenced, which takes a quorum: with most controllers down,
    # only the controller port is waited for.
    local want=$port alive i
    while ! port_open "$want"; do
        if [[ -z "$(node_pid "$id")" ]]; then
            tail -n 50 "$(node_dir "$id")/logs/server.log" >&2 || true
            die "node $id exited during start-up"
        fi
        if (( SECONDS >= deadline )); then
            tail -n 50 "$(node_dir "$id")/logs/server.log" >&2 || true
            die "timeout: node $id does not listen on $want after ${START_TIMEOUT}s"
        fi
        alive=0
        for ((i = 1; i <= controllers; i++)); do
            [[ -n "$(node_pid "$i")" ]] && alive=$((alive + 1))
        done
        if [[ -n "$cport" ]] && (( alive * 2 <= controllers )); then want=$cport; else want=$port; fi
        sleep 0.2
    done
    if [[ "$want" == "$cport" ]]; then
        log "node $id: controller listening on 127.0.0.1:$cport (pid $(node_pid "$id")); its broker port opens once a majority of nodes runs"
    else
        log "node $id listening on 127.0.0.1:$port (pid $(node_pid "$id"))"
    fi
}

# add-node: one more node, a broker only, joins the running cluster (the
# controller quorum stays nodes 1..CONTROLLERS). It gets the next id, the
# ports of that id, the cluster's listeners and its place in cluster.env,
# so stop, status, pid, stop-node and restart-node know it. Waits until
# every node reports it among the brokers, then prints the new bootstrap
# string.
cmd_add_node() {
    [[ $# -eq 0 ]] || die "add-node takes no arguments"
    local n id controllers cluster_id deadline=$((SECONDS + START_TIMEOUT))
    n="$(nodes_count)"
    cluster_alive || die "the cluster in $DATA_DIR is not running (scripts/kafka start)"
    id=$((n + 1))
    (( id <= 9 )) || die "a cluster has at most 9 nodes"
    controllers="${STATE_CONTROLLERS:-$n}"
    if port_open "$(broker_port "$id")" || { security_on && port_open "$(sasl_port "$id")"; }; then
        die "port $(broker_port "$id") or $(sasl_port "$id") already in use"
    fi
    ensure_fetched
    cluster_id="$(sed -n 's/^CLUSTER_ID=//p' "$STATE_FILE")"
    [[ -n "$cluster_id" ]] || die "no CLUSTER_ID in $STATE_FILE"
    rm -rf "$(node_dir "$id")"
    mkdir -p "$(node_dir "$id")/logs" "$(node_dir "$id")/data"
    write_node_config "$id" "$controllers" broker
    format_node "$id" "$cluster_id" || die "formatting the storage of node $id failed"
    # Recorded before the launch: a node that fails to start is still
    # stopped by `stop`.
    sed -i "s/^NODES=.*/NODES=$id/" "$STATE_FILE"
    grep -q '^CONTROLLERS=' "$STATE_FILE" || echo "CONTROLLERS=$controllers" >> "$STATE_FILE"
    STATE_NODES=$id STATE_CONTROLLERS=$controllers
    launch_node "$id"
    local port
    port="$(broker_port "$id")"
    while ! port_open "$port"; do
        if [[ -z "$(node_pid "$id")" ]]; then
            tail -n 50 "$(node_dir "$id")/logs/server.log" >&2 || true
            die "node $id exited during start-up"
        fi
        if (( SECONDS >= deadline )); then
            tail -n 50 "$(node_dir "$id")/logs/server.log" >&2 || true
            die "timeout: node $id does not listen on $port after ${START_TIMEOUT}s"
        fi
        sleep 0.2
    done
    local left=$((deadline - SECONDS)) out bootstrap
    (( left > 0 )) || left=1
    bootstrap="$(bootstrap_for "$id")"
    if ! out="$(cmd_harness_java cluster --bootstrap "$bootstrap" --expect-nodes "$id" --nodes-only \
        --wait-ms $((left * 1000)) 2>"$DATA_DIR/add-node.err")"; then
        cat "$DATA_DIR/add-node.err" >&2
        echo "$out" >&2
        die "timeout: the cluster did not report $id brokers on every node"
    fi
    if security_on; then
        while ! port_open "$(sasl_port "$id")"; do
            (( SECONDS < deadline )) || die "timeout: node $id does not listen on SASL_SSL port $(sasl_port "$id")"
            sleep 0.2
        done
    fi
    log "node $id added as a broker on 127.0.0.1:$port (pid $(node_pid "$id")); $id brokers"
    echo "$bootstrap"
}

cmd_bootstrap() {
    bootstrap_for "$(nodes_count)"
}

cmd_logs() {
    local n
    n="$(nodes_count)"
    if [[ -n "${1:-}" ]]; then
        check_id "$1"
        echo "===== node $1: $(node_dir "$1")/logs/server.log (last 50 lines) ====="
        tail -n 50 "$(node_dir "$1")/logs/server.log" 2>/dev/null || echo "(no server.log)"
    else
        print_logs "$n"
    fi
}
