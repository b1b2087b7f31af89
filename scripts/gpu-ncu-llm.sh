#!/bin/sh
# Per-kernel GPU time inside a decode step (Nsight Compute, kernel
# durations only, clocks left alone) for an 8B-shaped model cut to 4
# layers: which kernels besides the weight GEMVs cost the step its time.
. scripts/gpu-env.sh
d=/tmp/prof-8b
[ -f $d/config.json ] || python3 tools/make_random_llama.py --shape 8b --layers 4 --out $d > /dev/null 2>&1
NCU=$(command -v ncu || ls /opt/nvidia/nsight-compute/*/ncu 2>/dev/null | head -1 || echo /usr/local/cuda/bin/ncu)
KILN_DEVICE_NO_GRAPHS=1 timeout 240 "$NCU" --clock-control none --metrics gpu__time_duration.sum \
  --csv --log-file "$OUT/ncu.csv" build/kiln generate --device cuda --model $d --prompt "hi" -n 3 --ignore-eos > "$OUT/ncu.out" 2>&1
echo "rc=$?" >> "$OUT/ncu.out"
