#!/bin/sh
# GPU run after the GEMV alignment and ARGMAX fixes: the cuda op tests,
# then the LLM numbers (1B and 8B shapes) with a short profile of 1B.
. scripts/gpu-env.sh
timeout 150 build/tests/test_device_cuda > "$OUT/test_device_cuda.log" 2>&1; echo "rc=$?" >> "$OUT/test_device_cuda.log"
KILN_PREBUILT=1 REPS=${REPS:-2} SHAPES="${SHAPES:-1b 8b}" timeout ${LLM_T:-420} sh bench/llm/run_h200.sh build > "$OUT/llm.log" 2>&1; echo "rc=$?" >> "$OUT/llm.log"
tar czf "$OUT/llm.tgz" docs/llm-bench-* /tmp/kiln-llm-data/*.json 2>/dev/null
true
