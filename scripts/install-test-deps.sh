#!/usr/bin/env bash
# Installs what the test suite needs beyond the Rust toolchain: Debian's sox
# and espeak-ng (some end-to-end tests make audio on the fly). Idempotent;
# installs only what is missing. Fixtures themselves are committed.
set -euo pipefail
need=()
command -v sox >/dev/null 2>&1 || need+=(sox libsox-fmt-all)
command -v espeak-ng >/dev/null 2>&1 || need+=(espeak-ng)
if [ ${#need[@]} -gt 0 ]; then
  if [ "$(id -u)" -ne 0 ]; then
    echo "install-test-deps: missing ${need[*]}; run as root or: sudo apt-get install ${need[*]}" >&2
    exit 1
  fi
  echo "install-test-deps: installing ${need[*]}" >&2
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need[@]}" >/dev/null
fi
