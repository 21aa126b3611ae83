# shellcheck shell=bash

# Class data sharing: the classes a broker loads, archived once per jar set
# and JDK, make every later JVM on these jars (nodes, storage format,
# harness) start seconds faster. Node 1 lists the classes it loads while no
# archive exists; when it has stopped the archive is built from that list in
# the background. KDP_KAFKA_CDS=0 turns it off.
cds_archive() {
    [[ "${KDP_KAFKA_CDS:-1}" != 0 && -f "$CACHE_DIR/libs.stamp" ]] || return 0
    local java key
    java="$(readlink -f "$(command -v java)")"
    key="$( { cat "$CACHE_DIR/libs.stamp"; echo "$java"; stat -c %Y "$java"; } | sha256sum | cut -c1-16)"
    echo "$CACHE_DIR/cds/broker-$key.jsa"
}

# JVM options to use the archive if there is one
cds_opts() {
    local a
    a="$(cds_archive)"
    if [[ -n "$a" && -f "$a" ]]; then
        echo "-XX:SharedArchiveFile=$a"
    fi
}

# cds_finish <id>: once node <id> has exited, build the archive from the
# class list it wrote (in the background, at low priority)
cds_finish() {
    local dir archive libs list
    dir="$(node_dir "$1")"
    [[ -f "$dir/cds.pending" ]] || return 0
    archive="$(sed -n 1p "$dir/cds.pending")"
    libs="$(sed -n 2p "$dir/cds.pending")"
    rm -f "$dir/cds.pending"
    list="$dir/classes.lst"
    [[ -s "$list" && -d "$libs" && ! -f "$archive" ]] || return 0
    mkdir -p "$(dirname "$archive")"
    cp "$list" "$archive.$$.lst"
    # shellcheck disable=SC2016
    setsid nohup nice -n 10 bash -c '
        exec 7>"$1.lock"
        if flock -n 7 && [[ ! -f "$1" ]]; then
            java -Xshare:dump -XX:SharedClassListFile="$3" -XX:SharedArchiveFile="$1.tmp" \
                -Xlog:cds=off -Xlog:cds+dynamic=off -cp "$2/*" && mv -f "$1.tmp" "$1"
            rm -f "$1.tmp"
        fi
        rm -f "$3"
    ' kdp-cds "$archive" "$libs" "$archive.$$.lst" >"$(dirname "$archive")/dump.log" 2>&1 </dev/null &
}
