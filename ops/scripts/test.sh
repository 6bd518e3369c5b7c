#!/usr/bin/env bash
# Runs every test of the Sophia Mesh against a real nats-server (installed
# here if missing): unit tests, end-to-end tests through the gateway, the
# stdio binary, the official MCP conformance suite (installed here with npm
# if missing), the official MCP Python SDK as a client (installed here into
# a venv if missing), MCP servers behind the bridge (installed here with
# npm and into a venv if missing), browser tests through a headless Chromium
# (Debian's chromium and chromium-driver, installed here with apt-get if
# missing), and a smoke pass of the benchmarks. First, the static
# checks of the deployment files (ops/scripts/check-ops.sh: compose schema,
# hadolint, promtool, Kubernetes schemas, dashboards);
# SOPHIA_SKIP_OPS_CHECKS=1 skips them.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
if [ "${SOPHIA_SKIP_OPS_CHECKS:-0}" != "1" ]; then
  "$root/ops/scripts/check-ops.sh"
fi
# Files over ~500 lines and functions over ~80 in services/ and proto/.
python3 "$root/ops/scripts/check-size.py" --strict >&2
SOPHIA_NATS_SERVER="$("$root/ops/scripts/install-nats.sh")"
export SOPHIA_NATS_SERVER
# The official MCP conformance suite (npm, pinned), run by tests/tests/conformance.rs.
SOPHIA_CONFORMANCE="$("$root/ops/scripts/install-conformance.sh")"  # a directory of pinned versions
export SOPHIA_CONFORMANCE
# The official MCP Python SDK (PyPI, pinned), run by tests/tests/python_sdk.rs.
SOPHIA_PYTHON_SDK="$("$root/ops/scripts/install-python-sdk.sh")"  # its venv
export SOPHIA_PYTHON_SDK
# MCP servers the bridge puts on the mesh (npm, pinned), run by tests/tests/bridge.rs.
SOPHIA_MCP_SERVERS="$("$root/ops/scripts/install-mcp-servers.sh")"  # an npm prefix
export SOPHIA_MCP_SERVERS
# Python MCP servers the bridge puts on the mesh (PyPI, pinned), run by tests/tests/bridge_more.rs.
SOPHIA_PYTHON_SERVERS="$("$root/ops/scripts/install-python-servers.sh")"  # their venv
export SOPHIA_PYTHON_SERVERS
# Headless Chromium and its WebDriver (Debian's packages), run by tests/tests/browser.rs.
SOPHIA_CHROMEDRIVER="$("$root/ops/scripts/install-chromium.sh")"
export SOPHIA_CHROMEDRIVER
export SOPHIA_CHROMIUM="${SOPHIA_CHROMIUM:-/usr/bin/chromium}"
echo "test: using $SOPHIA_NATS_SERVER ($("$SOPHIA_NATS_SERVER" --version))" >&2
cd "$root"
# Some tests start the services as processes, as compose does: build them first.
cargo build --workspace --bins "$@"
exec cargo test --workspace --all-targets "$@"
