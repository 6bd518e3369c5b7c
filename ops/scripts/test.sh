#!/usr/bin/env bash
# Runs every test of the Sophia Mesh against a real nats-server (installed
# here if missing): unit tests, end-to-end tests through the gateway, the
# stdio binary, and a smoke pass of the benchmark.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
SOPHIA_NATS_SERVER="$("$root/ops/scripts/install-nats.sh")"
export SOPHIA_NATS_SERVER
echo "test: using $SOPHIA_NATS_SERVER ($("$SOPHIA_NATS_SERVER" --version))" >&2
cd "$root"
exec cargo test --workspace --all-targets "$@"
