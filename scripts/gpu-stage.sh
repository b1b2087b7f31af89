#!/bin/sh
# Stages what a run on the GPU machine needs into .carry/ (git-ignored):
# the binaries of a build made here (tests, benchmarks, kiln, guests) and
# Debian's wabt (wasm2c, which the engine runs) and libcjson, which that
# machine (Ubuntu, CUDA, no package registry) lacks. scripts/gpu-env.sh
# sets them up there. Binaries keep the absolute paths of this checkout
# (/work/main/build/...), so gpu-env.sh links /work/main to the copy.
#
#   sh scripts/gpu-stage.sh [BUILD]      then carry ".carry" in the run
set -e
BUILD=${1:-build}
STAGE=.carry
rm -rf "$STAGE/build"
mkdir -p "$STAGE/build" "$STAGE/debs"
(cd "$STAGE/debs" && [ -f wabt_*.deb ] || apt-get download wabt libcjson1 >/dev/null 2>&1)
# The executables the gpu-run scripts use (each holds the kernels: the
# device tool carries 64 MiB at most) and the guests, keeping their place
# under the build folder.
(cd "$BUILD" && find . -path ./test-cache -prune -o -path ./spec-cache -prune -o -path ./bench/cache -prune -o -path ./CMakeFiles -prune -o \
   -type f \( -name '*.wasm' -o -name '*.fatbin' \
      -o \( -perm -u+x \( -name 'test_device_cuda' -o -name 'test_llm' -o -name 'test_gpu_guest' \
            -o -name 'bench_llm' -o -name 'bench_zero_copy' -o -name 'bench_dispatch' \
            -o -name '*native*' -o -name kiln \) \) \) -print) |
while read -r f; do
  case "$f" in *CMakeFiles*) continue ;; esac
  mkdir -p "$STAGE/build/$(dirname "$f")"
  cp -p "$BUILD/$f" "$STAGE/build/$f"
done
find "$STAGE/build" -type f -perm -u+x ! -name "*.wasm" -exec strip -g {} + 2>/dev/null || true
# The commit the staged binaries were built from (the copy on the GPU
# machine does not carry this checkout's history).
c=$(git rev-parse --short=12 HEAD)
[ -z "$(git status --porcelain --untracked-files=no | head -1)" ] || c="$c-dirty"
echo "$c" > "$STAGE/commit"
du -sh "$STAGE"
