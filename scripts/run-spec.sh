#!/bin/sh
# Build spec_runner and run the WebAssembly core spec tests through kiln.
#
#   scripts/run-spec.sh [-v] [--jobs N] [--filter SUBSTR] [--timeout S]
#
# Arguments go to spec_runner. BUILD_DIR (default: build) is the CMake build
# folder; SPEC_DIR (default: ../shared/testdata/wasm-spec beside the source
# tree) holds the .wast files. Compiled modules are cached in
# $BUILD_DIR/spec-cache, as in `make test`, so repeated runs compile nothing.
set -eu

root=$(cd "$(dirname "$0")/.." && pwd)
build=${BUILD_DIR:-"$root/build"}
spec=${SPEC_DIR:-"$root/../shared/testdata/wasm-spec"}

if [ ! -f "$build/CMakeCache.txt" ]; then
  cmake -S "$root" -B "$build"
fi
cmake --build "$build" --target spec_runner -j"$(nproc)"

runner="$build/tests/spec/spec_runner"
export KILN_CACHE_DIR="${KILN_CACHE_DIR:-$build/spec-cache}"
exec "$runner" "$@" "$spec"
