# syntax=docker/dockerfile:1
#
# tyk-gitops container image.
#
#   docker build -t tyk-gitops .
#   docker run --rm tyk-gitops --help
#
# A variant with a busybox shell, for CI job images that need one (GitLab):
#   docker build --build-arg RUNTIME_IMAGE=gcr.io/distroless/cc-debian12:debug-nonroot \
#     -t tyk-gitops:debug .
#
# Size budget (goal: <= 40 MB uncompressed):
#   - debian:bookworm-slim is ~75 MB before anything is added, and would still
#     need libssl3 + ca-certificates on top: ~85 MB + the binary. Over budget.
#   - gcr.io/distroless/cc-debian12 is ~23 MB: glibc, libssl3 (libssl.so.3 and
#     libcrypto.so.3, which reqwest's native-tls and libgit2's HTTPS link to),
#     libgcc_s (Rust's unwinder needs it), ca-certificates, tzdata and an
#     /etc/passwd with the `nonroot` user 65532. No shell, no package manager.
#   - The release binary is stripped (Cargo.toml: opt-level "s", fat LTO,
#     strip = true) and carries libgit2, libssh2 and zlib statically: 8.1 MB
#     measured on 2026-11-26 (`ls -l target/release/tyk-gitops`).
#   => ~31 MB uncompressed by this arithmetic. Not measured: no container
#     engine runs where this is developed; check with `docker images`.
#
# The only shared libraries the binary needs are libssl.so.3, libcrypto.so.3,
# libgcc_s.so.1, libm.so.6 and libc.so.6 (see `ldd`). zlib is NOT in
# distroless cc-debian12, so the build links it statically (LIBZ_SYS_STATIC=1
# below); libssh2 is vendored by libssh2-sys by default; libgit2 is vendored
# through git2's `vendored-libgit2` feature. No openssh-client is needed:
# libgit2 speaks SSH through libssh2 itself.

ARG RUST_IMAGE=rust:1-bookworm
ARG RUNTIME_IMAGE=gcr.io/distroless/cc-debian12:nonroot

# ---------------------------------------------------------------- builder ---
FROM ${RUST_IMAGE} AS builder

# pkg-config + OpenSSL headers for openssl-sys (reqwest native-tls, libgit2
# HTTPS, libssh2 crypto). Versions are not pinned on purpose: this stage only
# builds, and Debian's security updates for bookworm should flow in.
# hadolint ignore=DL3008
RUN apt-get update \
 && apt-get install -y --no-install-recommends pkg-config libssl-dev \
 && rm -rf /var/lib/apt/lists/*

# Link zlib statically: the distroless runtime has no libz.so.1.
ENV LIBZ_SYS_STATIC=1 \
    CARGO_TERM_COLOR=never \
    CARGO_INCREMENTAL=0

WORKDIR /build

# 1) Dependencies only, in their own layer: rebuilt when Cargo.toml or
#    Cargo.lock change, not on every source edit. Stub targets stand in for
#    the crate's lib and bin.
COPY Cargo.toml Cargo.lock ./
RUN mkdir src \
 && echo 'fn main() {}' > src/main.rs \
 && touch src/lib.rs \
 && cargo build --release --locked \
 && rm -rf src target/release/.fingerprint/tyk-gitops-* \
           target/release/deps/tyk_gitops-* target/release/deps/libtyk_gitops-* \
           target/release/tyk-gitops

# 2) The crate itself. schemas/ is embedded with include_str! at build time.
COPY schemas ./schemas
COPY src ./src
# COPY keeps the files' own mtimes, which may be older than the stub build:
# touch them so cargo rebuilds the crate for sure.
RUN touch src/main.rs src/lib.rs \
 && cargo build --release --locked \
 && install -D -m 0755 target/release/tyk-gitops /out/usr/local/bin/tyk-gitops \
 && install -d -m 0750 /out/var/lib/tyk-gitops

# ---------------------------------------------------------------- runtime ---
FROM ${RUNTIME_IMAGE}

ARG RUNTIME_IMAGE
ARG VERSION=0.1.0
ARG REVISION=unknown
LABEL org.opencontainers.image.title="tyk-gitops" \
      org.opencontainers.image.description="Every Tyk API Gateway replica on one verified Git commit" \
      org.opencontainers.image.version="${VERSION}" \
      org.opencontainers.image.revision="${REVISION}" \
      org.opencontainers.image.source="https://github.com/OWNER/tyk-gitops" \
      org.opencontainers.image.base.name="${RUNTIME_IMAGE}"

COPY --from=builder /out/usr/local/bin/tyk-gitops /usr/local/bin/tyk-gitops
# The default --root, owned by the runtime user. In Kubernetes an emptyDir or
# PVC is mounted over it; with Docker a named volume copies this ownership.
COPY --from=builder --chown=65532:65532 /out/var/lib/tyk-gitops /var/lib/tyk-gitops

# Debian's libssl3 alone (no `openssl` package) has no /usr/lib/ssl/certs:
# point OpenSSL's default verify paths, used by libgit2's HTTPS and by
# reqwest/native-tls, at distroless' CA bundle explicitly.
# HOME is the nonroot user's home in distroless' /etc/passwd; the default
# --ssh-known-hosts-file is therefore /home/nonroot/.ssh/known_hosts (the
# examples always pass the file explicitly).
ENV SSL_CERT_FILE=/etc/ssl/certs/ca-certificates.crt \
    SSL_CERT_DIR=/etc/ssl/certs \
    HOME=/home/nonroot

USER 65532:65532
WORKDIR /var/lib/tyk-gitops
# 9090: `tyk-gitops run --listen` (healthz, readyz, metrics, status, webhook).
EXPOSE 9090
ENTRYPOINT ["tyk-gitops"]
CMD ["--help"]
