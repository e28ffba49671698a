#!/usr/bin/env bash
# Same-run A/B of a DAC CPU toggle: voxtok's DAC encode/decode xRT with an env
# variable at each of several settings, interleaved over REPS rounds, medians
# at the end (the machine is shared: only same-run, interleaved pairs compare).
#
#   tools/bench/dac_env_ab.sh DIR VAR "V1 V2 ..." [REPS] [THREADS]
#   e.g. tools/bench/dac_env_ab.sh bench-out/codec-dac/s5 VOXTOK_DAC_ENC_WINOGRAD "0 2" 5
#
# DIR holds dac/ (a DacModel directory) and audio_16k.wav. $VOXTOK picks the
# binary (default target/release/voxtok).
set -euo pipefail
cd "$(dirname "$0")/../.."
DIR=$1
VAR=$2
VALUES=$3
REPS=${4:-5}
THREADS=${5:-2}
VOXTOK=${VOXTOK:-target/release/voxtok}
export RAYON_NUM_THREADS=$THREADS OMP_NUM_THREADS=$THREADS
TMP=$(mktemp -d)
trap 'rm -rf "$TMP"' EXIT
echo "load start: $(cut -d' ' -f1-3 /proc/loadavg)"
for rep in $(seq "$REPS"); do
  for v in $VALUES; do
    env "$VAR=$v" "$VOXTOK" -q bench codec --dataset "$DIR/audio_16k.wav" --codec dac \
      --model "$DIR/dac" --codebooks 12 --repeat 2 --json "$TMP/r_${v}_$rep.json" > /dev/null
    python3 -c "import json,sys; r=json.load(open(sys.argv[1]))['rows'][0]; print('%s=%s rep %s: encode %.3f decode %.3f xRT' % (sys.argv[2], sys.argv[3], sys.argv[4], r['encode_xrt'], r['decode_xrt']))" \
      "$TMP/r_${v}_$rep.json" "$VAR" "$v" "$rep"
  done
done
python3 - "$TMP" "$VAR" "$REPS" $VALUES <<'PY'
import json, statistics as st, sys
tmp, var, reps, *vals = sys.argv[1:]
base = None
for v in vals:
    rows = [json.load(open(f"{tmp}/r_{v}_{r}.json"))["rows"][0] for r in range(1, int(reps) + 1)]
    e = st.median(r["encode_xrt"] for r in rows)
    d = st.median(r["decode_xrt"] for r in rows)
    rel = ""
    if base is not None:
        # Median over rounds of the per-round ratio to the first setting.
        re = st.median(r["encode_xrt"] / b["encode_xrt"] for r, b in zip(rows, base))
        rd = st.median(r["decode_xrt"] / b["decode_xrt"] for r, b in zip(rows, base))
        rel = f" (per-round ratio to {var}={vals[0]}: encode {re:.3f}x, decode {rd:.3f}x)"
    base = base or rows
    print(f"median {var}={v}: encode {e:.3f} decode {d:.3f} xRT{rel}")
PY
echo "load end: $(cut -d' ' -f1-3 /proc/loadavg)"
