#!/bin/sh
# Issue 5's numbers on the GPU machine, side by side in one run:
#   - random-weight bf16 models with Llama-3.2-1B and Llama-3.1-8B shapes
#     (tools/make_random_llama.py; made once, kept in $KILN_LLM_DATA);
#   - kiln: the Wasm guest vs its native twin, decode tokens/s (128-token
#     prompt, 256 generated, greedy), the memory roofline from a
#     device-to-device copy measured in the same process, prefill of a
#     512-token prompt, host RSS (build/bench/bench_llm);
#   - transformers generate() on the same GPU in the same run
#     (bench/llm/hf_generate.py), and the ratio;
#   - kiln generate --device cuda on the tiny reference models (greedy
#     tokens must equal transformers') and test_llm on cuda.
# Writes docs/llm-bench-<date>.md (table, command, date) and
# docs/llm-bench-<date>.json, and a chart docs/llm-bench-<date>.svg.
#
# Usage (repo root, on the H200 machine):
#   sh bench/llm/run_h200.sh [BUILD_DIR]
# Environment: KILN_LLM_DATA (default /tmp/kiln-llm-data) for the models,
# REPS (default 3), SHAPES (default "1b 8b"), KV (default f32), KILN_PREBUILT
# (set: use BUILD_DIR as it is, e.g. binaries staged by scripts/gpu-stage.sh).
set -eu
BUILD=${1:-build-cuda}
DATA=${KILN_LLM_DATA:-/tmp/kiln-llm-data}
REPS=${REPS:-3}
SHAPES=${SHAPES:-"1b 8b"}
KV=${KV:-f32}
DATE=$(date -u +%Y-%m-%d)
OUT=docs/llm-bench-$DATE
mkdir -p "$DATA" docs

if [ -z "${KILN_PREBUILT:-}" ]; then
  echo "== build ($BUILD)"
  cmake -S . -B "$BUILD" -DCMAKE_BUILD_TYPE=Release >/dev/null
  cmake --build "$BUILD" -j "$(nproc)" --target kiln bench_llm test_llm test_llm_cli guest_llm >/dev/null
else
  echo "== using the prebuilt $BUILD (KILN_PREBUILT; see scripts/gpu-stage.sh)"
fi

echo "== correctness on cuda: the tiny reference models"
"$BUILD/tests/test_llm" cuda
for m in gqa mha-tied llama3-rope mqa-deep gqa-bf16-sharded; do
  want=$(python3 -c "import json;print(' '.join(map(str,json.load(open('tests/data/models/$m/reference.json'))['greedy_ids'])))")
  prompt=$(python3 -c "import json;print(json.load(open('tests/data/models/$m/reference.json'))['prompt'])")
  got=$("$BUILD/kiln" generate --device cuda --model "tests/data/models/$m" --prompt "$prompt" \
        -n 64 --ignore-eos --json | python3 -c "import sys,json;print(' '.join(str(json.loads(l.decode('utf-8','replace'))['id']) for l in sys.stdin.buffer if b'\"token\"' in l))")
  if [ "$got" = "$want" ]; then echo "  $m: 64 greedy tokens = transformers"; else echo "  $m: DIFFERENT"; echo "   kiln $got"; echo "   ref  $want"; fi
done

: > "$OUT.json"
for s in $SHAPES; do
  dir=$DATA/llama-$s
  if [ ! -f "$dir/config.json" ]; then
    echo "== making $dir"
    python3 tools/make_random_llama.py --shape "$s" --out "$dir"
  fi
  echo "== kiln $s: guest vs native twin ($REPS reps)"
  "$BUILD/bench/bench_llm" --model "$dir" --device cuda --reps "$REPS" --kv "$KV" \
      --out "$DATA/kiln-$s.json"
  echo "== transformers $s"
  python3 bench/llm/hf_generate.py --model "$dir" --reps "$REPS" > "$DATA/hf-$s.json"
  cat "$DATA/hf-$s.json"
  python3 - "$s" "$DATA/kiln-$s.json" "$DATA/hf-$s.json" >> "$OUT.json" <<'EOF'
import json, sys
k = json.load(open(sys.argv[2])); h = json.load(open(sys.argv[3]))
k["shape"] = sys.argv[1]; k["transformers"] = h
k["kiln_over_transformers"] = k["decode_tok_s_guest"] / h["decode_tok_s"]
print(json.dumps(k))
EOF
done

python3 - "$OUT" "$DATE" "$KV" <<'EOF'
import json, sys
out, date, kv = sys.argv[1:4]
rows = [json.loads(l) for l in open(out + ".json") if l.strip()]
names = {"1b": "Llama-3.2-1B shape", "8b": "Llama-3.1-8B shape"}
md = [f"# kiln generate on the H200: {date}", "",
      "Random-weight bf16 models (tools/make_random_llama.py), batch 1, 128-token prompt,",
      f"256 generated tokens (greedy, EOS ignored), KV cache {kv}; medians of the reps.",
      "Command: `sh bench/llm/run_h200.sh` (bench/llm/bench_llm + bench/llm/hf_generate.py).", "",
      "| model | guest tok/s | twin tok/s | guest/twin | roofline tok/s | guest/roofline "
      "| transformers tok/s | kiln/transformers | prefill 512 tok/s (guest) | transformers prefill | peak RSS MiB (anon) | model MiB |",
      "|---|---|---|---|---|---|---|---|---|---|---|---|"]
for r in rows:
    h = r["transformers"]
    md.append(f"| {names.get(r['shape'], r['shape'])} | {r['decode_tok_s_guest']:.1f} | {r['decode_tok_s_twin']:.1f} "
              f"| {r['guest_over_twin']:.4f} | {r['roofline_tok_s']:.1f} | {100*r['guest_over_roofline']:.1f}% "
              f"| {h['decode_tok_s']:.1f} | {r['kiln_over_transformers']:.2f} | {r['prefill_tok_s_guest']:.0f} "
              f"| {h['prefill_tok_s']:.0f} | {r['peak_rss_kib']/1024:.0f} ({r['rss_anon_kib']/1024:.0f}) "
              f"| {r['model_bytes']/2**20:.0f} |")
md += ["", "Roofline: weight bytes read per decode token / device-to-device copy bandwidth "
       "(cudaMemcpy D2D, bytes read + written per second) measured in the same process: " +
       ", ".join(f"{r['shape']} {r['d2d_copy_gb_s']:.0f} GB/s, {r['weight_bytes_per_token']/1e9:.3f} GB/token" for r in rows) + ".",
       "Targets (issue 5): guest/twin >= 0.98; guest/roofline >= 70%; kiln/transformers well above 1.", "",
       f"![chart]({out.split('/')[-1]}.svg)"]
open(out + ".md", "w").write("\n".join(md) + "\n")
# A plain SVG bar chart: decode tok/s per system and model.
bars = []
for r in rows:
    for label, v in (("guest", r["decode_tok_s_guest"]), ("twin", r["decode_tok_s_twin"]),
                     ("roofline", r["roofline_tok_s"]), ("transformers", r["transformers"]["decode_tok_s"])):
        bars.append((f"{r['shape']} {label}", v))
mx = max(v for _, v in bars) or 1
W, bh = 640, 22
svg = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{W}" height="{40 + bh * len(bars)}" font-family="sans-serif" font-size="12">',
       f'<text x="10" y="20">decode tokens/s, H200, {date}</text>']
for i, (name, v) in enumerate(bars):
    y = 30 + i * bh
    w = int((W - 260) * v / mx)
    svg.append(f'<text x="10" y="{y + 15}">{name}</text><rect x="150" y="{y + 3}" width="{w}" height="{bh - 6}" fill="#c0532b"/>'
               f'<text x="{155 + w}" y="{y + 15}">{v:.0f}</text>')
svg.append("</svg>")
open(out + ".svg", "w").write("\n".join(svg) + "\n")
print(open(out + ".md").read())
EOF
echo "wrote $OUT.md $OUT.json $OUT.svg"
