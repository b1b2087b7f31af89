#!/bin/sh
# GPU run for kernel work: cuda op tests (fused programs, GEMV shapes vs
# cuBLAS), test_llm on cuda, bench_llm 1B and 8B under configurations
# interleaved (CFGS): fusion on and off (fuse, nofuse: KILN_CUDA_FUSE), or
# any KILN_CUDA_* settings (FUSE1.ROPE_EPILOGUE0: KILN_CUDA_FUSE=1
# KILN_CUDA_ROPE_EPILOGUE=0) or KILN_DEVICE_* (DEVICE_ONLY0), then
# the zero-copy benchmark (ZC=0: not). The benchmarks run only if the cuda
# tests pass. Logs to $OUT.
. scripts/gpu-env.sh
DATA=${KILN_LLM_DATA:-/tmp/kiln-llm-data}
mkdir -p "$DATA"
t0=$(date +%s)
stamp() { echo "[$(( $(date +%s) - t0 )) s] $*"; }
stamp start > "$OUT/times.log"
timeout 150 build/tests/test_device_cuda > "$OUT/test_device_cuda.log" 2>&1; echo "rc=$?" >> "$OUT/test_device_cuda.log"
stamp test_device_cuda >> "$OUT/times.log"
timeout 120 build/tests/test_llm cuda > "$OUT/test_llm.log" 2>&1; echo "rc=$?" >> "$OUT/test_llm.log"
stamp test_llm >> "$OUT/times.log"
if ! grep -q '^rc=0' "$OUT/test_device_cuda.log" || ! grep -q '^rc=0' "$OUT/test_llm.log"; then
  stamp "tests failed: no benchmarks" >> "$OUT/times.log"
  exit 0
fi
for s in ${SHAPES:-1b 8b}; do
  [ -f "$DATA/llama-$s/config.json" ] || timeout 300 python3 tools/make_random_llama.py --shape "$s" --out "$DATA/llama-$s" > "$OUT/make-$s.log" 2>&1
  stamp "made $s" >> "$OUT/times.log"
  for cfg in ${CFGS:-fuse nofuse fuse nofuse}; do
    case $cfg in
      fuse) envs="KILN_CUDA_FUSE=1" ;;
      nofuse) envs="KILN_CUDA_FUSE=0" ;;
      # NAMEn.NAMEn...: KILN_CUDA_NAME=n for each (FUSE1.ROPE_EPILOGUE0),
      # KILN_DEVICE_NAME=n for DEVICE_NAMEn (DEVICE_ONLY0)
      *[0-9]) envs=$(echo "$cfg" | tr . '\n' | sed -e 's/^\(DEVICE_[A-Z_]*\)\([0-9]*\)$/KILN_\1=\2/' \
                -e 's/^\([A-Z][A-Z_]*\)\([0-9]*\)$/KILN_CUDA_\1=\2/' | tr '\n' ' ') ;;
    esac
    env $envs timeout 200 build/bench/bench_llm --model "$DATA/llama-$s" --device cuda --reps ${REPS:-1} --kv f32 \
      --out "$OUT/kiln-$s-$cfg.json" >> "$OUT/bench-$s-$cfg.log" 2>&1
    echo "rc=$?" >> "$OUT/bench-$s-$cfg.log"
    stamp "bench $s $cfg" >> "$OUT/times.log"
  done
done
if [ "${ZC:-1}" = 1 ]; then   # ZC=0: no zero-copy benchmark
  timeout 200 build/bench/bench_zero_copy --device cuda > "$OUT/zero_copy.log" 2>&1; echo "rc=$?" >> "$OUT/zero_copy.log"
  cp build/bench/zero_copy.json "$OUT/" 2>/dev/null
  stamp zero_copy >> "$OUT/times.log"
fi
cd "$OUT" && tar czf logs.tgz *.log *.json 2>/dev/null
true
