#!/bin/sh
# Where a decode step's time goes on the GPU (KILN_CUDA_PROFILE, see
# src/device/cuda/cuda_internal.h), for an 8B-shaped model cut to 4 layers
# and the 1B shape: per-kind totals, every launch of a short run, plain
# timings. Usage: sh scripts/gpu-profile-llm.sh (on the GPU machine).
. scripts/gpu-env.sh
for s in 8b 1b; do
  d=/tmp/prof-$s
  [ -f $d/config.json ] || python3 tools/make_random_llama.py --shape $s --layers 4 --out $d > /dev/null 2>&1
  P="$(python3 -c "print(' '.join(['the quick brown fox']*32))")"
  echo "== $s (4 layers)" >> $OUT/prof.log
  KILN_CUDA_PROFILE=1 build/kiln generate --device cuda --model $d --prompt "$P" -n 32 --ignore-eos > /dev/null 2>> $OUT/prof.log
  KILN_CUDA_PROFILE=2 build/kiln generate --device cuda --model $d --prompt "hi" -n 3 --ignore-eos > /dev/null 2> $OUT/launches-$s.log
  build/kiln generate --device cuda --model $d --prompt "$P" -n 64 --ignore-eos --json 2>>$OUT/prof.log | tail -1 >> $OUT/prof.log
done
