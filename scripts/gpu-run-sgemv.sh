#!/bin/sh
# The zero-copy decode step with kiln's own f32 GEMV and with cublasSgemv
# (KILN_CUDA_SGEMV=cublas, the call the native program makes), interleaved,
# each run with its native baseline; test_device_cuda with cublasSgemv.
. scripts/gpu-env.sh
KILN_CUDA_SGEMV=cublas timeout 150 build/tests/test_device_cuda > "$OUT/test_device_cuda_sgemv.log" 2>&1; echo "rc=$?" >> "$OUT/test_device_cuda_sgemv.log"
for i in 1 2; do
  for m in kiln cublas; do
    KILN_CUDA_SGEMV=$m timeout 120 build/bench/bench_zero_copy --device cuda --sizes 256 > /tmp/zc.log 2>&1
    grep -E "decode y=Wx.*resident_all  |native decode \(pinned|kiln best / native best  " /tmp/zc.log | sed "s/^/$m: /" >> "$OUT/sgemv.log"
  done
done
