# syntax=docker/dockerfile:1
# Build: the `dist` profile (the release profile with fat LTO and one
# codegen unit) from the locked dependency set, without the tooling feature
# (simulator, generator): production has none of that code.
FROM rust:1-slim-bookworm AS build
WORKDIR /src
COPY Cargo.toml Cargo.lock ./
COPY src ./src
COPY benches ./benches
RUN cargo build --profile dist --locked --no-default-features --bin env-sidecar \
    && mkdir -p /out/var

# Run: distroless (glibc, CA certificates, no shell), as the non-root user
# 65532. The health check is the binary itself, so no shell tools are needed.
FROM gcr.io/distroless/cc-debian12:nonroot
WORKDIR /app
COPY --from=build /src/target/dist/env-sidecar /usr/local/bin/env-sidecar
COPY config ./config
# var/ holds the last-known-good cache; mount a volume here to keep it
# across container restarts.
COPY --from=build --chown=65532:65532 /out/var ./var
USER 65532:65532
# 8080: data plane. 9901: operator plane, which stays on loopback unless a
# token is provided (ENV_SIDECAR_ADMIN_TOKEN) and --admin-listen 0.0.0.0:9901
# is passed; the sidecar refuses a public operator plane without a token.
EXPOSE 8080 9901
HEALTHCHECK --interval=10s --timeout=3s --start-period=5s --retries=3 \
  CMD ["/usr/local/bin/env-sidecar", "health"]
ENTRYPOINT ["/usr/local/bin/env-sidecar"]
CMD ["--listen", "0.0.0.0:8080"]
