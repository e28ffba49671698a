#!/usr/bin/env bash
# Same-run A/B of the DAC CPU decoder's k=7 convs: per-tap GEMMs
# (VOXTOK_DAC_WINOGRAD=0) vs Winograd F(m,7), alternating in one script, on
# the model and audio that tools/bench/codec.sh wrote (run it first).
#
#   tools/bench/dac_winograd_ab.sh [REPEATS] [THREADS]    (env MS="0 2 3": tile sizes)
set -euo pipefail
cd "$(dirname "$0")/../.."
REPS=${1:-2}
THREADS=${2:-2}
VOXTOK=${VOXTOK:-target/release/voxtok}
OUT=bench-out/codec
export RAYON_NUM_THREADS=$THREADS OMP_NUM_THREADS=$THREADS
echo "load start: $(cut -d' ' -f1-3 /proc/loadavg)"
for rep in $(seq "$REPS"); do
  for m in ${MS:-0 2}; do
    VOXTOK_DAC_WINOGRAD=$m "$VOXTOK" -q bench codec --dataset "$OUT/audio_16k.wav" --codec dac \
      --model "$OUT/dac" --codebooks 12 --repeat 2 --json "$OUT/ab_dac_m$m.json" > /dev/null
    python3 -c "import json,sys; r=json.load(open(sys.argv[1]))['rows'][0]; print('m=%s rep=%s encode %.3f decode %.3f xRT' % (sys.argv[2], sys.argv[3], r['encode_xrt'], r['decode_xrt']))" \
      "$OUT/ab_dac_m$m.json" "$m" "$rep"
  done
done
echo "load end: $(cut -d' ' -f1-3 /proc/loadavg)"
