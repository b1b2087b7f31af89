#!/bin/sh
# The main demo: run a WASI guest under kiln and check its output.
set -eu
BUILD=${1:-build}
out=$(mktemp -d)
trap 'rm -rf "$out"' EXIT
echo "== kiln run $BUILD/guests/hello.wasm (compiled on first run, then cached)"
"$BUILD/kiln" run --dir "$out::/out" --env OUT_DIR=/out "$BUILD/guests/hello.wasm" one two | tee "$out/log"
grep -q "64x64 matmul checksum: 1247680" "$out/log" && echo "demo: output checked: OK"
