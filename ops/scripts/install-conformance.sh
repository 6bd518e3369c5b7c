#!/usr/bin/env bash
# Installs the official MCP conformance suite, pinned, into
# .sophia/conformance/<version>: 0.1.16 (its default server suite) and the
# newest 0.2 release (run with --requirements 2025-11-25), with Node.js 22
# from the npm package `node@22` when the system's Node.js is older (the
# suite needs 22). Prints the directory holding the versions; each one's
# command is <dir>/<version>/node_modules/.bin/conformance, to be run with
# that .bin directory first on PATH so that it finds Node 22.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
# The expected failures in ops/conformance/ are for these versions.
versions=("0.1.16" "0.2.0-alpha.12")
dir="$root/.sophia/conformance"

installed() { # version
  grep -q "\"version\": \"$1\"" \
    "$dir/$1/node_modules/@modelcontextprotocol/conformance/package.json" 2>/dev/null \
    && [ -x "$dir/$1/node_modules/.bin/conformance" ]
}

missing=()
for v in "${versions[@]}"; do installed "$v" || missing+=("$v"); done
if [ "${#missing[@]}" -eq 0 ]; then
  echo "$dir"
  exit 0
fi
# node@22 below replaces an old Node for the suite.
# shellcheck source=ops/scripts/need-npm.sh
. "$root/ops/scripts/need-npm.sh"
need_npm install-conformance
major="$(node -p 'process.versions.node.split(".")[0]' 2>/dev/null || echo 0)"
for v in "${missing[@]}"; do
  packages=("@modelcontextprotocol/conformance@$v")
  if [ "$major" -lt 22 ]; then
    packages+=("node@22")
  fi
  mkdir -p "$dir/$v"
  echo "install-conformance: npm install ${packages[*]} into $dir/$v" >&2
  npm install --no-audit --no-fund --loglevel=error --prefix "$dir/$v" "${packages[@]}" >&2
done
echo "$dir"
