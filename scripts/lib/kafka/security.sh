# shellcheck shell=bash
# KDP_KAFKA_SECURITY=1: the SASL_SSL listener's certificates and users, and
# scripts/kafka sasl-bootstrap, ca-file.

security_on() { [[ "${STATE_SECURITY:-}" == 1 ]]; }

sasl_bootstrap_for() {
    local n=$1 id out=""
    for ((id = 1; id <= n; id++)); do
        out+="${out:+,}127.0.0.1:$(sasl_port "$id")"
    done
    echo "$out"
}

# A CA and one broker certificate (shared by every node: all listen on
# 127.0.0.1) in $TLS_DIR. Kafka reads them as PEM: the keystore file holds
# the PKCS#8 key and the chain, the truststore the CA.
write_certificates() {
    command -v openssl >/dev/null || die "openssl not found (needed for KDP_KAFKA_SECURITY=1)"
    mkdir -p "$TLS_DIR"
    local d=$TLS_DIR
    {
        openssl req -x509 -newkey rsa:2048 -nodes -sha256 -days 3650 \
            -subj "/CN=kdp-test-ca" -keyout "$d/ca.key" -out "$d/ca.pem" \
            -addext "basicConstraints=critical,CA:TRUE" \
            -addext "keyUsage=critical,keyCertSign,cRLSign"
        openssl req -newkey rsa:2048 -nodes -sha256 -subj "/CN=localhost" \
            -keyout "$d/broker.key" -out "$d/broker.csr"
        printf '%s\n' "subjectAltName=IP:127.0.0.1,DNS:localhost" \
            "extendedKeyUsage=serverAuth,clientAuth" "basicConstraints=CA:FALSE" > "$d/broker.ext"
        openssl x509 -req -sha256 -days 3650 -in "$d/broker.csr" -CA "$d/ca.pem" \
            -CAkey "$d/ca.key" -CAcreateserial -extfile "$d/broker.ext" -out "$d/broker.pem"
    } >"$d/openssl.log" 2>&1 || { cat "$d/openssl.log" >&2; die "openssl could not create the test certificates"; }
    cat "$d/broker.key" "$d/broker.pem" "$d/ca.pem" > "$d/broker-keystore.pem"
    chmod 600 "$d"/*.key "$d/broker-keystore.pem"
}

# --user arguments of the harness's scram-users command
scram_user_args() {
    local u
    for u in $SECURITY_USERS; do
        printf '%s\n' --user "$u"
    done
}

plain_jaas_users() {
    local u out=""
    for u in $SECURITY_USERS; do
        out+=" user_${u%%:*}=\"${u#*:}\""
    done
    echo "$out"
}

cmd_sasl_bootstrap() {
    local n
    n="$(nodes_count)"
    security_on || die "the cluster in $DATA_DIR has no SASL_SSL listener (start it with KDP_KAFKA_SECURITY=1)"
    sasl_bootstrap_for "$n"
}

cmd_ca_file() {
    nodes_count >/dev/null
    security_on || die "the cluster in $DATA_DIR has no SASL_SSL listener (start it with KDP_KAFKA_SECURITY=1)"
    echo "$TLS_DIR/ca.pem"
}
