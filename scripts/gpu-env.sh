#!/bin/sh
# Sourced on the GPU machine at the repository root of the carried copy:
# unpacks wabt and libcjson from .carry/debs into /tmp/kit, points the
# engine's wasm2c at it, and links /work/main (the path the staged
# binaries were built with) and build/ to this copy.
mkdir -p /tmp/kit /work
for d in .carry/debs/*.deb; do dpkg -x "$d" /tmp/kit; done
[ -e /usr/bin/wasm2c ] || ln -s /tmp/kit/usr/bin/wasm2c /usr/bin/wasm2c
export PATH=/tmp/kit/usr/bin:$PATH
export LD_LIBRARY_PATH=/tmp/kit/usr/lib/x86_64-linux-gnu${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}
[ -e /work/main ] || ln -s "$(pwd)" /work/main
[ -e build ] || ln -s .carry/build build
export KILN_CACHE_DIR=/tmp/kiln-cache
[ -f .carry/commit ] && export KILN_BENCH_COMMIT="$(cat .carry/commit)"
