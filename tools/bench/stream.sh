#!/usr/bin/env bash
# voxtok stream benchmark: end-of-speech -> final-line latency (median, p90),
# the streaming loop's real-time factor and lag, and the cost of one decode
# (wall and CPU seconds), replaying real speech at 1x real time through
# `voxtok stream --input FILE --realtime --stats`.
#
# Input: N prompts from data/speech/asterisk (scripts/setup.sh), 1.5-6 s
# each, resampled to 16 kHz, leading/trailing silence trimmed (sox silence,
# 0.3 % of full scale) so the true end of each utterance is known, and
# separated by 1.5 s of digital silence. Model: data/models/whisper-tiny.en.
#
#   tools/bench/stream.sh [N=12] [extra stream options...]
#   VOXTOK_BIN=target/release/voxtok tools/bench/stream.sh   (skip the build)
#
# Latencies reported:
#  - true: per utterance, when its last final line was printed (the line's
#    `at_s`, wall seconds since the replay started) minus the utterance's
#    true end in the input (from the trimmed parts' lengths);
#  - word-end: voxtok's own `latency_s` per final line (arrival of the chunk
#    holding the line's last word end, by Whisper's timestamps -> printed).
# Reference in the same run: the offline `voxtok transcribe` of the same
# input (CPU seconds per 30 s window, the unit cost every stream decode pays).
#
# whisper_streaming (Machacek et al. 2023) reports 3.3 s average latency for
# large-v2 on an NVIDIA A40 GPU with a 1 s minimum chunk, per word
# (word end -> confirmation) on unsegmented long-form speech.
set -euo pipefail
cd "$(dirname "$0")/../.."
N=${1:-12}
MODEL=${MODEL:-data/models/whisper-tiny.en}
OUT=${OUT:-bench-out/stream}
NICE=${NICE:-10}
mkdir -p "$OUT"
if [ -z "${VOXTOK_BIN:-}" ]; then
  nice -n 10 cargo build --release -p voxtok >&2
  VOXTOK_BIN=target/release/voxtok
fi
[ -d "$MODEL" ] || { echo "no $MODEL: run scripts/setup.sh" >&2; exit 2; }

parts=()
: > "$OUT/parts.txt"
sox -n -r 16000 -c 1 -b 16 "$OUT/gap.wav" trim 0 1.5
for f in $(ls data/speech/asterisk/*.wav | sort); do
  d=$(soxi -D "$f")
  if awk -v d="$d" 'BEGIN{exit !(d >= 1.5 && d <= 6)}'; then
    i=$(( ${#parts[@]} / 2 ))
    sox "$f" -r 16000 -c 1 -b 16 "$OUT/part$i.wav" \
      silence 1 0.01 0.3% reverse silence 1 0.01 0.3% reverse
    echo "$(soxi -s "$OUT/part$i.wav") $(basename "$f")" >> "$OUT/parts.txt"
    parts+=("$OUT/part$i.wav" "$OUT/gap.wav")
    [ $(( ${#parts[@]} / 2 )) -ge "$N" ] && break
  fi
done
sox "$OUT/gap.wav" "${parts[@]}" "$OUT/input.wav"
echo "input: $N utterances, $(soxi -D "$OUT/input.wav") s; load average: $(cut -d' ' -f1-3 /proc/loadavg); $(nproc) CPUs" >&2

nice -n "$NICE" "$VOXTOK_BIN" stream --input "$OUT/input.wav" --realtime --model "$MODEL" \
  --format jsonl --stats "${@:2}" > "$OUT/stream.jsonl" 2> "$OUT/stream.err"
tail -1 "$OUT/stream.err" >&2

# Reference: offline transcription of the same input (same model), CPU time.
/usr/bin/time -f '%U %S %e %M' -o "$OUT/offline.time" \
  nice -n "$NICE" "$VOXTOK_BIN" transcribe "$OUT/input.wav" --model "$MODEL" -q > "$OUT/offline.txt"

python3 - "$OUT" <<'EOF'
import json, math, statistics, sys
out = sys.argv[1]
rate, gap = 16000, 1.5
utts, t = [], gap
for line in open(f"{out}/parts.txt"):
    n, name = line.split()
    d = int(n) / rate
    utts.append((t, t + d, name))
    t += d + gap
lines = [json.loads(l) for l in open(f"{out}/stream.jsonl")]
stats = [x for x in lines if x["type"] == "stats"][0]
finals = [x for x in lines if x["type"] == "final"]
def q(v, p):  # nearest rank
    v = sorted(v)
    return v[max(0, math.ceil(p * len(v)) - 1)] if v else float("nan")
print("utterance          true end  last final at  true latency  reason      text")
true_lat = []
for b, e, name in utts:
    mine = [f for f in finals if b - gap / 2 <= f["end_s"] <= e + gap / 2]
    if not mine:
        print(f"{name:18} {e:8.2f}  (no final)")
        continue
    last = mine[-1]
    lat = last["at_s"] - e
    true_lat.append(lat)
    text = " ".join(f["text"] for f in mine)
    print(f"{name:18} {e:8.2f}  {last['at_s']:13.2f}  {lat:12.2f}  {last['reason']:10}  {text}")
word_lat = [f["latency_s"] for f in finals if f["latency_s"] is not None]
u, s, e, m = open(f"{out}/offline.time").read().split()
off_cpu = float(u) + float(s)
windows = max(1, math.ceil(stats["audio_s"] / 30))
per_win = off_cpu / windows
dec_cpu = stats["decode_cpu_median_s"]
print()
print(f"true end-of-speech -> final latency: median {statistics.median(true_lat):.2f} s, p90 {q(true_lat, 0.9):.2f} s ({len(true_lat)} of {len(utts)} utterances)")
print(f"word-end -> final latency (voxtok --stats): median {stats['latency_median_s']} s, p90 {stats['latency_p90_s']} s ({len(word_lat)} final lines)")
print(f"loop: RTF {stats['rtf']} wall, {stats['rtf_cpu']} CPU; most audio waiting {stats['max_lag_s']} s; "
      f"{stats['decodes']} decodes ({stats['pause_decodes']} at pauses; {stats['speech_end_decodes']} of {stats['speech_end_finals']} speech-end finals needed one)")
print(f"per decode: median {stats['decode_wall_median_s']} s wall, {dec_cpu} s CPU")
print(f"reference (same run): offline transcribe {off_cpu:.2f} CPU-s for {windows} x 30 s windows incl. model load = {per_win:.2f} CPU-s/window; "
      f"stream decode / offline window = {dec_cpu / per_win:.2f}")
# On 2 idle cores a decode takes between CPU/2 (perfect scaling) and CPU
# (one core) wall seconds. The pause decode starts --speech-pad-ms (0.1 s)
# after the speech ends and the final is printed at --min-silence-ms (0.5 s)
# or when that decode is done, whichever is later, plus up to one source
# chunk (0.1 s) and one VAD window (0.032 s).
for d in (dec_cpu / 2, dec_cpu):
    est = max(0.5, 0.1 + d) + 0.1 + 0.032
    print(f"estimate on 2 idle cores with a {d:.2f} s decode: latency <= {est:.2f} s without a step decode in flight, "
          f"<= {est + d:.2f} s with one; decode share of real time {stats['decodes'] * d / stats['audio_s']:.2f}")
print(f"offline transcript: {open(f'{out}/offline.txt').read().strip()}")
EOF
