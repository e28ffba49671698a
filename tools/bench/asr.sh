#!/usr/bin/env bash
# ASR speed, voxtok vs transformers in the same run, on the same random-weight
# models (whisper-tiny and whisper-base dimensions) and the same 30 s input:
# features + encoder + exactly 50 greedy tokens; then voxtok batch 8 vs 1.
# Usage: [VOXTOK_BIN=...] tools/bench/asr.sh [THREADS]   (writes bench-out/asr_*.json and a table)
set -euo pipefail
cd "$(dirname "$0")/../.."
THREADS=${1:-$(nproc)}
PY=${PY:-/work/venv/bin/python}
OUT=bench-out
mkdir -p "$OUT"
export RAYON_NUM_THREADS=$THREADS OMP_NUM_THREADS=$THREADS
# VOXTOK_BIN=path/to/voxtok skips the build (e.g. a binary built earlier).
if [ -z "${VOXTOK_BIN:-}" ]; then
    cargo build --release -p voxtok
    BIN=target/release/voxtok
else
    BIN=$VOXTOK_BIN
fi
for dims in tiny base; do
    M=$OUT/models/whisper-$dims-random
    "$PY" tools/bench/asr_transformers.py --dims $dims --threads "$THREADS" --tokens 50 --json "$OUT/asr_tf_$dims.json"
    "$BIN" -q bench asr "$OUT/asr_30s.wav" --model "$M" --exact-tokens 50 --json "$OUT/asr_vx_$dims.json"
    "$BIN" -q bench asr "$OUT/asr_30s.wav" --model "$M" --exact-tokens 50 -n 8 --batch-size 1 --repeat 1 --json "$OUT/asr_vx_${dims}_n8_b1.json"
    "$BIN" -q bench asr "$OUT/asr_30s.wav" --model "$M" --exact-tokens 50 -n 8 --batch-size 8 --repeat 1 --json "$OUT/asr_vx_${dims}_n8_b8.json"
done
"$PY" - "$OUT" "$THREADS" <<'PY'
import json, sys
out, threads = sys.argv[1], sys.argv[2]
r = lambda n: json.load(open(f"{out}/{n}.json"))
print(f"\n| model | engine | files x batch | x real time | tokens/s | peak MiB | vs transformers |  ({threads} threads)")
print("|---|---|---|---|---|---|---|")
for d in ("tiny", "base"):
    tf = r(f"asr_tf_{d}")
    rows = [("transformers", tf), ("voxtok", r(f"asr_vx_{d}")),
            ("voxtok", r(f"asr_vx_{d}_n8_b1")), ("voxtok", r(f"asr_vx_{d}_n8_b8"))]
    for eng, x in rows:
        print(f"| whisper-{d} (random) | {eng} | {x['files']} x {x['batch_size']} | {x['x_real_time']:.2f} | "
              f"{x['tokens_per_s']:.1f} | {x['peak_rss_mib']:.0f} | {x['x_real_time'] / tf['x_real_time']:.2f}x |")
    b1, b8 = r(f"asr_vx_{d}_n8_b1"), r(f"asr_vx_{d}_n8_b8")
    print(f"| whisper-{d} | voxtok batch 8 / batch 1 throughput | | {b8['x_real_time'] / b1['x_real_time']:.2f}x | | | |")
PY
