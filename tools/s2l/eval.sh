#!/usr/bin/env bash
# Reproduces the spoken-maths evaluation table of the README: regenerates the
# held-out synthetic test split (same seed as training: templates and numbers
# not seen in training) and scores the shipped model assets/s2l-small on it,
# end to end (`e2e`, the <|latex|> task) and transcript -> rules (`asr+rules`).
#
# usage: tools/s2l/eval.sh [OUT_DIR]   (default bench-out/s2l-small)
# needs: cargo (builds target/release/voxtok if stale), espeak-ng, sox, and python3
# with numpy, soundfile, pyarrow (tools/fixtures/setup.sh makes such a venv).
set -euo pipefail
root=$(cd "$(dirname "$0")/../.." && pwd)
out=${1:-bench-out/s2l-small}
py=${PYTHON:-python3}
[ -x "$root/.venv-fixtures/bin/python" ] && py=${PYTHON:-$root/.venv-fixtures/bin/python}
voxtok="$root/target/release/voxtok"
(cd "$root" && cargo build --release --locked -p voxtok) || { echo "eval: the release build failed" >&2; exit 2; }
test_dir="$root/data/s2l-test"
if [ ! -f "$test_dir/data/test-00000-of-00001.parquet" ]; then
  "$py" "$root/tools/s2l/make_corpus.py" --out "$test_dir" --train 0 --test 400 --voxtok "$voxtok"
fi
"$voxtok" bench s2l --dataset "$test_dir" --split test --model "$root/assets/s2l-small" --out-dir "$out"
