# shellcheck shell=bash
# scripts/kafka fetch: the Apache Kafka jars resolved with Maven into the
# jar cache, once per version (a fingerprint of the poms marks a complete fetch).

# logging_deps <kafka version>: the slf4j binding of that line of versions
logging_deps() {
    if (( $(major_version "$1") >= 4 )); then
        # Kafka 4 logs through slf4j 1.7 to log4j2 (log4j-api/core come with
        # kafka-server); the slf4j binding is not a dependency of any module.
        render_template pom-deps-log4j2.xml
    else
        # Kafka 3.x logs through slf4j to reload4j (log4j 1 properties).
        render_template pom-deps-reload4j.xml
    fi
}

# pom_xml <artifactId> <version> <dependencies...>
pom_xml() {
    render_template pom.xml "ARTIFACT_ID=$1" "VERSION=$2" "DEPENDENCIES=$3"
}

# The pom of Kafka $KAFKA_VERSION: the broker (kafka_2.13, which brings
# kafka-server, kafka-storage, kafka-metadata, kafka-raft, the coordinators...),
# the clients, the command line tools when kafka-tools exists in the same
# version, and the logging binding.
generate_pom() {
    local v=$KAFKA_VERSION deps="" a
    for a in kafka_2.13 kafka-clients kafka-server kafka-server-common kafka-storage \
        kafka-metadata kafka-raft kafka-tools-api; do
        deps+="    <dependency><groupId>org.apache.kafka</groupId><artifactId>$a</artifactId><version>$v</version></dependency>"$'\n'
    done
    if ! separate_tools; then
        deps+="$(tools_dep "$v")"$'\n'
    fi
    deps+="$(logging_deps "$v")"
    pom_xml "kafka-$v" "$v" "$deps"
}

# The pom of the command line tools when their version differs from the
# broker's: kafka-tools with its own Kafka modules (internal classes move
# between versions), on a classpath of their own.
generate_tools_pom() {
    local tv
    tv="$(tools_version)"
    pom_xml "kafka-tools-$tv" "$tv" "$(tools_dep "$tv")"$'\n'"$(logging_deps "$tv")"
}

# kafka-tools: TopicCommand, ConsoleConsumer, VerifiableProducer,
# ProducerPerformance, ClusterTool... connect-runtime (only for the connect
# plugin tool, with a web server's worth of jars) is left out.
tools_dep() {
    render_template pom-dep-kafka-tools.xml "VERSION=$1"
}

separate_tools() { [[ "$(tools_version)" != "$KAFKA_VERSION" ]]; }

fetch_fingerprint() {
    {
        generate_pom
        if separate_tools; then generate_tools_pom; fi
    } | sha256sum | cut -d' ' -f1
}

fetch_complete() {
    [[ -f "$CACHE_DIR/libs.stamp" && -d "$LIBS_DIR" ]] || return 1
    [[ "$(cat "$CACHE_DIR/libs.stamp")" == "$(fetch_fingerprint)" ]]
}

write_tool_log_config() {
    render_template tools-log4j2.properties > "$CACHE_DIR/tools-log4j2.properties"
    render_template tools-log4j.properties > "$CACHE_DIR/tools-log4j.properties"
}

# mvn_copy <pom> <output dir>
mvn_copy() {
    rm -rf "$2.tmp"
    if ! mvn -q -B -f "$1" dependency:copy-dependencies \
        -DoutputDirectory="$2.tmp" -DincludeScope=runtime \
        -DexcludeTypes=pom >"$CACHE_DIR/mvn.log" 2>&1; then
        tail -n 30 "$CACHE_DIR/mvn.log" >&2
        die "maven could not resolve the jars of $1 (log: $CACHE_DIR/mvn.log)"
    fi
    rm -rf "$2"
    mv "$2.tmp" "$2"
}

cmd_fetch() {
    if fetch_complete; then
        return 0
    fi
    command -v mvn >/dev/null || die "mvn not found (install maven)"
    mkdir -p "$CACHE_DIR"
    # The lock's descriptor is closed again before anything is launched:
    # a process inheriting it would hold the lock for its whole life.
    exec 9>"$CACHE_DIR/.lock"
    flock 9
    if fetch_complete; then  # another process fetched meanwhile
        exec 9>&-
        return 0
    fi
    log "resolving the Apache Kafka $KAFKA_VERSION jars (kafka-tools $(tools_version)) with Maven..."
    generate_pom > "$CACHE_DIR/pom.xml"
    mvn_copy "$CACHE_DIR/pom.xml" "$LIBS_DIR"
    [[ -n "$(ls "$LIBS_DIR"/kafka_2.13-*.jar 2>/dev/null)" ]] || die "no kafka_2.13 jar in $LIBS_DIR"
    if separate_tools; then
        generate_tools_pom > "$CACHE_DIR/tools-pom.xml"
        mvn_copy "$CACHE_DIR/tools-pom.xml" "$TOOLS_LIBS_DIR"
    else
        rm -rf "$TOOLS_LIBS_DIR" "$CACHE_DIR/tools-pom.xml"
    fi
    write_tool_log_config
    fetch_fingerprint > "$CACHE_DIR/libs.stamp"
    exec 9>&-
    log "$(find "$LIBS_DIR" -name '*.jar' | wc -l) jars in $LIBS_DIR"
}

ensure_fetched() {
    fetch_complete || cmd_fetch
}
