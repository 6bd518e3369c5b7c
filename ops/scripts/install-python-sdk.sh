#!/usr/bin/env bash
# Installs the official MCP Python SDK (PyPI `mcp`), pinned with every
# dependency by ops/python-sdk/requirements.txt (which says why that
# release), into a venv at .sophia/python-sdk/<mcp version>. Installs
# Debian's python3-venv with apt-get if `python3 -m venv` cannot work.
# Prints the venv directory; the tests run <dir>/bin/python
# tests/python/mcp_probe.py (tests/src/python.rs).
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
lock="$root/ops/python-sdk/requirements.txt"
version="$(sed -n 's/^mcp==//p' "$lock")"
if [ -z "$version" ]; then
  echo "install-python-sdk: $lock pins no mcp==<version>" >&2
  exit 1
fi
dir="$root/.sophia/python-sdk/$version"

# Installed, and from this very lock file (a copy is kept in the venv).
if [ -x "$dir/bin/python" ] && cmp -s "$lock" "$dir/requirements.txt" \
  && [ "$("$dir/bin/python" -c 'import importlib.metadata as m; print(m.version("mcp"))' 2>/dev/null)" = "$version" ]; then
  echo "$dir"
  exit 0
fi

# shellcheck source=ops/scripts/python-venv.sh
. "$root/ops/scripts/python-venv.sh"
make_venv install-python-sdk "$dir" "$lock" "mcp $version"
echo "$dir"
