#!/usr/bin/env bash
# Installs Debian's chromium for the browser tests when it is missing (never `playwright install`:
# Playwright drives the system chromium). Needs root or sudo; otherwise says what to run.
set -euo pipefail
source "$(dirname "$0")/apt.sh"
if [ -x /usr/bin/chromium ]; then
    exit 0
fi
apt_install chromium
[ -x /usr/bin/chromium ] && echo "installed $(/usr/bin/chromium --version)" || true
