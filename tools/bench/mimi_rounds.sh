#!/usr/bin/env bash
# Mimi whole-file throughput against transformers over several interleaved
# rounds on the model and audio that tools/bench/mimi.sh saved (bench-out/mimi):
# each round times transformers (the saved model loaded from its directory) and
# then voxtok, so both sides see the same machine state; prints every round,
# the per-round ratios, the medians and the load. One run's ratio on a shared
# machine is not a figure to quote; the median over rounds is.
#
#   tools/bench/mimi.sh 10 2                         # once: builds the model and audio
#   tools/bench/mimi_rounds.sh [ROUNDS] [THREADS] [CODEBOOKS]   (default 3, 2, 8)
set -euo pipefail
cd "$(dirname "$0")/../.."
ROUNDS=${1:-3}
THREADS=${2:-2}
K=${3:-8}
PYTHON=${PYTHON:-/work/venv/bin/python}
VOXTOK=${VOXTOK:-target/release/voxtok}
OUT=${MIMI_OUT:-bench-out/mimi}
[ -d "$OUT/mimi" ] || { echo "run tools/bench/mimi.sh first (no $OUT/mimi)" >&2; exit 2; }
export OMP_NUM_THREADS=$THREADS RAYON_NUM_THREADS=$THREADS
LOG=$(mktemp)
echo "load before: $(cat /proc/loadavg)"
for r in $(seq "$ROUNDS"); do
    "$PYTHON" - "$OUT" "$THREADS" "$K" <<'PY' | tee -a "$LOG"
import sys, time
import soundfile as sf
import torch
from transformers import MimiModel
out, threads, k = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
torch.set_num_threads(threads)
model = MimiModel.from_pretrained(f"{out}/mimi").eval()
for m in model.modules():
    if hasattr(m, "_embed"):
        m._embed = None
x, sr = sf.read(f"{out}/audio_24k.wav", dtype="float32")
xs = torch.from_numpy(x)[None, None]
secs = len(x) / sr
def best(f, n=2):
    f()
    b = float("inf")
    for _ in range(n):
        t = time.perf_counter(); f(); b = min(b, time.perf_counter() - t)
    return b
with torch.no_grad():
    codes = model.encode(xs, num_quantizers=k).audio_codes
    te = best(lambda: model.encode(xs, num_quantizers=k))
    td = best(lambda: model.decode(codes))
print(f"transformers {secs / te:.2f} {secs / td:.2f}")
PY
    "$VOXTOK" -q bench codec --dataset "$OUT/audio_24k.wav" --codec mimi --model "$OUT/mimi" \
        --codebooks "$K" --repeat 2 --json "$OUT/voxtok_round.json" > /dev/null
    "$PYTHON" -c "import json,sys; r=json.load(open(sys.argv[1]))['rows'][0]; print(f\"voxtok {r['encode_xrt']:.2f} {r['decode_xrt']:.2f}\")" \
        "$OUT/voxtok_round.json" | tee -a "$LOG"
done
echo "load after: $(cat /proc/loadavg)"
"$PYTHON" - "$LOG" <<'PY'
import statistics, sys
t, v = [], []
for line in open(sys.argv[1]):
    w = line.split()
    if w and w[0] in ("transformers", "voxtok"):
        (t if w[0] == "transformers" else v).append((float(w[1]), float(w[2])))
re = [a[0] / b[0] for a, b in zip(v, t)]
rd = [a[1] / b[1] for a, b in zip(v, t)]
med = statistics.median
print("| round | voxtok enc / dec xRT | transformers enc / dec xRT | ratio enc / dec |")
print("|---:|---|---|---|")
for i, (a, b) in enumerate(zip(v, t)):
    print(f"| {i + 1} | {a[0]:.1f} / {a[1]:.1f} | {b[0]:.1f} / {b[1]:.1f} | {a[0] / b[0]:.2f}x / {a[1] / b[1]:.2f}x |")
print(f"| median | {med(x[0] for x in v):.1f} / {med(x[1] for x in v):.1f} | "
      f"{med(x[0] for x in t):.1f} / {med(x[1] for x in t):.1f} | {med(re):.2f}x / {med(rd):.2f}x |")
PY
rm -f "$LOG" "$OUT/voxtok_round.json"
