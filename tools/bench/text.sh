#!/usr/bin/env bash
# `voxtok bench text` beside transformers + Python tokenizers, in one run.
# A random-weight Qwen2 model with Qwen2.5-0.5B's real dimensions is written
# to $MODEL (default /tmp/voxtok-bench-qwen2.5-0.5b; ~2 GB, never in git).
#   tools/bench/text.sh [THREADS]      (default 2; release build of voxtok;
#   VOXTOK_BIN=1 skips the build and uses target/release/voxtok as it is)
set -euo pipefail
cd "$(dirname "$0")/../.."
THREADS=${1:-2}
MODEL=${MODEL:-/tmp/voxtok-bench-qwen2.5-0.5b}
PY=${PY:-/work/venv/bin/python}
OUT=${OUT:-/tmp/voxtok-bench-text}
ARGS=(--prompt-tokens "${PROMPT:-64}" --new-tokens "${NEW:-16}" --batches 1,8)
mkdir -p "$OUT"
[ -n "${VOXTOK_BIN:-}" ] || cargo build --release -p voxtok
"$PY" tools/bench/text_transformers.py --model "$MODEL" --create-only
# both sides on the same number of threads
export RAYON_NUM_THREADS=$THREADS OMP_NUM_THREADS=$THREADS MKL_NUM_THREADS=$THREADS
"$PY" tools/bench/text_transformers.py --model "$MODEL" --threads "$THREADS" \
  --prompt-tokens "${PROMPT:-64}" --new-tokens "${NEW:-16}" --batches 1,8 --out "$OUT/transformers.json"
target/release/voxtok bench text --model "$MODEL" --tokenizer tests/fixtures/llm/qwen2 "${ARGS[@]}" \
  --reference "$OUT/transformers.json" --json "$OUT/voxtok.json"
echo "reports: $OUT/transformers.json $OUT/voxtok.json"
