#!/usr/bin/env bash
# CPU vs GPU check of `voxtok transcribe` (needs an NVIDIA GPU + CUDA toolkit).
# Builds voxtok with `--features cuda`, transcribes the Whisper fixtures on
# `--device cpu` and `--device cuda` (f32, every heuristic off, and again with
# the default decoding), and compares the token ids and texts of every file.
# Exit 0 when all match; 1 on any difference; 77 when no GPU is present.
#
# Usage: scripts/check-cuda.sh [MODEL_DIR ...]   (default: the fixture models)
set -euo pipefail
cd "$(dirname "$0")/.."

if ! command -v nvidia-smi >/dev/null 2>&1 || ! nvidia-smi -L >/dev/null 2>&1; then
    echo "check-cuda: no NVIDIA GPU found (nvidia-smi); skipping" >&2
    exit 77
fi

cargo build --release -p voxtok --features cuda
BIN=target/release/voxtok
OUT=$(mktemp -d)
trap 'rm -rf "$OUT"' EXIT

MODELS=("$@")
if [ ${#MODELS[@]} -eq 0 ]; then
    MODELS=(tests/fixtures/whisper/tiny-multi tests/fixtures/whisper/tiny-en tests/fixtures/whisper/tiny-128)
fi
AUDIO=(tests/fixtures/whisper/audio/*.wav)
PLAIN=(--language en --temperature 0 --without-timestamps --no-speech-threshold none
       --suppress-tokens none --no-suppress-blank --max-new-tokens 24)

status=0
for m in "${MODELS[@]}"; do
    name=$(basename "$m")
    for mode in plain default; do
        flags=()
        [ "$mode" = plain ] && flags=("${PLAIN[@]}")
        for dev in cpu cuda; do
            "$BIN" -q transcribe "${AUDIO[@]}" --model "$m" --device "$dev" --batch-size 2 \
                --format jsonl -o "$OUT/$name.$mode.$dev.jsonl" "${flags[@]}"
        done
        if python3 - "$OUT/$name.$mode.cpu.jsonl" "$OUT/$name.$mode.cuda.jsonl" <<'PY'
import json, sys
a = [json.loads(l) for l in open(sys.argv[1])]
b = [json.loads(l) for l in open(sys.argv[2])]
toks = lambda r: [t for s in r["segments"] for t in s["tokens"]]
bad = [x["path"] for x, y in zip(a, b) if toks(x) != toks(y) or x["text"] != y["text"]]
if len(a) != len(b) or bad:
    print("  differ:", bad); sys.exit(1)
PY
        then echo "ok    $name ($mode): CPU and CUDA transcripts identical"
        else echo "FAIL  $name ($mode)"; status=1
        fi
    done
done
exit $status
