# Build: the release binary from the locked dependency set.
FROM rust:1-slim-bookworm AS build
WORKDIR /src
COPY Cargo.toml Cargo.lock ./
COPY src ./src
COPY benches ./benches
RUN cargo build --release --locked --bin env-sidecar

# Run: a minimal image, non-root, with the default config and sample snapshot.
FROM debian:bookworm-slim
RUN useradd --system --uid 10001 --home-dir /app --shell /usr/sbin/nologin sidecar \
    && mkdir -p /app/var && chown sidecar /app/var
WORKDIR /app
COPY --from=build /src/target/release/env-sidecar /usr/local/bin/env-sidecar
COPY config ./config
USER sidecar
# Inside a container the planes must listen beyond loopback to be reachable.
EXPOSE 8080 9901
ENTRYPOINT ["/usr/local/bin/env-sidecar"]
CMD ["--listen", "0.0.0.0:8080"]
