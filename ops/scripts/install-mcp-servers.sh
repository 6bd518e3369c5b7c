#!/usr/bin/env bash
# Installs the MCP servers the bridge's tests run over stdio, pinned by
# ops/bridge/servers/package-lock.json (@modelcontextprotocol/server-everything),
# into .sophia/mcp-servers/<hash of the lock file>, with `npm ci`, unless that
# directory is already complete. Prints the directory; server-everything is
# then <dir>/node_modules/.bin/mcp-server-everything (run with Node.js 18+).
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
src="$root/ops/bridge/servers"
hash="$(sha256sum "$src/package-lock.json" | cut -c1-16)"
dir="$root/.sophia/mcp-servers/$hash"

installed() {
  [ -f "$dir/.installed" ] && [ -x "$dir/node_modules/.bin/mcp-server-everything" ]
}

if installed; then
  echo "$dir"
  exit 0
fi
# shellcheck source=ops/scripts/need-npm.sh
. "$root/ops/scripts/need-npm.sh"
need_npm install-mcp-servers
mkdir -p "$dir"
cp "$src/package.json" "$src/package-lock.json" "$dir/"
echo "install-mcp-servers: npm ci into $dir" >&2
(cd "$dir" && npm ci --no-audit --no-fund --loglevel=error >&2)
touch "$dir/.installed"
echo "$dir"
