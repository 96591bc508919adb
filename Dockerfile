# syntax=docker/dockerfile:1
#
# cloudmap-sd container image: one static binary and a CA bundle on an empty base.
#
#   docker build -t cloudmap-sd:0.1.0 --build-arg VERSION=0.1.0 \
#       --build-arg REVISION="$(git rev-parse HEAD)" .
#
# Needs BuildKit (the default builder of Docker 23 and later) for the cache mounts.
# The result has no shell, no package manager and no /etc/passwd; it runs as a numeric
# non-root user. On a machine that cannot pull the builder image (no registry), build the
# binary on the host and pack it with Dockerfile.local instead: scripts/image.sh.
#
# Keep the final stage identical to Dockerfile.local apart from the COPY sources
# (scripts/image-test.sh checks it).

ARG RUST_IMAGE=docker.io/library/rust:1.95-slim-bookworm
# Any image with a PEM bundle at /etc/ssl/certs/ca-certificates.crt, e.g. a corporate base
# image that adds an internal CA.
ARG CA_IMAGE=${RUST_IMAGE}

# ---------------------------------------------------------------------------------------
# Static binary. crt-static links glibc statically; the gnu target needs no extra
# toolchain. The target triple follows the build platform (x86_64 or aarch64).
# opt-level "s": a third smaller binary (scripts/image.sh builds it the same way).
FROM ${RUST_IMAGE} AS builder
WORKDIR /src
COPY Cargo.toml Cargo.lock ./
COPY src ./src
# A workspace member (the test harness): cargo needs it to load the workspace.
COPY test-support ./test-support
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/cargo-target \
    triple="$(uname -m)-unknown-linux-gnu" \
    && RUSTFLAGS='-C target-feature=+crt-static' CARGO_TARGET_DIR=/cargo-target \
        CARGO_PROFILE_RELEASE_OPT_LEVEL=s \
        cargo build --release --locked --bin cloudmap-sd --target "${triple}" \
    && mkdir -p /out \
    && cp "/cargo-target/${triple}/release/cloudmap-sd" /out/cloudmap-sd \
    && case "$(ldd /out/cloudmap-sd 2>&1)" in \
        *"not a dynamic executable"* | *"statically linked"*) ;; \
        *) echo "cloudmap-sd is not a static executable" >&2; exit 1 ;; \
    esac \
    && /out/cloudmap-sd --version

# ---------------------------------------------------------------------------------------
# CA bundle for HTTPS to the AWS APIs.
FROM ${CA_IMAGE} AS ca-bundle
RUN test -s /etc/ssl/certs/ca-certificates.crt

# ---------------------------------------------------------------------------------------
FROM scratch

ARG VERSION=dev
ARG REVISION=unknown
LABEL org.opencontainers.image.title="cloudmap-sd" \
      org.opencontainers.image.description="Prometheus file_sd targets from AWS Cloud Map, a sidecar for Prometheus on Amazon ECS" \
      org.opencontainers.image.version="${VERSION}" \
      org.opencontainers.image.revision="${REVISION}" \
      org.opencontainers.image.licenses="Apache-2.0" \
      org.opencontainers.image.base.name="scratch"

COPY --from=ca-bundle /etc/ssl/certs/ca-certificates.crt /etc/ssl/certs/ca-certificates.crt
COPY --from=builder /out/cloudmap-sd /cloudmap-sd

ENV SSL_CERT_FILE=/etc/ssl/certs/ca-certificates.crt
# 65534:65534 is the default run_as_user of the Terraform module (terraform/variables.tf),
# which sets the same user in the task definition.
USER 65534:65534

HEALTHCHECK --interval=10s --timeout=5s --start-period=60s --retries=3 \
    CMD ["/cloudmap-sd", "healthcheck"]
ENTRYPOINT ["/cloudmap-sd"]
CMD ["run"]
