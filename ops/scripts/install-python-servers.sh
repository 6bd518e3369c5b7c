#!/usr/bin/env bash
# Installs the Python MCP servers the bridge's tests run over stdio
# (mcp-server-time, mcp-server-git), pinned with every dependency by
# ops/bridge/servers/requirements.txt, into a venv at
# .sophia/python-servers/<hash of that file>. Installs Debian's python3-venv
# with apt-get if `python3 -m venv` cannot work. Prints the venv directory;
# the servers are then <dir>/bin/mcp-server-time and <dir>/bin/mcp-server-git
# (tests/src/bridge.rs).
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
lock="$root/ops/bridge/servers/requirements.txt"
hash="$(sha256sum "$lock" | cut -c1-16)"
dir="$root/.sophia/python-servers/$hash"

# Installed, and from this very lock file (a copy is kept in the venv).
if [ -x "$dir/bin/mcp-server-time" ] && [ -x "$dir/bin/mcp-server-git" ] \
  && cmp -s "$lock" "$dir/requirements.txt"; then
  echo "$dir"
  exit 0
fi

# A fresh Debian or Ubuntu may lack python3, or the venv module and
# ensurepip that `python3 -m venv` needs (package python3-venv).
if ! { command -v python3 >/dev/null && python3 -c 'import venv, ensurepip' 2>/dev/null; } \
  && command -v apt-get >/dev/null; then
  sudo=""
  [ "$(id -u)" -eq 0 ] || sudo="sudo"
  echo "install-python-servers: installing Debian's python3 and python3-venv with apt-get" >&2
  $sudo apt-get update -qq >&2 && $sudo apt-get install -y -qq python3 python3-venv >&2
fi
if ! command -v python3 >/dev/null || ! python3 -c 'import venv, ensurepip' 2>/dev/null; then
  echo "install-python-servers: python3 with its venv module is needed (Debian/Ubuntu: apt-get install python3-venv)" >&2
  exit 1
fi
if ! python3 -c 'import sys; sys.exit(sys.version_info < (3, 11))'; then
  echo "install-python-servers: the pinned servers need Python 3.11 or newer; python3 is $(python3 --version 2>&1)" >&2
  exit 1
fi

echo "install-python-servers: installing mcp-server-time and mcp-server-git into $dir" >&2
rm -rf "$dir"
python3 -m venv "$dir" >&2
"$dir/bin/python" -m pip install --quiet --disable-pip-version-check --no-input \
  --requirement "$lock" >&2
"$dir/bin/python" -m pip check >&2
cp "$lock" "$dir/requirements.txt"
echo "$dir"
