#!/usr/bin/env bash
# Runs every test of the Sophia Mesh against a real nats-server (installed
# here if missing): unit tests, end-to-end tests through the gateway, the
# stdio binary, the official MCP conformance suite (installed here with npm
# if missing), and a smoke pass of the benchmarks.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
SOPHIA_NATS_SERVER="$("$root/ops/scripts/install-nats.sh")"
export SOPHIA_NATS_SERVER
# The official MCP conformance suite (npm, pinned), run by tests/tests/conformance.rs.
SOPHIA_CONFORMANCE="$("$root/ops/scripts/install-conformance.sh")"  # a directory of pinned versions
export SOPHIA_CONFORMANCE
echo "test: using $SOPHIA_NATS_SERVER ($("$SOPHIA_NATS_SERVER" --version))" >&2
cd "$root"
exec cargo test --workspace --all-targets "$@"
