#!/bin/sh
# A/B on the GPU machine: build/bench/bench_llm (this checkout) against
# build/bench/bench_llm_old (staged by hand from an earlier commit),
# interleaved, 1B and 8B shapes; plus test_device_cuda and test_llm on
# cuda for the new build. Logs to $OUT.
. scripts/gpu-env.sh
DATA=${KILN_LLM_DATA:-/tmp/kiln-llm-data}
mkdir -p "$DATA"
timeout 150 build/tests/test_device_cuda > "$OUT/test_device_cuda.log" 2>&1; echo "rc=$?" >> "$OUT/test_device_cuda.log"
[ -x build/tests/test_device_cuda_old ] && timeout 150 build/tests/test_device_cuda_old 2>&1 | grep "cold" > "$OUT/gemv_cold_old.log"
timeout 120 build/tests/test_llm cuda > "$OUT/test_llm.log" 2>&1; echo "rc=$?" >> "$OUT/test_llm.log"
timeout 200 build/tests/test_gpu_guest > "$OUT/test_gpu_guest.log" 2>&1; echo "rc=$?" >> "$OUT/test_gpu_guest.log"
for s in ${SHAPES:-1b 8b}; do
  [ -f "$DATA/llama-$s/config.json" ] || timeout 300 python3 tools/make_random_llama.py --shape "$s" --out "$DATA/llama-$s" > /dev/null 2>&1
  for b in new old new old; do
    exe=build/bench/bench_llm; [ $b = old ] && exe=build/bench/bench_llm_old
    timeout 200 $exe --model "$DATA/llama-$s" --device cuda --reps 1 --kv f32 --out /tmp/x.json 2>&1 | grep "^  decode tok/s\|^  prefill(512) tok/s guest" | sed "s/^/$s $b /" >> "$OUT/ab.log"
  done
done
