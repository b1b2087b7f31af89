#!/bin/sh
# Builds and runs kiln's benchmarks.
#
#   scripts/bench.sh [BUILD [NAME...]] [-- OPTIONS...]
#
# Every program BUILD/bench/bench_* is a benchmark (bench/CMakeLists.txt
# makes one per bench/bench_<name>.c): each prints a table and writes
# BUILD/bench/<name>.json. With NAMEs (e.g. "engine"), runs only those.
# OPTIONS go to every program (e.g. -- --quick). `make bench` runs
# `scripts/bench.sh build`.
#
# The benchmarks share a private compile cache, BUILD/bench/cache
# (KILN_CACHE_DIR), so they never touch the user's cache and a second run
# finds its modules compiled. Exit status: 0 when every benchmark ran.
set -u
cd "$(dirname "$0")/.." || exit 1 # BUILD is relative to the repository root
BUILD=build
if [ $# -gt 0 ] && [ "$1" != "--" ]; then
  BUILD=$1
  shift
fi
names=""
while [ $# -gt 0 ] && [ "$1" != "--" ]; do
  names="$names $1"
  shift
done
[ "${1:-}" = "--" ] && shift

cmake -S . -B "$BUILD" -DCMAKE_BUILD_TYPE=RelWithDebInfo >/dev/null || exit 1
cmake --build "$BUILD" --target kiln_bench -j "$(nproc)" >/dev/null || {
  echo "bench: build failed (cmake --build $BUILD --target kiln_bench)" >&2
  exit 1
}

dir="$BUILD/bench"
export KILN_CACHE_DIR="$(cd "$dir" && pwd)/cache"
export KILN_BENCH_DIR="$(cd "$dir" && pwd)"

if [ -z "$names" ]; then
  for p in "$dir"/bench_*; do
    [ -f "$p" ] && [ -x "$p" ] || continue
    names="$names ${p##*/bench_}"
  done
fi
if [ -z "$names" ]; then
  echo "bench: no benchmarks in $dir" >&2
  exit 1
fi

ran=0
failed=""
for n in $names; do
  p="$dir/bench_$n"
  if [ ! -x "$p" ]; then
    echo "bench: no benchmark '$n' ($p)" >&2
    failed="$failed $n"
    continue
  fi
  echo "== bench $n"
  if "$p" "$@"; then
    ran=$((ran + 1))
  else
    failed="$failed $n"
  fi
  echo
done
if [ -n "$failed" ]; then
  echo "bench: $ran ran, failed:$failed"
  exit 1
fi
echo "bench: $ran ran; JSON in $dir"
