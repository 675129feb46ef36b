#!/usr/bin/env bash
# Debian's headless Chromium and its driver, for the real-browser test of the rendered book. Idempotent.
set -euo pipefail
if [ -x /usr/bin/chromium ] && [ -x /usr/bin/chromedriver ]; then exit 0; fi
SUDO=""
if [ "$(id -u)" != 0 ]; then
  command -v sudo >/dev/null || { echo "need root (or sudo) to apt-get install chromium chromium-driver" >&2; exit 1; }
  SUDO=sudo
fi
echo "[browser] installing chromium and chromium-driver from Debian"
$SUDO apt-get update -qq
DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq chromium chromium-driver >/dev/null
