#!/usr/bin/env bash
# Codec throughput against transformers over several interleaved rounds: each
# round times transformers (on the models and audio that tools/bench/codec.sh
# saved, read back from bench-out/codec) and then voxtok, so both sides see the
# same machine state. transformers' own speed on a shared VM swings by ~1.5x
# between runs minutes apart; one run's ratio is not a figure to quote, the
# median over rounds is.
#
#   tools/bench/codec.sh 10 2                     # once: builds the models and audio
#   tools/bench/codec_rounds.sh [ROUNDS] [THREADS] [CODECS]   (default 5, 2, encodec)
#
# CODECS: comma-separated subset of encodec,dac. Prints every round and the
# medians; writes bench-out/codec/rounds.md.
set -euo pipefail
cd "$(dirname "$0")/../.."
ROUNDS=${1:-5}
THREADS=${2:-2}
CODECS=${3:-encodec}
PYTHON=${PYTHON:-/work/venv/bin/python}
VOXTOK=${VOXTOK:-target/release/voxtok}
OUT=${CODEC_OUT:-bench-out/codec}  # CODEC_OUT: another folder with the same layout (e.g. a 5 s cut)
[ -d "$OUT/encodec" ] || { echo "run tools/bench/codec.sh first (no $OUT/encodec)" >&2; exit 2; }
mkdir -p "$OUT/rounds"
rm -f "$OUT"/rounds/*.json
export OMP_NUM_THREADS=$THREADS RAYON_NUM_THREADS=$THREADS
LOAD_START=$(cut -d' ' -f1-3 /proc/loadavg)
for r in $(seq "$ROUNDS"); do
  "$PYTHON" tools/bench/codec_transformers.py --out "$OUT" --threads "$THREADS" --time-only \
      --codecs "$CODECS" --json "$OUT/rounds/transformers_$r.json" > /dev/null
  for c in ${CODECS//,/ }; do
    case $c in
      encodec) wav=audio_24k.wav; k=8 ;;
      dac) wav=audio_16k.wav; k=12 ;;
      *) echo "unknown codec $c" >&2; exit 2 ;;
    esac
    "$VOXTOK" -q bench codec --dataset "$OUT/$wav" --codec "$c" --model "$OUT/$c" \
        --codebooks "$k" --repeat 2 --json "$OUT/rounds/voxtok_${c}_$r.json" > /dev/null
  done
  echo "round $r done (load $(cut -d' ' -f1 /proc/loadavg))"
done
"$PYTHON" - "$OUT" "$ROUNDS" "$CODECS" "$LOAD_START" "$(cut -d' ' -f1-3 /proc/loadavg)" "$THREADS" <<'PY'
import json, statistics as st, sys
out, rounds, codecs, load0, load1, threads = sys.argv[1:7]
rounds = int(rounds)
lines = []
for c in codecs.split(","):
    rows = []
    for r in range(1, rounds + 1):
        t = json.load(open(f"{out}/rounds/transformers_{r}.json"))[c]
        v = json.load(open(f"{out}/rounds/voxtok_{c}_{r}.json"))["rows"][0]
        rows.append((v["encode_xrt"], t["encode_xrt"], v["decode_xrt"], t["decode_xrt"]))
    lines += [f"### {c}: {rounds} rounds, {threads} threads, {t['seconds']:.0f} s of audio", "",
              "| round | voxtok encode xRT | transformers encode xRT | ratio | voxtok decode xRT | transformers decode xRT | ratio |",
              "|---:|---:|---:|---:|---:|---:|---:|"]
    for i, (ve, te, vd, td) in enumerate(rows, 1):
        lines.append(f"| {i} | {ve:.1f} | {te:.1f} | {ve/te:.2f}x | {vd:.1f} | {td:.1f} | {vd/td:.2f}x |")
    med = lambda i: st.median(x[i] for x in rows)
    re = [x[0] / x[1] for x in rows]
    rd = [x[2] / x[3] for x in rows]
    lines.append(f"| **median** | {med(0):.1f} | {med(1):.1f} | **{st.median(re):.2f}x** | {med(2):.1f} | {med(3):.1f} | **{st.median(rd):.2f}x** |")
    lines.append("")
    lines.append(f"ratio of medians: encode {med(0)/med(1):.2f}x, decode {med(2)/med(3):.2f}x; "
                 f"per-round ratio range: encode {min(re):.2f}-{max(re):.2f}x, decode {min(rd):.2f}-{max(rd):.2f}x")
    lines.append("")
lines.append(f"load average (1/5/15 min) at start {load0}, at end {load1}")
table = "\n".join(lines)
print(table)
open(f"{out}/rounds.md", "w").write(table + "\n")
PY
