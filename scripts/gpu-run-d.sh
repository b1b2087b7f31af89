#!/bin/sh
# GPU run: cuda op tests, zero-copy benchmark, LLM numbers (1B and 8B).
. scripts/gpu-env.sh
export KILN_BENCH_DIR=/work/main/build/bench
timeout 150 build/tests/test_device_cuda > "$OUT/test_device_cuda.log" 2>&1; echo "rc=$?" >> "$OUT/test_device_cuda.log"
timeout 200 build/tests/test_gpu_guest > "$OUT/test_gpu_guest.log" 2>&1; echo "rc=$?" >> "$OUT/test_gpu_guest.log"
timeout 200 build/bench/bench_zero_copy --device cuda > "$OUT/zero_copy.log" 2>&1; echo "rc=$?" >> "$OUT/zero_copy.log"
cp build/bench/zero_copy.json "$OUT/"; cp build/bench/zero_copy.json.native.json "$OUT/zero_copy_native.json"
KILN_PREBUILT=1 REPS=${REPS:-2} SHAPES="${SHAPES:-1b 8b}" timeout ${LLM_T:-450} sh bench/llm/run_h200.sh build > "$OUT/llm.log" 2>&1; echo "rc=$?" >> "$OUT/llm.log"
tar czf "$OUT/llm.tgz" docs/llm-bench-* /tmp/kiln-llm-data/*.json 2>/dev/null
true
