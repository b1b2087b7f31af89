#!/bin/sh
# Where a prefill's GPU time goes: Nsight Compute kernel durations (clocks
# and caches left alone, as in a real run) of one 512-token prefill of 1B-
# and 8B-shaped models cut to 4 layers, `kiln generate -n 1` (no decode
# step). Writes $OUT/ncu-prefill-<shape>.csv and, through
# scripts/ncu-sum.py, $OUT/ncu-prefill-<shape>.txt (time by kernel).
. scripts/gpu-env.sh
NCU=$(command -v ncu || ls /opt/nvidia/nsight-compute/*/ncu 2>/dev/null | head -1 || echo /usr/local/cuda/bin/ncu)
P=$(python3 -c "print(('abcdefgh'*64)[:511])")
for s in ${SHAPES:-1b 8b}; do
  d=/tmp/prof-$s
  [ -f $d/config.json ] || python3 tools/make_random_llama.py --shape $s --layers 4 --out $d > /dev/null 2>&1
  timeout 240 "$NCU" --clock-control none --cache-control none \
    --metrics gpu__time_duration.sum --csv --log-file "$OUT/ncu-prefill-$s.csv" \
    build/kiln generate --device cuda --model $d --prompt "$P" -n 1 --ignore-eos \
    --batch 512 > "$OUT/ncu-prefill-$s.out" 2>&1
  echo "rc=$?" >> "$OUT/ncu-prefill-$s.out"
  python3 scripts/ncu-sum.py "$OUT/ncu-prefill-$s.csv" > "$OUT/ncu-prefill-$s.txt" 2>&1
done
