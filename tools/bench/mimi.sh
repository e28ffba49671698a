#!/usr/bin/env bash
# Mimi throughput: voxtok vs transformers on the same random-weight model at the
# real checkpoint's size (kyutai/mimi config), same audio, same thread count,
# one script run; then streaming voxtok encode on ONE thread, in chunks of each of
# $STREAM_MS (default "80 160 240 320") ms, each beside whole-file encoding on one
# thread in the same process (the ratio is the figure to quote on a loaded machine);
# then the whole sweep in ONE process by models/examples/mimi_stream (x real time by
# wall and by CPU time, time per push by stage, weight bytes a push reads and the
# one-thread read bandwidth), when it is built:
#   cargo build --release -p voxtok-models --example mimi_stream
#
#   tools/bench/mimi.sh [SECONDS] [THREADS] [CODEBOOKS]   (default 5 s, 2 threads, 8 codebooks)
set -euo pipefail
cd "$(dirname "$0")/../.."
SECONDS_AUDIO=${1:-5}
THREADS=${2:-2}
K=${3:-8}
PYTHON=${PYTHON:-/work/venv/bin/python}
VOXTOK=${VOXTOK:-target/release/voxtok}
[ -x "$VOXTOK" ] || VOXTOK=target/debug/voxtok
OUT=bench-out/mimi
mkdir -p "$OUT"
export OMP_NUM_THREADS=$THREADS RAYON_NUM_THREADS=$THREADS
"$PYTHON" tools/bench/codec_mimi.py --out "$OUT" --seconds "$SECONDS_AUDIO" --threads "$THREADS" --codebooks "$K"
"$VOXTOK" -q bench codec --dataset "$OUT/audio_24k.wav" --codec mimi --model "$OUT/mimi" \
    --codebooks "$K" --repeat 2 --json "$OUT/voxtok.json"
STREAM_MS=${STREAM_MS:-80 160 240 320}
for MS in $STREAM_MS; do
    RAYON_NUM_THREADS=1 "$VOXTOK" -q bench codec --dataset "$OUT/audio_24k.wav" --codec mimi --model "$OUT/mimi" \
        --codebooks "$K" --repeat 1 --stream-chunk-ms "$MS" --json "$OUT/voxtok_stream_1thread_${MS}ms.json" | tail -n 2
done
"$PYTHON" - "$OUT" $STREAM_MS <<'PY'
import json, sys
out, chunks = sys.argv[1], sys.argv[2:]
t = json.load(open(f"{out}/transformers.json"))["mimi"]
v = json.load(open(f"{out}/voxtok.json"))
r = v["rows"][0]
streams = [json.load(open(f"{out}/voxtok_stream_1thread_{ms}ms.json")) for ms in chunks]
s = streams[0]["streaming"][0]
table = "\n".join([
    "| codec | codebooks | voxtok encode xRT | transformers encode xRT | ratio | voxtok decode xRT | transformers decode xRT | ratio | voxtok peak RSS MiB | streaming encode xRT (1 thread) | identical |",
    "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|",
    f"| mimi | {r['codebooks']} | {r['encode_xrt']:.1f} | {t['encode_xrt']:.1f} | {r['encode_xrt']/t['encode_xrt']:.2f}x "
    f"| {r['decode_xrt']:.1f} | {t['decode_xrt']:.1f} | {r['decode_xrt']/t['decode_xrt']:.2f}x | {v['peak_rss_mib']:.0f} "
    f"| {s['encode_xrt']:.1f} | {s['identical_to_whole_file']} |",
    "",
    "| chunk ms | streaming encode xRT (1 thread) | whole-file encode xRT (1 thread, same process) | ratio | identical |",
    "|---:|---:|---:|---:|---|"] + [
    f"| {st['streaming'][0]['chunk_ms']:.0f} | {st['streaming'][0]['encode_xrt']:.2f} | {st['rows'][0]['encode_xrt']:.2f} "
    f"| {st['streaming'][0]['encode_xrt'] / st['rows'][0]['encode_xrt']:.2f} | {st['streaming'][0]['identical_to_whole_file']} |"
    for st in streams])
print(table)
open(f"{out}/summary.md", "w").write(table + "\n")
PY
SWEEP=${MIMI_STREAM:-target/release/examples/mimi_stream}
if [ -x "$SWEEP" ]; then
    RAYON_NUM_THREADS=1 "$SWEEP" "$OUT/mimi" "$SECONDS_AUDIO" "$K" "$(echo $STREAM_MS | tr ' ' ,)" 3 \
        | tee "$OUT/stream_sweep.md"
else
    echo "(one-process sweep skipped: cargo build --release -p voxtok-models --example mimi_stream)"
fi
