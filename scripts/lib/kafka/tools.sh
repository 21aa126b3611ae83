# shellcheck shell=bash
# scripts/kafka harness, classpath, run: the Java client harness and Kafka's
# command line tools on the cached jars.

harness_fresh() {
    [[ -f "$HARNESS_DIR/ClientHarness.class" && -f "$HARNESS_DIR/.stamp" ]] || return 1
    [[ ! "$HARNESS_SRC" -nt "$HARNESS_DIR/.stamp" && ! "$CACHE_DIR/libs.stamp" -nt "$HARNESS_DIR/.stamp" ]]
}

cmd_harness() {
    ensure_fetched
    harness_fresh && return 0
    [[ -f "$HARNESS_SRC" ]] || die "missing $HARNESS_SRC"
    exec 8>"$CACHE_DIR/.harness.lock"
    flock 8
    if harness_fresh; then  # compiled by another process meanwhile
        exec 8>&-
        return 0
    fi
    rm -rf "$HARNESS_DIR.tmp"
    mkdir -p "$HARNESS_DIR.tmp"
    if ! javac -nowarn -encoding UTF-8 -d "$HARNESS_DIR.tmp" -cp "$LIBS_DIR/*" "$HARNESS_SRC" \
        >"$CACHE_DIR/javac.log" 2>&1; then
        cat "$CACHE_DIR/javac.log" >&2
        die "javac failed on $HARNESS_SRC"
    fi
    touch -r "$HARNESS_SRC" "$HARNESS_DIR.tmp/.stamp"
    # the stamp must not be older than the libs it was compiled against
    [[ "$CACHE_DIR/libs.stamp" -nt "$HARNESS_DIR.tmp/.stamp" ]] && touch "$HARNESS_DIR.tmp/.stamp"
    rm -rf "$HARNESS_DIR"
    mv "$HARNESS_DIR.tmp" "$HARNESS_DIR"
    exec 8>&-
}

classpath() { echo "$LIBS_DIR/*:$HARNESS_DIR"; }

cmd_classpath() {
    ensure_fetched
    classpath
}

# tool_log_opts [<version>]: tool logging (WARN to stderr) for that version
tool_log_opts() {
    if (( $(major_version "${1:-$KAFKA_VERSION}") >= 4 )); then
        echo "-Dlog4j2.configurationFile=$CACHE_DIR/tools-log4j2.properties"
    else
        echo "-Dlog4j.configuration=file:$CACHE_DIR/tools-log4j.properties"
    fi
}

cmd_run() {
    [[ $# -ge 1 ]] || die "usage: scripts/kafka run <main-class> [args...]"
    ensure_fetched
    local jit="" cp logv=$KAFKA_VERSION cds
    cp="$(classpath)"
    cds="$(cds_opts)"
    if [[ "$1" == ClientHarness ]]; then
        cmd_harness
        # short-lived harness runs: the C1 compiler alone starts faster
        jit="-XX:TieredStopAtLevel=1"
    elif [[ "$1" == org.apache.kafka.tools.* ]] && separate_tools; then
        # Kafka's command line tools of another version run on their own jars
        cp="$TOOLS_LIBS_DIR/*"
        logv="$(tools_version)"
        cds=""
    fi
    # shellcheck disable=SC2046,SC2086
    exec java $TOOL_HEAP_OPTS -XX:+UseSerialGC $jit $JVM_LOG_OPTS $cds -Djava.awt.headless=true \
        $(tool_log_opts "$logv") ${KDP_JAVA_OPTS:-} -cp "$cp" "$@"
}

# the harness in a subprocess (not exec), for internal use
cmd_harness_java() {
    # shellcheck disable=SC2046
    # shellcheck disable=SC2046,SC2086
    java -Xmx256m -XX:+UseSerialGC -XX:TieredStopAtLevel=1 $JVM_LOG_OPTS $(cds_opts) \
        $(tool_log_opts) -cp "$(classpath)" ClientHarness "$@"
}
