#!/bin/sh
# GPU run: the LLM numbers only (correctness on cuda, then 1B and 8B).
. scripts/gpu-env.sh
KILN_PREBUILT=1 REPS=${REPS:-2} SHAPES="${SHAPES:-1b 8b}" timeout ${LLM_T:-420} sh bench/llm/run_h200.sh build > "$OUT/llm.log" 2>&1; echo "rc=$?" >> "$OUT/llm.log"
tar czf "$OUT/llm.tgz" docs/llm-bench-* /tmp/kiln-llm-data/*.json 2>/dev/null
true
