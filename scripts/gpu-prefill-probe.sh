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
