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

# shellcheck source=ops/scripts/python-venv.sh
. "$root/ops/scripts/python-venv.sh"
make_venv install-python-servers "$dir" "$lock" "mcp-server-time and mcp-server-git"
echo "$dir"
