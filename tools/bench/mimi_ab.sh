#!/usr/bin/env bash
# Same-binary A/B of one Mimi CPU path toggle: runs models/examples/mimi_stream
# alternately with $VAR=$A (old path, default 0) and $VAR=$B (new path, default
# 1), $PAIRS pairs, and
# prints each run plus the medians and the ratio new/old, with the load average
# before and after. Figures: whole-file encode and decode x real time (CPU time,
# $THREADS threads) and streaming encode x real time (CPU time) per chunk size.
#   cargo build --release -p voxtok-models --example mimi_stream
#   VAR=VOXTOK_MIMI_FUSED THREADS=1 tools/bench/mimi_ab.sh            # fused streaming step
#   VAR=VOXTOK_MIMI_PIECED_DECODE THREADS=2 CHUNKS=80 tools/bench/mimi_ab.sh
#   A=stream B=1 THREADS=2 CHUNKS=80 tools/bench/mimi_ab.sh            # fused whole files too
#   VAR=- A="VOXTOK_MIMI_ROWPAR=0 VOXTOK_MIMI_ATTN=old VOXTOK_MIMI_PIECE=24000" B="X=1" \
#     THREADS=2 tools/bench/mimi_ab.sh                                   # several toggles at once
# Needs bench-out/mimi/mimi (made by tools/bench/mimi.sh).
set -euo pipefail
cd "$(dirname "$0")/../.."
VAR=${VAR:-VOXTOK_MIMI_FUSED}
A=${A:-0}
B=${B:-1}
PAIRS=${PAIRS:-3}
THREADS=${THREADS:-1}
CHUNKS=${CHUNKS:-80,320}
SECONDS_AUDIO=${SECONDS_AUDIO:-10}
K=${K:-8}
BIN=${MIMI_STREAM:-target/release/examples/mimi_stream}
MODEL=${MODEL:-bench-out/mimi/mimi}
LOG=$(mktemp)
echo "load before: $(cat /proc/loadavg)"
for i in $(seq "$PAIRS"); do
    for v in "$A" "$B"; do
        echo "== pair $i $VAR=$v $([ "$v" = "$A" ] && echo old || echo new)" | tee -a "$LOG"
        if [ "$VAR" = "-" ]; then set -- $v; else set -- "$VAR=$v"; fi
        env "$@" RAYON_NUM_THREADS="$THREADS" "$BIN" "$MODEL" "$SECONDS_AUDIO" "$K" "$CHUNKS" 2 \
            | grep -E '^whole-file|^\| [0-9]' | tee -a "$LOG"
    done
done
echo "load after: $(cat /proc/loadavg)"
PYTHON=${PYTHON:-/work/venv/bin/python}
[ -x "$PYTHON" ] || PYTHON=python3
"$PYTHON" - "$LOG" "$VAR" "$A" "$B" <<'PY'
import re, statistics, sys
log, var, a_val, b_val = sys.argv[1:5]
runs = {"old": {}, "new": {}}
cur = None
for line in open(log):
    m = re.match(r"== pair \d+ .* (old|new)$", line)
    if m:
        cur = runs[m.group(1)]
        continue
    m = re.match(r"whole-file encode: .*?, ([\d.]+) by CPU time; decode: .*?, ([\d.]+) by CPU time", line)
    if m:
        cur.setdefault("whole-file encode", []).append(float(m.group(1)))
        cur.setdefault("whole-file decode", []).append(float(m.group(2)))
        continue
    cells = [c.strip() for c in line.strip().strip("|").split("|")]
    if len(cells) > 2 and cells[0].isdigit():
        cur.setdefault(f"stream {cells[0]} ms", []).append(float(cells[1]))
print(f"\n| figure (x real time, CPU time) | {var}={a_val} median | {var}={b_val} median | new/old |")
print("|---|---:|---:|---:|")
for key in runs["old"]:
    a, b = statistics.median(runs["old"][key]), statistics.median(runs["new"].get(key, [float("nan")]))
    print(f"| {key} | {a:.2f} | {b:.2f} | {b / a:.2f} |")
PY
rm -f "$LOG"
