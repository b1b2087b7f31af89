#!/bin/sh
# GPU run for issues 3 and 5: the zero-copy benchmark again (after the
# split-registration fix), then the LLM numbers for the shapes in $SHAPES.
. scripts/gpu-env.sh
export KILN_BENCH_DIR=/work/main/build/bench
if [ -n "${ZC:-1}" ] && [ "${ZC:-1}" != 0 ]; then
  timeout 100 build/tests/test_device_cuda test_resident_range_across_grown_registrations > "$OUT/grown.log" 2>&1
  timeout 250 build/bench/bench_zero_copy --device cuda > "$OUT/zero_copy.log" 2>&1; echo "rc=$?" >> "$OUT/zero_copy.log"
  cp build/bench/zero_copy*.json "$OUT/" 2>/dev/null
fi
KILN_PREBUILT=1 REPS=${REPS:-2} SHAPES=${SHAPES:-1b} timeout ${LLM_T:-330} sh bench/llm/run_h200.sh build > "$OUT/llm.log" 2>&1; echo "rc=$?" >> "$OUT/llm.log"
tar czf "$OUT/llm.tgz" docs/llm-bench-* /tmp/kiln-llm-data/*.json 2>/dev/null
true
