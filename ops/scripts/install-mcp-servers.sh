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
if ! command -v npm >/dev/null && command -v apt-get >/dev/null; then
  # A fresh Debian or Ubuntu has no npm: Debian's Node.js brings it.
  sudo=""
  [ "$(id -u)" -eq 0 ] || sudo="sudo"
  echo "install-mcp-servers: installing Debian's nodejs and npm with apt-get" >&2
  $sudo apt-get update -qq >&2 && $sudo apt-get install -y -qq nodejs npm >&2
fi
if ! command -v npm >/dev/null; then
  echo "install-mcp-servers: npm is needed (Debian/Ubuntu: apt-get install nodejs npm)" >&2
  exit 1
fi
mkdir -p "$dir"
cp "$src/package.json" "$src/package-lock.json" "$dir/"
echo "install-mcp-servers: npm ci into $dir" >&2
(cd "$dir" && npm ci --no-audit --no-fund --loglevel=error >&2)
touch "$dir/.installed"
echo "$dir"
