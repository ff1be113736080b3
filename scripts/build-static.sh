#!/bin/sh
# The one build of the invigil binary that ships. The Dockerfile runs it to
# make the image, and .ci/run runs it (and a test starts what it made) because
# `docker build` cannot run on the project's machines: change the build here
# and both follow.
#
#   scripts/build-static.sh OUT    # default OUT: ./invigil
#
# CGO_ENABLED=0: modernc.org/sqlite is pure Go, so the binary is static and
# runs on any base image (no libc). -trimpath and -buildvcs=false make the
# same source give the same binary with or without .git (the image's build
# context has none); -s -w strip the symbol and DWARF tables.
set -eu
out=${1:-invigil}
case $out in /*) ;; *) out="$PWD/$out" ;; esac
cd "$(dirname "$0")/.."
CGO_ENABLED=0 GOOS=${GOOS:-linux} go build \
	-trimpath -buildvcs=false \
	-ldflags='-s -w' \
	-o "$out" .
