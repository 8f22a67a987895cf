#!/usr/bin/env bash
# Installs the agent's published writer code for the tests, once (npm's cache makes a
# reinstall take seconds): @elizaos/core, @elizaos/prompts (the templates milady_lab vendors)
# and PGlite from package-lock.json, and the
# @elizaos/agent package itself unpacked without its ~50 runtime plugins (the trajectory
# writer needs none of them; see shim.mjs for the three names it borrows).
set -euo pipefail
cd "$(dirname "$0")"
AGENT=2.0.0-beta.2
stamp=node_modules/.milady-lab-$AGENT-$(sha256sum package-lock.json | cut -c1-12)
[ -f "$stamp" ] && exit 0
command -v npm >/dev/null || { echo "the agent kit needs Node 20+ and npm" >&2; exit 1; }
npm ci --ignore-scripts --no-audit --no-fund --loglevel=error
tmp=$(mktemp -d)
(cd "$tmp" && npm pack -q "@elizaos/agent@$AGENT" >/dev/null)
mkdir -p node_modules/@elizaos/agent
tar xzf "$tmp"/elizaos-agent-*.tgz -C node_modules/@elizaos/agent --strip-components=1
rm -rf "$tmp"
touch "$stamp"
