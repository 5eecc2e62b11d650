#!/usr/bin/env bash
# Installs the agent CLIs that tests/test_agents_e2e.py drives through the gateway, Claude Code
# and Codex CLI, into .agents/ (git-ignored) at the versions tests/agents/package-lock.json pins:
# `npm ci` into a project-local prefix, nothing global, no sudo. Both packages ship their native
# binaries inside npm packages, so nothing but the npm registry is reached. Without npm it says so
# and the agent tests skip. Run again, it does nothing unless the lockfile changed.
set -euo pipefail
cd "$(dirname "$0")/.."
lock=tests/agents/package-lock.json
dir=.agents
if ! command -v npm >/dev/null 2>&1; then
    echo "npm missing: install Node.js 20+ and npm to run the agent tests (they skip)" >&2
    exit 0
fi
if [ -x "$dir/node_modules/.bin/claude" ] && [ -x "$dir/node_modules/.bin/codex" ] \
    && cmp -s "$lock" "$dir/package-lock.json"; then
    exit 0
fi
mkdir -p "$dir"
cp tests/agents/package.json "$lock" "$dir/"
# Claude Code declares node >= 22 but runs its own native binary, not node: the engine
# warning is noise on node 20.
npm ci --prefix "$dir" --no-audit --no-fund --loglevel=error --engine-strict=false >/dev/null
echo "installed $("$dir/node_modules/.bin/claude" --version) and $("$dir/node_modules/.bin/codex" --version 2>/dev/null)"
