#!/bin/sh
# The one build of the Litestream binary that ships in the image, from its Go
# module at a pinned version (checked against the Go checksum database). The
# Dockerfile runs it; .ci/run runs it too and hands the binary to the deploy
# tests, which run the image's entrypoint with it.
#
#   scripts/build-litestream.sh VERSION OUT    # e.g. v0.5.18 /out/litestream
#
# CGO_ENABLED=0: Litestream v0.5 uses modernc.org/sqlite, so it is static
# like invigil and needs no libc in the image.
set -eu
version=$1
out=$2
mkdir -p "$(dirname "$out")"
gobin=$(mktemp -d)
CGO_ENABLED=0 GOBIN="$gobin" go install -trimpath \
	-ldflags="-s -w -X main.Version=$version" \
	"github.com/benbjohnson/litestream/cmd/litestream@$version"
mv "$gobin/litestream" "$out"
rmdir "$gobin"
