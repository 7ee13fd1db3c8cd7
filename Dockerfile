# syntax=docker/dockerfile:1
# Multi-stage build of the `tenantry` binary: a full Rust toolchain to build, a slim Debian to run.

FROM rust:1-bookworm AS builder
WORKDIR /src
# Dependencies first, so editing the sources does not rebuild them: a throwaway crate with the
# real manifest and lock file compiles every dependency into a cached layer.
COPY Cargo.toml Cargo.lock ./
RUN mkdir -p src bench \
    && echo 'fn main() {}' > src/main.rs \
    && touch src/lib.rs \
    && echo 'fn main() {}' > bench/tenant_schemas.rs \
    && cargo build --release --locked --bin tenantry \
    && rm -rf src bench
COPY src src
COPY migrations migrations
COPY tenant_template tenant_template
COPY bench/tenant_schemas.rs bench/tenant_schemas.rs
# The dummy build left newer timestamps behind; make sure cargo sees the real sources as changed.
RUN touch src/main.rs src/lib.rs && cargo build --release --locked --bin tenantry

FROM debian:bookworm-slim
RUN apt-get update \
    && apt-get install -y --no-install-recommends ca-certificates \
    && rm -rf /var/lib/apt/lists/* \
    && useradd --system --no-create-home --uid 10001 tenantry
COPY --from=builder /src/target/release/tenantry /usr/local/bin/tenantry
# The template folder is embedded in the binary; shipped too so operators can start a
# --tenant-template folder from it.
COPY tenant_template /usr/share/tenantry/tenant_template
USER tenantry
# MALLOC_MMAP_THRESHOLD_: each argon2 hash allocates 19 MiB; glibc's adaptive threshold would
# keep those blocks in the heap and let the process grow to about 1 GB (see README, Operations).
ENV BIND=0.0.0.0:8080 \
    LOG_FORMAT=json \
    MALLOC_MMAP_THRESHOLD_=4194304
EXPOSE 8080
ENTRYPOINT ["tenantry"]
CMD ["serve"]
