#!/usr/bin/env bash
# Same-run A/B of voxtok's EnCodec CPU path: an old binary vs a new one (or the
# same binary with env toggles), alternating in one script, on the model and
# audio that tools/bench/codec.sh wrote (run it first). Prints each run's
# encode/decode xRT, the new/old ratio per pair, the medians and the load.
#
#   OLD=/tmp/encodec-old-voxtok NEW=target/release/voxtok tools/bench/encodec_ab.sh [PAIRS] [THREADS]
#   NEW_ENV="VOXTOK_LSTM_PIPELINE=0" ...   (env for the new runs only)
#
# Toggles of the new path (all default on): VOXTOK_SEANET_FUSE (fused residual
# blocks, ELU while padding, polyphase ConvT), VOXTOK_LSTM_FUSED,
# VOXTOK_LSTM_PIPELINE, VOXTOK_RVQ_CPU, VOXTOK_MALLOC_TUNE; =0 turns one off.
set -euo pipefail
cd "$(dirname "$0")/../.."
PAIRS=${1:-3}
THREADS=${2:-2}
OLD=${OLD:-/tmp/encodec-old-voxtok}
NEW=${NEW:-target/release/voxtok}
OUT=bench-out/codec
export RAYON_NUM_THREADS=$THREADS OMP_NUM_THREADS=$THREADS
echo "load start: $(cut -d' ' -f1-3 /proc/loadavg)"
for p in $(seq "$PAIRS"); do
  for side in old new; do
    if [ "$side" = old ]; then bin=$OLD; envs=""; else bin=$NEW; envs=${NEW_ENV:-}; fi
    env $envs "$bin" -q bench codec --dataset "$OUT/audio_24k.wav" --codec encodec --model "$OUT/encodec" \
      --codebooks 8 --repeat 2 --json "$OUT/ab_encodec_$side.json" > /dev/null
  done
  python3 - "$OUT" "$p" <<'PY'
import json, sys
out, p = sys.argv[1:3]
o = json.load(open(f"{out}/ab_encodec_old.json"))["rows"][0]
n = json.load(open(f"{out}/ab_encodec_new.json"))["rows"][0]
print(f"pair {p}: old {o['encode_xrt']:.2f}/{o['decode_xrt']:.2f} new {n['encode_xrt']:.2f}/{n['decode_xrt']:.2f} xRT "
      f"ratio encode {n['encode_xrt']/o['encode_xrt']:.2f} decode {n['decode_xrt']/o['decode_xrt']:.2f}")
PY
done | tee /tmp/encodec_ab_pairs.txt
python3 - <<'PY'
import re, statistics
e, d = [], []
for line in open("/tmp/encodec_ab_pairs.txt"):
    m = re.search(r"ratio encode ([\d.]+) decode ([\d.]+)", line)
    if m:
        e.append(float(m.group(1))); d.append(float(m.group(2)))
print(f"median new/old: encode {statistics.median(e):.2f}x, decode {statistics.median(d):.2f}x over {len(e)} pairs")
PY
echo "load end: $(cut -d' ' -f1-3 /proc/loadavg)"
