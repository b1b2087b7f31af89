#!/bin/sh
# Host time per decode step (KILN_DEVICE_TIMING) against the step's wall
# time, for the 1B shape and an 8B shape cut to 4 layers.
. scripts/gpu-env.sh
P="$(python3 -c "print(' '.join(['the quick brown fox']*32))")"
for s in 1b 8b; do
  d=/tmp/prof-$s
  [ -f $d/config.json ] || python3 tools/make_random_llama.py --shape $s --layers 4 --out $d > /dev/null 2>&1
  echo "== $s (4 layers)" >> $OUT/timing.log
  KILN_DEVICE_TIMING=1 build/kiln generate --device cuda --model $d --prompt "$P" -n 128 --ignore-eos --json 2>>$OUT/timing.log | tail -1 >> $OUT/timing.log
  KILN_DEVICE_TIMING=1 build/kiln generate --device cuda --native --model $d --prompt "$P" -n 128 --ignore-eos --json 2>>$OUT/timing.log | tail -1 >> $OUT/timing.log
done
