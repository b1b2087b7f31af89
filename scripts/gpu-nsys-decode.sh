#!/bin/sh
# Where a decode step's time goes, kiln against the native program: an
# Nsight Systems trace of the zero-copy benchmark (CUDA API calls and GPU
# work of both processes; the decode step dominates with --sizes 256 and
# 2000 steps). Writes the summary tables to $OUT/nsys-*.txt.
. scripts/gpu-env.sh
NSYS=$(command -v nsys || ls /opt/nvidia/nsight-systems/*/bin/nsys /usr/local/cuda/bin/nsys 2>/dev/null | head -1)
[ -n "$NSYS" ] || { echo "no nsys" > "$OUT/nsys-missing.txt"; exit 0; }
timeout 240 "$NSYS" profile -t cuda -o /tmp/zc --force-overwrite true \
  build/bench/bench_zero_copy --device cuda --sizes 256 --decode-steps 2000 > "$OUT/nsys-run.txt" 2>&1
for r in cuda_api_sum cuda_gpu_kern_sum cuda_gpu_mem_time_sum; do
  "$NSYS" stats -r $r -f column /tmp/zc.nsys-rep > "$OUT/nsys-$r.txt" 2>&1
done
