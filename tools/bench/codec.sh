#!/usr/bin/env bash
# Codec throughput: voxtok vs transformers on the same random-weight models at
# the real checkpoints' sizes (EnCodec 24 kHz at 6 kbps, DAC 16 kHz with 12
# codebooks), same audio, same thread count, one script run.
#
#   tools/bench/codec.sh [SECONDS] [THREADS]     (default 10 s of audio, 2 threads)
#
# Needs /work/venv-style Python with torch + transformers ($PYTHON) and a built
# voxtok ($VOXTOK, default target/release/voxtok, else target/debug/voxtok).
set -euo pipefail
cd "$(dirname "$0")/../.."
SECONDS_AUDIO=${1:-10}
THREADS=${2:-2}
PYTHON=${PYTHON:-/work/venv/bin/python}
VOXTOK=${VOXTOK:-target/release/voxtok}
[ -x "$VOXTOK" ] || VOXTOK=target/debug/voxtok
OUT=bench-out/codec
mkdir -p "$OUT"
export OMP_NUM_THREADS=$THREADS RAYON_NUM_THREADS=$THREADS
# The machine's load at the start and end goes into the summary: figures taken on
# a loaded machine are only comparable as ratios from the same run.
LOAD_START=$(cut -d' ' -f1-3 /proc/loadavg)
"$PYTHON" tools/bench/codec_transformers.py --out "$OUT" --seconds "$SECONDS_AUDIO" --threads "$THREADS"
"$VOXTOK" -q bench codec --dataset "$OUT/audio_24k.wav" --codec encodec --model "$OUT/encodec" \
    --codebooks 8 --repeat 2 --json "$OUT/voxtok_encodec.json"
"$VOXTOK" -q bench codec --dataset "$OUT/audio_16k.wav" --codec dac --model "$OUT/dac" \
    --codebooks 12 --repeat 2 --json "$OUT/voxtok_dac.json"
# Streaming EnCodec encode on ONE thread, 80 ms chunks (codes checked equal to whole-file).
RAYON_NUM_THREADS=1 "$VOXTOK" -q bench codec --dataset "$OUT/audio_24k.wav" --codec encodec --model "$OUT/encodec" \
    --codebooks 8 --repeat 1 --stream-chunk-ms 80 --json "$OUT/voxtok_encodec_stream_1thread.json" | tail -n 2
"$PYTHON" - "$OUT" "$LOAD_START" "$(cut -d' ' -f1-3 /proc/loadavg)" "$THREADS" <<'PY'
import json, sys
out, load_start, load_end, threads = sys.argv[1:5]
ref = json.load(open(f"{out}/transformers.json"))
lines = ["| codec | codebooks | voxtok encode xRT | transformers encode xRT | ratio | voxtok decode xRT | transformers decode xRT | ratio | voxtok peak RSS MiB |",
         "|---|---:|---:|---:|---:|---:|---:|---:|---:|"]
for c in ("encodec", "dac"):
    v = json.load(open(f"{out}/voxtok_{c}.json"))
    r = v["rows"][0]
    t = ref[c]
    lines.append(f"| {c} | {r['codebooks']} | {r['encode_xrt']:.1f} | {t['encode_xrt']:.1f} | {r['encode_xrt']/t['encode_xrt']:.2f}x "
                 f"| {r['decode_xrt']:.1f} | {t['decode_xrt']:.1f} | {r['decode_xrt']/t['decode_xrt']:.2f}x | {v['peak_rss_mib']:.0f} |")
lines.append("")
lines.append(f"{threads} threads; load average (1/5/15 min) at start {load_start}, at end {load_end}")
table = "\n".join(lines)
print(table)
open(f"{out}/summary.md", "w").write(table + "\n")
PY
