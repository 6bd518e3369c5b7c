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

# A fresh Debian or Ubuntu may lack python3, or the venv module and
# ensurepip that `python3 -m venv` needs (package python3-venv).
if ! { command -v python3 >/dev/null && python3 -c 'import venv, ensurepip' 2>/dev/null; } \
  && command -v apt-get >/dev/null; then
  sudo=""
  [ "$(id -u)" -eq 0 ] || sudo="sudo"
  echo "install-python-sdk: installing Debian's python3 and python3-venv with apt-get" >&2
  $sudo apt-get update -qq >&2 && $sudo apt-get install -y -qq python3 python3-venv >&2
fi
if ! command -v python3 >/dev/null || ! python3 -c 'import venv, ensurepip' 2>/dev/null; then
  echo "install-python-sdk: python3 with its venv module is needed (Debian/Ubuntu: apt-get install python3-venv)" >&2
  exit 1
fi
if ! python3 -c 'import sys; sys.exit(sys.version_info < (3, 11))'; then
  echo "install-python-sdk: mcp $version needs Python 3.11 or newer; python3 is $(python3 --version 2>&1)" >&2
  exit 1
fi

echo "install-python-sdk: installing mcp $version into $dir" >&2
rm -rf "$dir"
python3 -m venv "$dir" >&2
"$dir/bin/python" -m pip install --quiet --disable-pip-version-check --no-input \
  --requirement "$lock" >&2
"$dir/bin/python" -m pip check >&2
cp "$lock" "$dir/requirements.txt"
echo "$dir"
