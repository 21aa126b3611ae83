# syntax=docker/dockerfile:1

# Image of kafka-dedup-proxy.
#
#   docker build -t kafka-dedup-proxy:0.1.0 .
#   docker run --rm -p 9092-9095:9092-9095 -p 9400:9400 kafka-dedup-proxy:0.1.0 \
#     --upstream=kafka:9092 --advertised-host=127.0.0.1
#
# Every flag also reads a KDP_* environment variable (e.g. KDP_UPSTREAM).
# The Helm chart in helm/kafka-dedup-proxy runs this image.

ARG RUST_IMAGE=rust:1-bookworm
ARG RUNTIME_IMAGE=gcr.io/distroless/cc-debian12:nonroot

FROM ${RUST_IMAGE} AS builder
WORKDIR /src
# The whole build context (trimmed by .dockerignore), so that any target or
# build script the manifest names is present. Cargo.lock pins every
# dependency; --locked refuses to build if it is out of date.
COPY . .
RUN --mount=type=cache,target=/usr/local/cargo/registry,sharing=locked \
    --mount=type=cache,target=/usr/local/cargo/git,sharing=locked \
    --mount=type=cache,target=/src/target,sharing=locked \
    cargo build --release --locked --bin kafka-dedup-proxy \
    && install -D -m 0755 target/release/kafka-dedup-proxy /out/kafka-dedup-proxy

# distroless/cc: glibc and libgcc for the Rust binary, no shell, no package
# manager. Its "nonroot" user is uid/gid 65532.
FROM ${RUNTIME_IMAGE}
LABEL org.opencontainers.image.title="kafka-dedup-proxy" \
      org.opencontainers.image.description="Transparent deduplicating TCP proxy for Apache Kafka" \
      org.opencontainers.image.version="0.1.0"
COPY --from=builder /out/kafka-dedup-proxy /usr/local/bin/kafka-dedup-proxy
USER 65532:65532
# 9092: bootstrap listener; broker node id N listens on 9093 + N by default.
# 9400: /metrics, /healthz, /readyz.
EXPOSE 9092 9400
ENTRYPOINT ["/usr/local/bin/kafka-dedup-proxy"]
