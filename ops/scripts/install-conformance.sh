#!/usr/bin/env bash
# Installs the official MCP conformance suite, pinned, into
# .sophia/conformance, with Node.js 22 from the npm package `node@22` when
# the system's Node.js is older (the suite needs 22). Prints the path of the
# `conformance` command; run it with that directory first on PATH so that
# it finds Node 22.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
# The expected failures in ops/conformance/ are for this version.
version="0.1.16"
dir="$root/.sophia/conformance"
bin="$dir/node_modules/.bin/conformance"
installed="$dir/node_modules/@modelcontextprotocol/conformance/package.json"
if [ -x "$bin" ] && grep -q "\"version\": \"$version\"" "$installed" 2>/dev/null; then
  echo "$bin"
  exit 0
fi
if ! command -v npm >/dev/null && command -v apt-get >/dev/null; then
  # A fresh Debian or Ubuntu has no npm: Debian's Node.js brings it (and
  # node@22 below replaces an old Node for the suite).
  sudo=""
  [ "$(id -u)" -eq 0 ] || sudo="sudo"
  echo "install-conformance: installing Debian's nodejs and npm with apt-get" >&2
  $sudo apt-get update -qq >&2 && $sudo apt-get install -y -qq nodejs npm >&2
fi
if ! command -v npm >/dev/null; then
  echo "install-conformance: npm is needed (Debian/Ubuntu: apt-get install nodejs npm)" >&2
  exit 1
fi
packages=("@modelcontextprotocol/conformance@$version")
major="$(node -p 'process.versions.node.split(".")[0]' 2>/dev/null || echo 0)"
if [ "$major" -lt 22 ]; then
  packages+=("node@22")
fi
mkdir -p "$dir"
echo "install-conformance: npm install ${packages[*]} into $dir" >&2
npm install --no-audit --no-fund --loglevel=error --prefix "$dir" "${packages[@]}" >&2
echo "$bin"
