#!/usr/bin/env bash
# ASR speed, voxtok vs whisper.cpp (built from source beside voxtok, never
# committed) on the same random-weight models and 30 s input as
# tools/bench/asr.sh (run that first: it writes bench-out/models/whisper-*-random
# and bench-out/asr_30s.wav).
#
# whisper.cpp cannot be told to decode exactly N tokens, so its cost of the
# same work (features + encoder + 50 greedy tokens) is projected from its own
# timings: mel + encode + prompt + 50 x (decode + sample per token). voxtok runs
# `bench asr --exact-tokens 50` on the same file. Both use THREADS threads, f32
# weights (whisper.cpp also at its default f16), greedy decoding, no fallback.
#
# Usage: WHISPER_CPP=/path/to/whisper.cpp [VOXTOK_BIN=...] tools/bench/asr_whisper_cpp.sh [THREADS]
#   WHISPER_CPP must hold a build (cmake -B build && cmake --build build --target whisper-cli)
#   and models/convert-h5-to-ggml.py. Needs python with torch + transformers.
set -euo pipefail
cd "$(dirname "$0")/../.."
THREADS=${1:-$(nproc)}
PY=${PY:-/work/venv/bin/python}
OUT=bench-out
WCPP=${WHISPER_CPP:?set WHISPER_CPP to a whisper.cpp checkout with a build/ folder}
CLI=$WCPP/build/bin/whisper-cli
[ -x "$CLI" ] || { echo "no $CLI: build whisper.cpp first" >&2; exit 2; }
BIN=${VOXTOK_BIN:-target/release/voxtok}
[ -f "$OUT/asr_30s.wav" ] || { echo "run tools/bench/asr.sh first (no $OUT/asr_30s.wav)" >&2; exit 2; }
export RAYON_NUM_THREADS=$THREADS OMP_NUM_THREADS=$THREADS

for dims in tiny base; do
    M=$OUT/models/whisper-$dims-random
    G=$OUT/models/whisper-$dims-random-ggml
    if [ ! -f "$G/ggml-model-f32.bin" ]; then
        mkdir -p "$G/src/whisper/assets"
        # what the converter reads: vocab.json (byte-level BPE pieces), added_tokens.json,
        # config.json + weights, and whisper/assets/mel_filters.npz
        "$PY" - "$M" "$G/src" <<'PY'
import json, shutil, sys
from pathlib import Path
import numpy as np
from transformers import WhisperFeatureExtractor
m, g = Path(sys.argv[1]), Path(sys.argv[2])
tok = json.loads((m / "tokenizer.json").read_text())
(g / "vocab.json").write_text(json.dumps(tok["model"]["vocab"]))
(g / "added_tokens.json").write_text("{}")
for f in ("config.json", "model.safetensors", "generation_config.json"):
    shutil.copy(m / f, g / f)
fe = WhisperFeatureExtractor(feature_size=80)
np.savez(g / "whisper/assets/mel_filters.npz", mel_80=fe.mel_filters.T.astype(np.float32))
PY
        "$PY" "$WCPP/models/convert-h5-to-ggml.py" "$G/src" "$G/src" "$G" use-f32 >/dev/null
        "$PY" "$WCPP/models/convert-h5-to-ggml.py" "$G/src" "$G/src" "$G" >/dev/null
    fi
    for w in f32 f16; do
        f=$G/ggml-model-$w.bin; [ $w = f16 ] && f=$G/ggml-model.bin
        "$CLI" -m "$f" -f "$OUT/asr_30s.wav" -t "$THREADS" -bs 1 -bo 1 -nf -l en -ng \
            > /dev/null 2> "$OUT/asr_wcpp_${dims}_$w.log" || true
    done
    "$BIN" -q bench asr "$OUT/asr_30s.wav" --model "$M" --exact-tokens 50 --json "$OUT/asr_vx_${dims}_vs_wcpp.json"
done

"$PY" - "$OUT" "$THREADS" <<'PY'
import json, re, sys
out, threads = sys.argv[1], sys.argv[2]

def timings(path):
    t = {}
    for line in open(path, errors="replace"):
        m = re.search(r"(\w+) time =\s*([\d.]+) ms(?: /\s*(\d+) runs)?", line)
        if m:
            t[m.group(1)] = (float(m.group(2)), int(m.group(3) or 1))
    if "encode" not in t:
        sys.exit(f"no timings in {path}: see that log")
    return t

print(f"\n| model | engine | features + encoder + 50 tokens, s | ms/token | vs voxtok |  ({threads} threads, 30 s input)")
print("|---|---|---:|---:|---:|")
for d in ("tiny", "base"):
    vx = json.load(open(f"{out}/asr_vx_{d}_vs_wcpp.json"))
    vx_s = vx["wall_s"] / vx["files"]
    print(f"| whisper-{d} (random) | voxtok f32 | {vx_s:.3f} | | 1.00x |")
    for w in ("f32", "f16"):
        t = timings(f"{out}/asr_wcpp_{d}_{w}.log")
        per_tok = (t["decode"][0] + t.get("sample", (0, 1))[0]) / max(1, t["decode"][1])
        proj = (t.get("mel", (0, 1))[0] + t["encode"][0] + t.get("prompt", (0, 1))[0] + 50 * per_tok) / 1e3
        print(f"| whisper-{d} (random) | whisper.cpp {w} (projected) | {proj:.3f} | {per_tok:.2f} | "
              f"{proj / vx_s:.2f}x |")
print("\n'vs voxtok' > 1 means whisper.cpp takes longer than voxtok for the same work.")
PY
