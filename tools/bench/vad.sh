#!/usr/bin/env bash
# VAD throughput on one core: voxtok's Silero (candle) and energy VAD vs
# silero-vad's ONNX model in onnxruntime (1 thread), same audio, same run.
# usage: tools/bench/vad.sh [AUDIO.wav (16 kHz mono)] [REPS]
# Needs target/release/voxtok, /work/venv-style python with onnxruntime
# (PYTHON=...), and the silero-vad 6.2.3 wheel (WHEEL=..., default data/downloads/).
set -euo pipefail
root=$(cd "$(dirname "$0")/../.." && pwd)
py=${PYTHON:-python3}
whl=${WHEEL:-$(ls "$root"/data/downloads/silero_vad-6.2.3-*.whl 2>/dev/null | head -n1)}
[ -n "$whl" ] || { echo "vad.sh: silero-vad wheel not found; run scripts/setup.sh or set WHEEL" >&2; exit 2; }
reps=${2:-5}
audio=${1:-}
if [ -z "$audio" ]; then # 60 s: the speech/silence fixture repeated
  audio=$(mktemp --suffix .wav)
  sox $(for _ in 1 2 3 4 5 6; do echo "$root/tests/fixtures/vad/vad_speech_gap.wav"; done) "$audio"
fi
bin="$root/target/release/voxtok"
export RAYON_NUM_THREADS=1 OMP_NUM_THREADS=1 MKL_NUM_THREADS=1
for model in "" "--model-file $root/tests/fixtures/vad/silero_vad_v6_16k.safetensors"; do
  /usr/bin/time -f '{"peak_rss_kb": %M}' taskset -c 0 "$bin" vad -q $model --bench "$reps" "$audio" >/dev/null
done
/usr/bin/time -f '{"peak_rss_kb": %M}' taskset -c 0 "$py" "$root/tools/bench/vad_onnx.py" "$whl" "$audio" "$reps"
