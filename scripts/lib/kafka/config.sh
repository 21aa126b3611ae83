# shellcheck shell=bash
# The configuration files of a node (server.properties and its log4j
# config), rendered from templates/.

# write_node_config <id> <controllers> [broker]: node <id> of a cluster whose
# nodes 1..<controllers> are the controller quorum; a broker and a controller
# unless `broker` says it joins as a broker only (scripts/kafka add-node).
write_node_config() {
    local id=$1 n=$2 role=${3:-} dir voters="" i sasl_listener=""
    local roles=broker,controller note="" controller_listener
    dir="$(node_dir "$id")"
    controller_listener=",CONTROLLER://127.0.0.1:$(controller_port "$id")"
    if [[ "$role" == broker ]]; then
        roles=broker note=", added as a broker only" controller_listener=""
    fi
    for ((i = 1; i <= n; i++)); do
        voters+="${voters:+,}$i@127.0.0.1:$(controller_port "$i")"
    done
    local min_isr=$(( n >= 2 ? 2 : 1 ))
    if security_on; then
        sasl_listener=",SASL_SSL://127.0.0.1:$(sasl_port "$id")"
    fi
    local vars=("KAFKA_VERSION=$KAFKA_VERSION" "NODE_ID=$id" "NODES=$n" "NODE_DIR=$dir"
        "VOTERS=$voters" "MIN_ISR=$min_isr" "BROKER_PORT=$(broker_port "$id")"
        "PROCESS_ROLES=$roles" "NODE_NOTE=$note" "CONTROLLER_LISTENER=$controller_listener"
        "SASL_LISTENER=$sasl_listener")
    render_template server.properties "${vars[@]}" > "$dir/server.properties"
    if is_kafka4; then
        render_template server-kafka4.properties "${vars[@]}" >> "$dir/server.properties"
    fi
    if security_on; then
        render_template server-security.properties "PLAIN_JAAS_USERS=$(plain_jaas_users)" \
            "TLS_DIR=$TLS_DIR" >> "$dir/server.properties"
    fi
    if [[ -n "${KDP_KAFKA_EXTRA_CONFIG:-}" ]]; then
        printf '%s\n' "$KDP_KAFKA_EXTRA_CONFIG" >> "$dir/server.properties"
    fi

    if is_kafka4; then
        render_template node-log4j2.properties "NODE_ID=$id" "NODE_DIR=$dir" > "$dir/log4j2.properties"
    else
        render_template node-log4j.properties "NODE_DIR=$dir" > "$dir/log4j.properties"
    fi
}

node_log_opts() {
    local dir
    dir="$(node_dir "$1")"
    if is_kafka4; then
        echo "-Dlog4j2.configurationFile=$dir/log4j2.properties"
    else
        echo "-Dlog4j.configuration=file:$dir/log4j.properties"
    fi
}
