#!/bin/sh
# GPU probe of a standalone `kiln generate` prefill (1B shape, 512-token
# prompt in one pass): KILN_DEVICE_TIMING for guest and twin, twice each
# (the first run in a process pays first-use costs), then
# KILN_CUDA_PROFILE=1 totals (launches by kind, syncs, bytes uploaded and
# copied back). Output on stdout.
. scripts/gpu-env.sh
DATA=/tmp/kiln-llm-data; mkdir -p $DATA
timeout 200 python3 tools/make_random_llama.py --shape 1b --out $DATA/llama-1b > /dev/null 2>&1
P=$(python3 -c "print(('abcdefgh'*64)[:511])")
for rep in 1 2; do
for m in "" "--native"; do
  echo "== timing $m rep $rep"
  KILN_DEVICE_TIMING=1 timeout 120 build/kiln generate --model $DATA/llama-1b --prompt "$P" -n 1 --ignore-eos --batch 512 --device cuda --json $m 2>&1 | grep -E "timing|\"prefill\"|\"done\""
done
done
for m in "" "--native"; do
  echo "== profile $m"
  KILN_CUDA_PROFILE=1 timeout 120 build/kiln generate --model $DATA/llama-1b --prompt "$P" -n 1 --ignore-eos --batch 512 --device cuda --json $m 2>&1 | grep -vE "^\{\"event\":\"token"
done
