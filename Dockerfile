# syntax=docker/dockerfile:1
#
# carrot-gateway container image.
#
#   docker build -t carrot-gateway .
#   docker run --rm -p 8080:8080 \
#     -e CARROT_AMQP_URL='amqp://user:password@rabbitmq:5672/%2f' \
#     -e CARROT_ALLOW_ANONYMOUS=true \
#     carrot-gateway
#   docker run --rm carrot-gateway openapi > openapi.json
#
# The default command serves on 0.0.0.0:8080. The gateway refuses to listen on
# a non-loopback address unless auth tokens are configured (config file given
# with --config / CARROT_CONFIG, key auth.tokens) or anonymous access is
# allowed explicitly with CARROT_ALLOW_ANONYMOUS=true. This image sets neither:
# configure tokens, or set CARROT_ALLOW_ANONYMOUS=true only where the network
# in front of the gateway already restricts who can reach it.
#
# Other settings: CARROT_AMQP_URL, CARROT_MAX_BODY_BYTES, CARROT_SHUTDOWN_GRACE,
# CARROT_LOG_FORMAT (text|json), CARROT_LOG (tracing filter, e.g. info).
#
# There is no HEALTHCHECK: the runtime image has no shell and no curl. Liveness
# (GET /healthz) and readiness (GET /readyz, 503 until the broker is connected)
# are probed by the orchestrator; see the Kubernetes probes in helm/carrot-gateway.

# The crate needs Rust >= 1.88 (edition 2024). The full bookworm image brings
# the C compiler that aws-lc-rs (rustls in lapin) builds with; no OpenSSL.
ARG RUST_VERSION=1.88

FROM rust:${RUST_VERSION}-bookworm AS builder
WORKDIR /build

# Dependencies first, in their own layer: it is rebuilt only when Cargo.toml or
# Cargo.lock change. Placeholder sources let cargo compile every dependency
# (bench, test and example targets are cut from this copy of the manifest, as
# their files are not there yet); then the placeholders and the gateway's own
# artifacts are removed, so the next step recompiles the real sources whatever
# their timestamps.
COPY Cargo.toml Cargo.lock ./
RUN mkdir src \
    && echo 'fn main() {}' > src/main.rs \
    && touch src/lib.rs \
    && mv Cargo.toml Cargo.toml.full \
    && awk '/^\[\[(bench|test|example)\]\]/ { skip = 1; next } /^\[/ { skip = 0 } !skip' \
        Cargo.toml.full > Cargo.toml \
    && cargo build --release --locked \
    && rm -rf src Cargo.toml Cargo.toml.full \
        target/release/carrot-gateway \
        target/release/carrot-gateway.d \
        target/release/deps/carrot_gateway-* \
        target/release/deps/libcarrot_gateway-* \
        target/release/.fingerprint/carrot-gateway-*

# The gateway itself: everything .dockerignore lets in (manifest, src/, and
# build.rs, tests/, benches/, examples/ when they exist).
COPY . .
RUN cargo build --release --locked \
    && install -D -m 0755 target/release/carrot-gateway /out/carrot-gateway

# Runtime: glibc, libgcc and the CA certificates (amqps://, https:// webhooks); no shell,
# no package manager; user 65532.
FROM gcr.io/distroless/cc-debian12:nonroot

LABEL org.opencontainers.image.title="carrot-gateway" \
      org.opencontainers.image.description="HTTP/REST gateway in front of RabbitMQ" \
      org.opencontainers.image.licenses="MIT OR Apache-2.0"

COPY --from=builder /out/carrot-gateway /usr/local/bin/carrot-gateway

# Numeric user so that Kubernetes' runAsNonRoot can verify it.
USER 65532:65532
EXPOSE 8080

ENTRYPOINT ["/usr/local/bin/carrot-gateway"]
CMD ["--listen", "0.0.0.0:8080"]
