# syntax=docker/dockerfile:1
# Multi-stage build of the `tenantry` binary: a full Rust toolchain to build, a slim Debian to run.

FROM rust:1-bookworm AS builder
WORKDIR /src
# The whole source tree (see .dockerignore): Cargo.toml names bench and test targets whose files
# must exist even though only the binary is built.
COPY . .
# BuildKit cache mounts keep the crate registry and compiled dependencies between builds, so a
# source change rebuilds tenantry only. The binary is copied out because the cache mount is not
# part of the image.
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target \
    cargo build --release --locked --bin tenantry \
    && cp target/release/tenantry /usr/local/bin/tenantry

FROM debian:bookworm-slim
RUN apt-get update \
    && apt-get install -y --no-install-recommends ca-certificates \
    && rm -rf /var/lib/apt/lists/* \
    && useradd --system --no-create-home --uid 10001 tenantry
COPY --from=builder /usr/local/bin/tenantry /usr/local/bin/tenantry
# The template folder is embedded in the binary; shipped too so operators can start a
# --tenant-template folder from it.
COPY tenant_template /usr/share/tenantry/tenant_template
USER tenantry
ENV BIND=0.0.0.0:8080 \
    LOG_FORMAT=json
EXPOSE 8080
ENTRYPOINT ["tenantry"]
CMD ["serve"]
