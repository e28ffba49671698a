#!/usr/bin/env bash
# Real speech, real weights, two engines, one script run (issue 9):
# voxtok and faster-whisper transcribe the same Asterisk prompts with the
# same Whisper checkpoint (CTranslate2 files from scripts/setup.sh), the same
# beam size and the same thread count, then `voxtok bench asr --score` prints
# WER / x real time / peak memory side by side.
#
# usage: tools/bench/asr_real.sh [N_FILES=60] [MODEL=data/models/whisper-tiny.en] [PYTHON=python3]
# needs: scripts/setup.sh done; `pip install faster-whisper soundfile scipy` for PYTHON.
set -euo pipefail
cd "$(dirname "$0")/../.."
n=${1:-60}
model=${2:-data/models/whisper-tiny.en}
py=${3:-python3}
threads=${THREADS:-2}
out=${OUT:-bench-out/asr-real}
mkdir -p "$out"
voxtok=target/release/voxtok
[ -x "$voxtok" ] || cargo build --release --locked -p voxtok
export RAYON_NUM_THREADS=$threads OMP_NUM_THREADS=$threads
for b in 1 8; do
  "$voxtok" bench asr --dataset asterisk --limit "$n" --model "$model" --batch-size "$b" --out-dir "$out" -q >/dev/null
done
"$py" tools/bench/asr_faster_whisper.py --model "$model" --files-from "$out/files.txt" --threads "$threads" \
  --compute-type float32 --batch-size 1 -o "$out/fw-f32-b1.jsonl"
"$py" tools/bench/asr_faster_whisper.py --model "$model" --files-from "$out/files.txt" --threads "$threads" \
  --compute-type int8 --batch-size 8 -o "$out/fw-int8-b8.jsonl"
"$voxtok" bench asr --dataset asterisk --limit "$n" --json "$out/table.json" \
  --score "$out/voxtok-b1.jsonl" "$out/voxtok-b8.jsonl" "$out/fw-f32-b1.jsonl" "$out/fw-int8-b8.jsonl" | tee "$out/table.md"
