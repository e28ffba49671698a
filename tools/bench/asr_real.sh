#!/usr/bin/env bash
# Real speech, real weights, two engines, one script run (issue 9):
# voxtok and faster-whisper transcribe the same Asterisk prompts with the
# same Whisper checkpoint (CTranslate2 files from scripts/setup.sh), the same
# decoding settings (greedy/beam, no timestamps, English, one temperature,
# faster-whisper's default no-speech / log-prob thresholds) and the same
# thread count, then `voxtok bench asr --score` prints WER / x real time /
# peak memory side by side.
#
# Identical inputs: the 8 kHz set is resampled to 16 kHz once, with sox's
# very-high-quality resampler (`rate -v`; voxtok's own resampler gives the
# same passband to -120 dB), into $OUT/asterisk-16k, and both engines read
# those files (neither resamples). faster-whisper's log-mel of a window
# shorter than 30 s is padded like voxtok's (`--mel-padding audio`, see
# asr_faster_whisper.py); a third row runs faster-whisper with its own
# padding (zeros in the log-mel domain, as openai-whisper's transcribe()).
# Per-file differences between voxtok and faster-whisper float32 on the
# same inputs are listed at the end (expected: none).
#
# usage: tools/bench/asr_real.sh [N_FILES=60] [MODEL=data/models/whisper-tiny.en] [PYTHON=python3]
# env:   THREADS=2  OUT=bench-out/asr-real  NATIVE=1 (0: skip the native-padding row)
#        INT8=1 (0: skip the voxtok --dtype int8 batch-8 row, the peer of faster-whisper int8)
# needs: scripts/setup.sh done; sox; `pip install faster-whisper soundfile scipy` for PYTHON.
set -euo pipefail
cd "$(dirname "$0")/../.."
n=${1:-60}
model=${2:-data/models/whisper-tiny.en}
py=${3:-python3}
threads=${THREADS:-2}
out=${OUT:-bench-out/asr-real}
native=${NATIVE:-1}
int8=${INT8:-1}
src=data/speech/asterisk
mkdir -p "$out"
command -v sox >/dev/null || { echo "asr_real: sox is needed (apt-get install sox)" >&2; exit 2; }
[ -f "$src/transcripts.txt" ] || { echo "asr_real: $src missing: run scripts/setup.sh" >&2; exit 2; }

# One 16 kHz copy of the whole set (same stride selection as the original), made once.
set16="$out/asterisk-16k"
if [ ! -f "$set16/transcripts.txt" ]; then
  echo "asr_real: resampling $src to 16 kHz (sox rate -v) into $set16" >&2
  rm -rf "$set16.tmp"
  (cd "$src" && find . -name '*.wav') | while read -r f; do
    mkdir -p "$set16.tmp/$(dirname "$f")"
    sox -V1 "$src/$f" -r 16000 -b 32 -e floating-point "$set16.tmp/$f" rate -v
  done
  cp "$src/transcripts.txt" "$set16.tmp/"
  mv "$set16.tmp" "$set16"
fi

voxtok=target/release/voxtok
[ -x "$voxtok" ] || cargo build --release --locked -p voxtok
export RAYON_NUM_THREADS=$threads OMP_NUM_THREADS=$threads
# Each voxtok run goes right beside its peer, so that a change of machine
# load during the script shifts both sides of a comparison alike.
vx() { "$voxtok" bench asr --dataset "asterisk:$set16" --limit "$n" --model "$model" --out-dir "$out" -q "$@" >/dev/null; }
fw() { "$py" tools/bench/asr_faster_whisper.py --model "$model" --files-from "$out/files.txt" --threads "$threads" "$@"; }
echo "asr_real: load average at start: $(cut -d' ' -f1-3 /proc/loadavg 2>/dev/null)" >&2
vx --batch-size 1
fw --compute-type float32 --batch-size 1 --mel-padding audio -o "$out/fw-f32-b1.jsonl"
vx --batch-size 8
extra=()
if [ "$int8" = 1 ]; then
  vx --batch-size 8 --dtype int8
  extra+=("$out/voxtok-b8-int8.jsonl")
fi
fw --compute-type int8 --batch-size 8 --mel-padding audio -o "$out/fw-int8-b8.jsonl"
echo "asr_real: load average after the timed runs: $(cut -d' ' -f1-3 /proc/loadavg 2>/dev/null)" >&2
runs=("$out/voxtok-b1.jsonl" "$out/voxtok-b8.jsonl" "$out/fw-f32-b1.jsonl" "$out/fw-int8-b8.jsonl")
if [ "$native" = 1 ]; then
  fw --compute-type float32 --batch-size 1 --mel-padding zeros -o "$out/fw-f32-b1-native.jsonl"
  runs+=("$out/fw-f32-b1-native.jsonl")
fi
"$voxtok" bench asr --dataset "asterisk:$set16" --limit "$n" --json "$out/table.json" --score "${runs[@]}" ${extra[@]+"${extra[@]}"} \
  | tee "$out/table.md"

# Per-file differences: voxtok batch 1 against faster-whisper float32 on the same inputs (and its native padding).
"$py" - "${runs[0]}" "${runs[2]}" ${runs[4]:+"${runs[4]}"} <<'EOF' | tee "$out/diff.txt"
import json, sys
def load(f):
    return {j["path"]: j for j in map(json.loads, open(f)) if "path" in j}
names = ["voxtok b1", "fw f32 (voxtok padding)", "fw f32 (own padding)"][: len(sys.argv) - 1]
runs = [load(f) for f in sys.argv[1:]]
for i in range(1, len(runs)):
    diff = [p for p in runs[0] if runs[0][p]["text"] != runs[i].get(p, {}).get("text")]
    print(f"{names[0]} vs {names[i]}: {len(diff)} of {len(runs[0])} files differ")
    for p in diff:
        print(f"  {p}")
        for n, r in ((names[0], runs[0]), (names[i], runs[i])):
            j = r.get(p, {})
            s = " ".join(f"{k}={j[k]:.3f}" for k in ("avg_logprob", "no_speech_prob") if k in j)
            print(f"    {n:24} {j.get('text', '<missing>')!r} {s}")
EOF
