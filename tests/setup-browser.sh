#!/usr/bin/env bash
# Installs Debian's chromium for the browser test when it is missing (never `playwright install`:
# Playwright drives the system chromium). Needs root or sudo; otherwise says what to run.
set -euo pipefail
if [ -x /usr/bin/chromium ]; then
    exit 0
fi
if [ "$(id -u)" -eq 0 ]; then
    SUDO=""
elif command -v sudo >/dev/null 2>&1; then
    SUDO="sudo"
else
    echo "chromium missing: install it with 'apt-get install chromium' (the browser test skips)" >&2
    exit 0
fi
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -q >/dev/null
$SUDO apt-get install -y -q --no-install-recommends chromium >/dev/null
echo "installed $(/usr/bin/chromium --version)"
