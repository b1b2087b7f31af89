#!/bin/sh
# The decode floor benchmarks (bench/floor/): gpu_floor (what one kernel a
# op can reach: kernels that only read the weights) and layer_chain
# (kiln's decode kernels for a 1B step, this checkout's kernels.cu against
# BASE's, with and without programmatic dependent launch).
#
#   sh scripts/gpu-floor.sh build [BASE]   here (nvcc): into .carry/floor/
#   sh scripts/gpu-floor.sh run            on the GPU machine (carry
#                                          .carry/floor): logs to $OUT
set -e
case "$1" in
build)
  base=${2:-HEAD}
  mkdir -p .carry/floor
  git show "$base:src/device/cuda/kernels.cu" |
    sed 's/^#define KC_GLOBAL .*/#define KC_GLOBAL __global__/' > .carry/floor/kernels_base.cu
  flags="-O3 -std=c++17 -gencode arch=compute_90,code=sm_90 -Isrc/device/cuda"
  nvcc $flags bench/floor/gpu_floor.cu -o .carry/floor/gpu_floor
  nvcc $flags -DKILN_BASE_KERNELS="\"$(pwd)/.carry/floor/kernels_base.cu\"" \
    bench/floor/layer_chain.cu -o .carry/floor/layer_chain
  git rev-parse --short=12 "$base" > .carry/floor/base
  c=$(git rev-parse --short=12 HEAD)
  [ -z "$(git status --porcelain --untracked-files=no | head -1)" ] || c="$c-dirty"
  echo "$c" > .carry/floor/commit
  ;;
run)
  out=${OUT:-.}
  echo "layer_chain: base $(cat .carry/floor/base), cur $(cat .carry/floor/commit)"
  nvidia-smi --query-gpu=name,driver_version,clocks.sm,clocks.mem --format=csv,noheader
  .carry/floor/layer_chain "$out/layer_chain.json" 2>&1 | tee "$out/layer_chain.txt"
  [ -n "$FLOOR" ] && .carry/floor/gpu_floor "$out/floor.json" > "$out/floor.txt" 2>&1
  true
  ;;
*) echo "usage: sh scripts/gpu-floor.sh build [BASE] | run" >&2; exit 2 ;;
esac
