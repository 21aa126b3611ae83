# shellcheck shell=bash
# KDP_REDIS_TLS=1: a CA and one server certificate (SAN IP 127.0.0.1 and
# localhost, serverAuth and clientAuth: the nodes of a cluster present it to
# each other) in $KDP_REDIS_DIR/tls, kept across starts; scripts/redis ca-file.

write_certificates() {
    [[ -f "$TLS_DIR/server.pem" && -f "$TLS_DIR/ca.pem" ]] && return 0
    command -v openssl >/dev/null || die "openssl not found (needed for KDP_REDIS_TLS=1)"
    mkdir -p "$TLS_DIR"
    local d=$TLS_DIR
    {
        openssl req -x509 -newkey rsa:2048 -nodes -sha256 -days 3650 \
            -subj "/CN=kdp-redis-test-ca" -keyout "$d/ca.key" -out "$d/ca.pem" \
            -addext "basicConstraints=critical,CA:TRUE" \
            -addext "keyUsage=critical,keyCertSign,cRLSign"
        openssl req -newkey rsa:2048 -nodes -sha256 -subj "/CN=localhost" \
            -keyout "$d/server.key" -out "$d/server.csr"
        printf '%s\n' "subjectAltName=IP:127.0.0.1,DNS:localhost" \
            "extendedKeyUsage=serverAuth,clientAuth" "basicConstraints=CA:FALSE" > "$d/server.ext"
        openssl x509 -req -sha256 -days 3650 -in "$d/server.csr" -CA "$d/ca.pem" \
            -CAkey "$d/ca.key" -CAcreateserial -extfile "$d/server.ext" -out "$d/server.pem"
    } >"$d/openssl.log" 2>&1 || { cat "$d/openssl.log" >&2; die "openssl could not create the test certificates"; }
    chmod 600 "$d"/*.key
}

cmd_ca_file() {
    [[ -f "$TLS_DIR/ca.pem" ]] || die "no certificates in $TLS_DIR (start with KDP_REDIS_TLS=1)"
    echo "$TLS_DIR/ca.pem"
}
