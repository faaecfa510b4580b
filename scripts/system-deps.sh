#!/usr/bin/env bash
# The Debian programs the test suite drives as a user meets them: Chromium (browser tests, with
# playwright-core's executablePath) and redis-server (the BullMQ job queue). Installs whichever is
# missing (`apt-get update` once, then only the missing packages); without root or apt-get it
# names the packages and stops, so `npm test` never fails later with a missing binary.
set -euo pipefail
need=()
command -v chromium >/dev/null 2>&1 || need+=(chromium)
command -v redis-server >/dev/null 2>&1 || need+=(redis-server)
[ "${#need[@]}" -eq 0 ] && exit 0
if [ "$(id -u)" -eq 0 ] && command -v apt-get >/dev/null 2>&1; then
  export DEBIAN_FRONTEND=noninteractive
  apt-get update
  apt-get install -y --no-install-recommends "${need[@]}"
else
  echo "the test suite needs Debian's ${need[*]}: sudo apt-get install -y --no-install-recommends ${need[*]}" >&2
  exit 1
fi
