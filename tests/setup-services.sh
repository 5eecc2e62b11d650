#!/usr/bin/env bash
# Installs Debian's redis-server and PostgreSQL server binaries for the Teams tests when they are
# missing (the tests start their own servers on free ports, in temporary directories; nothing
# is started or enabled here). Idempotent. Needs root or sudo; otherwise says what to run.
set -euo pipefail
source "$(dirname "$0")/apt.sh"
missing=()
command -v redis-server >/dev/null 2>&1 || missing+=(redis-server)
if ! ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 && ! command -v initdb >/dev/null 2>&1; then
    missing+=(postgresql)
fi
if [ ${#missing[@]} -eq 0 ]; then
    exit 0
fi
apt_install "${missing[@]}"
command -v redis-server >/dev/null 2>&1 && echo "installed: ${missing[*]}" || true
