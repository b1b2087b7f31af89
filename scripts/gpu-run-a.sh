#!/bin/sh
# GPU run for issues 3 and 4 (see docs/gpu.md): cuda tests, guest tests on
# cuda, the zero-copy benchmark with its native baseline, the dispatch
# benchmark on the GPU machine's cores. Logs and JSON go to $OUT.
. scripts/gpu-env.sh
export KILN_BENCH_DIR=/work/main/build/bench
{ nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv; nproc; uname -r; } > "$OUT/machine.txt" 2>&1
timeout 200 build/tests/test_device_cuda > "$OUT/test_device_cuda.log" 2>&1; echo "rc=$?" >> "$OUT/test_device_cuda.log"
timeout 300 build/tests/test_gpu_guest > "$OUT/test_gpu_guest.log" 2>&1; echo "rc=$?" >> "$OUT/test_gpu_guest.log"
timeout 400 build/bench/bench_zero_copy --device cuda > "$OUT/zero_copy.log" 2>&1; echo "rc=$?" >> "$OUT/zero_copy.log"
cp build/bench/zero_copy*.json "$OUT/" 2>/dev/null
timeout 300 build/bench/bench_dispatch > "$OUT/dispatch.log" 2>&1; echo "rc=$?" >> "$OUT/dispatch.log"
cp build/bench/dispatch.json "$OUT/" 2>/dev/null
ls -la build/bench >> "$OUT/machine.txt"
