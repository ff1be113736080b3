# syntax=docker/dockerfile:1
#
# invigil's image for Fly.io: one static Go binary, Litestream beside it, on a
# small Alpine base. deploy/entrypoint.sh restores the database when the
# volume has none, then runs invigil under `litestream replicate -exec`.
#
# `docker build` cannot run on the project's machines, so the proofs live
# elsewhere: .ci/run builds invigil with scripts/build-static.sh (the very
# command of the build stage) and scripts/build-litestream.sh (the
# Litestream stage's), and the deploy/ tests start both binaries.
# deploy/deploy_test.go checks this file's versions against go.mod.

# The Go of go.mod's `go` line, so the image builds with CI's toolchain
# (the official images set GOTOOLCHAIN=local: an older Go would refuse).
ARG GO_VERSION=1.26.8
# The Litestream the deploy tests run (go.mod pins the same version).
ARG LITESTREAM_VERSION=v0.5.18
ARG ALPINE_VERSION=3.22

# --- invigil, static -----------------------------------------------------
FROM golang:${GO_VERSION}-alpine AS build
WORKDIR /src
# Modules first: this layer is reused until go.mod or go.sum change.
COPY go.mod go.sum ./
RUN go mod download
COPY . .
RUN sh scripts/build-static.sh /out/invigil

# --- Litestream, static, from its Go module ------------------------------
# Built from source at a pinned version (verified by the Go checksum
# database) rather than downloaded: no cgo, so a static binary like ours.
FROM golang:${GO_VERSION}-alpine AS litestream
ARG LITESTREAM_VERSION
COPY scripts/build-litestream.sh /build-litestream.sh
RUN sh /build-litestream.sh "${LITESTREAM_VERSION}" /out/litestream

# --- the image -------------------------------------------------------------
FROM alpine:${ALPINE_VERSION}
# ca-certificates: invigil calls Supabase (JWKS, REST) and Litestream calls
# Tigris over TLS. su-exec: the entrypoint starts as root only to hand the
# volume (mounted root-owned by Fly) to the invigil user, then drops root.
# sqlite: the sqlite3 shell, for the on-call engineer (docs/runbooks.md).
RUN apk add --no-cache ca-certificates su-exec sqlite \
 && addgroup -S -g 10001 invigil \
 && adduser -S -D -H -u 10001 -G invigil -s /sbin/nologin invigil \
 && install -d -o invigil -g invigil /data
COPY --from=build /out/invigil /usr/local/bin/invigil
COPY --from=litestream /out/litestream /usr/local/bin/litestream
COPY litestream.yml /etc/litestream.yml
COPY deploy/entrypoint.sh /usr/local/bin/entrypoint
ENV INVIGIL_DB=/data/invigil.db \
    PORT=8080
EXPOSE 8080
ENTRYPOINT ["/usr/local/bin/entrypoint"]
