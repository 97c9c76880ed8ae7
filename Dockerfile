# fleethub: a two-stage build. The dashboard is compiled into the binary, so the
# runtime image needs nothing but the binary and CA certificates.
# Build: docker build -t fleethub .   (works for linux/amd64 and linux/arm64, e.g. Raspberry Pi 5)

FROM rust:1.95-bookworm AS build
WORKDIR /src
# Cache dependencies: build them once against the manifests only. The production
# image leaves out the demo simulator (cargo feature `demo`): --no-default-features.
COPY Cargo.toml Cargo.lock ./
COPY loadtest/Cargo.toml loadtest/Cargo.toml
RUN mkdir -p src loadtest/src benches static \
 && echo 'fn main() {}' > src/main.rs && echo '' > src/lib.rs \
 && echo 'fn main() {}' > loadtest/src/main.rs && echo '' > loadtest/src/lib.rs \
 && echo 'fn main() {}' > benches/fanout.rs && echo 'fn main() {}' > benches/ingest.rs \
 && cargo build --release --locked --no-default-features --bin fleethub \
 && rm -rf src loadtest/src benches
COPY . .
# Make cargo see the real sources as newer than the cached stubs.
RUN touch src/main.rs src/lib.rs loadtest/src/lib.rs \
 && cargo build --release --locked --no-default-features --bin fleethub \
 && cp target/release/fleethub /fleethub

FROM debian:bookworm-slim
RUN apt-get update \
 && apt-get install -y --no-install-recommends ca-certificates tini \
 && rm -rf /var/lib/apt/lists/* \
 && useradd --system --home /var/lib/fleethub --create-home fleethub
COPY --from=build /fleethub /usr/local/bin/fleethub
USER fleethub
WORKDIR /var/lib/fleethub
ENV FLEETHUB_LISTEN=0.0.0.0:8080 \
    FLEETHUB_DATABASE__SQLITE_PATH=/var/lib/fleethub/fleethub.db
EXPOSE 8080
VOLUME ["/var/lib/fleethub"]
HEALTHCHECK --interval=10s --timeout=3s --start-period=10s \
  CMD ["/usr/local/bin/fleethub", "healthcheck"]
# Without FLEETHUB_JWT_SECRET the hub runs in dev mode, which binds 127.0.0.1
# only: set a secret to reach it from outside the container.
ENTRYPOINT ["/usr/bin/tini", "--", "/usr/local/bin/fleethub"]
CMD ["serve"]
