#!/bin/sh
# Where a decode step's time goes on the GPU (KILN_CUDA_PROFILE, see
# src/device/cuda/cuda_internal.h): a random 1B-shaped model, per-kind
# totals, then every launch of a short run, then plain timings.
. scripts/gpu-env.sh
[ -f /tmp/m1b/config.json ] || python3 tools/make_random_llama.py --shape 1b --out /tmp/m1b > $OUT/prof.log 2>&1
P="$(python3 -c "print(' '.join(['the quick brown fox']*32))")"
KILN_CUDA_PROFILE=1 build/kiln generate --device cuda --model /tmp/m1b --prompt "$P" -n 32 --ignore-eos > /dev/null 2>> $OUT/prof.log
KILN_CUDA_PROFILE=2 build/kiln generate --device cuda --model /tmp/m1b --prompt "hi" -n 3 --ignore-eos > /dev/null 2> $OUT/launches.log
build/kiln generate --device cuda --model /tmp/m1b --prompt "$P" -n 64 --ignore-eos --json 2>>$OUT/prof.log | tail -2 >> $OUT/prof.log
