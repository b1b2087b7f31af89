#!/bin/sh
# Per-kernel GPU time inside decode steps (Nsight Compute, kernel
# durations only, clocks left alone) for 1B- and 8B-shaped models cut to 4
# layers: what each kernel of a step costs, fused (default) and with
# KILN_CUDA_FUSE=0 (FUSES="1 0"). Writes $OUT/ncu-<shape>-<fuse|nofuse>.csv.
. scripts/gpu-env.sh
NCU=$(command -v ncu || ls /opt/nvidia/nsight-compute/*/ncu 2>/dev/null | head -1 || echo /usr/local/cuda/bin/ncu)
for s in ${SHAPES:-1b 8b}; do
  d=/tmp/prof-$s
  [ -f $d/config.json ] || python3 tools/make_random_llama.py --shape $s --layers 4 --out $d > /dev/null 2>&1
  for fuse in ${FUSES:-1 0}; do
    tag=$s-$([ $fuse = 1 ] && echo fuse || echo nofuse)
    KILN_CUDA_FUSE=$fuse KILN_DEVICE_NO_GRAPHS=1 timeout 240 "$NCU" --clock-control none \
      --metrics gpu__time_duration.sum --csv --log-file "$OUT/ncu-$tag.csv" \
      build/kiln generate --device cuda --model $d --prompt "hi" -n 3 --ignore-eos > "$OUT/ncu-$tag.out" 2>&1
    echo "rc=$?" >> "$OUT/ncu-$tag.out"
  done
done
