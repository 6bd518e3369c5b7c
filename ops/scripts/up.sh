#!/usr/bin/env bash
# Brings the whole Sophia Mesh up on this machine, in the foreground:
# nats-server (JetStream), the gateway, the three workers, the gong-worker and
# the echo example, and mcp-bridge with the catalog configs named in
# SOPHIA_BRIDGE_CATALOG (comma-separated: business_intelligence,
# infrastructure, code_generation; see ops/bridge/catalog/ and docs/bridge.md).
# Installs nats-server if it is missing, builds the binaries, prints the Cursor
# mcp.json snippet, and stops everything on Ctrl-C.
#
# Ports (the seed layout): NATS 4222 (monitoring 8222), gateway 8000 (MCP at
# /mcp), agno-worker 8090, pulumi-worker 8091, intelligence-worker 8092,
# gong-worker 8093, mcp-bridge 8094, echo-worker 8099. Override NATS_PORT or SOPHIA_GATEWAY_PORT if taken.
# State (token, JetStream store, logs) lives in .sophia/.
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
state="$root/.sophia"
logs="$state/logs"
mkdir -p "$logs" "$state/jetstream"
nats_port="${NATS_PORT:-4222}"
gateway_port="${SOPHIA_GATEWAY_PORT:-8000}"

say() { echo "sophia: $*" >&2; }

nats_bin="$("$root/ops/scripts/install-nats.sh")"
say "nats-server: $nats_bin"

say "building the mesh (release); the first build takes a few minutes"
cargo build --release --quiet --manifest-path "$root/Cargo.toml" \
  --bin sophia-gateway --bin agno-worker --bin pulumi-worker \
  --bin intelligence-worker --bin echo-worker --bin gong-worker --bin mcp-bridge
# Where cargo puts the binaries (CARGO_TARGET_DIR, if the user sets one).
bin="${CARGO_TARGET_DIR:-$root/target}/release"

token_file="$state/gateway-token"
if [ ! -s "$token_file" ]; then
  (umask 077; od -An -tx1 -N32 /dev/urandom | tr -d ' \n' > "$token_file")
fi
token="$(cat "$token_file")"

pids=()
cleanup() {
  trap - EXIT
  say "stopping the mesh"
  # Gateway and workers drain first, while NATS is still up; NATS goes last.
  local nats_pid="${pids[0]:-}"
  for pid in "${pids[@]:1}"; do kill -TERM "$pid" 2>/dev/null || true; done
  for pid in "${pids[@]:1}"; do wait "$pid" 2>/dev/null || true; done
  if [ -n "$nats_pid" ]; then kill -TERM "$nats_pid" 2>/dev/null || true; fi
  wait 2>/dev/null || true
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# The catalog configs named in SOPHIA_BRIDGE_CATALOG, joined into one bridge
# config in .sophia/ (TOML arrays of tables concatenate); prints its path, or
# nothing when none is enabled. Says which runtime to install when one of
# them is missing.
bridge_catalog() {
  local names="${SOPHIA_BRIDGE_CATALOG:-}" out="$state/bridge.toml" name file
  [ -n "$names" ] || return 0
  : >"$out"
  for name in ${names//,/ }; do
    file="$root/ops/bridge/catalog/$name.toml"
    if [ ! -f "$file" ]; then
      say "SOPHIA_BRIDGE_CATALOG names $name, but there is no $file (known: $(cd "$root/ops/bridge/catalog" && ls *.toml | sed 's/.toml//' | tr '\n' ' '))"
      exit 1
    fi
    cat "$file" >>"$out"
  done
  grep -q '^command = "npx"' "$out" && ! command -v npx >/dev/null \
    && say "the bridge catalog runs servers with npx: install Node.js 18+ (Debian/Ubuntu: apt-get install nodejs npm)"
  grep -q '^command = "uvx"' "$out" && ! command -v uvx >/dev/null \
    && say "the bridge catalog runs servers with uvx: install uv (pipx install uv, or https://docs.astral.sh/uv/)"
  echo "$out"
}

start() { # name, command...
  local name="$1"; shift
  "$@" >"$logs/$name.log" 2>&1 &
  pids+=("$!")
}

http_ok() { # port, path: is GET http://127.0.0.1:port/path 200? (bash only, no curl needed)
  ( # a subshell, so the descriptor and the silenced stderr stay in it
    exec 3<>"/dev/tcp/127.0.0.1/$1" || exit 1
    printf 'GET %s HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n' "$2" >&3
    status=""
    read -r -t 2 _ status _ <&3 || exit 1
    [ "$status" = "200" ]
  ) 2>/dev/null
}

wait_http() { # port, path, service name (its log is $logs/<name>.log)
  for _ in $(seq 1 150); do
    http_ok "$1" "$2" && return 0
    sleep 0.2
  done
  say "$3 did not become ready on port $1. Last lines of $logs/$3.log:"
  tail -n 5 "$logs/$3.log" | sed 's/^/    /' >&2
  exit 1
}

start nats "$nats_bin" -a 127.0.0.1 -p "$nats_port" -m 8222 -js -sd "$state/jetstream"
wait_http 8222 /healthz nats
export NATS_URL="nats://127.0.0.1:$nats_port"
# Workers point callers that land on their ports at the gateway.
export SOPHIA_GATEWAY_URL="http://127.0.0.1:$gateway_port"
# Pulumi: the projects in pulumi/ (a sample that needs no cloud account),
# state on a local file backend, a passphrase generated once for its secrets.
export SOPHIA_PULUMI_WORKSPACE="${SOPHIA_PULUMI_WORKSPACE:-$root/pulumi}"
mkdir -p "$state/pulumi-state"
export PULUMI_BACKEND_URL="${PULUMI_BACKEND_URL:-file://$state/pulumi-state}"
if [ -z "${PULUMI_CONFIG_PASSPHRASE:-}" ]; then
  passphrase_file="$state/pulumi-passphrase"
  if [ ! -s "$passphrase_file" ]; then
    (umask 077; od -An -tx1 -N16 /dev/urandom | tr -d ' \n' > "$passphrase_file")
  fi
  PULUMI_CONFIG_PASSPHRASE="$(cat "$passphrase_file")"
  export PULUMI_CONFIG_PASSPHRASE
fi

start agno-worker "$bin/agno-worker" --http-addr 127.0.0.1:8090
start pulumi-worker "$bin/pulumi-worker" --http-addr 127.0.0.1:8091
start intelligence-worker "$bin/intelligence-worker" --http-addr 127.0.0.1:8092
# Gong: always started. Without GONG_ACCESS_KEY and GONG_ACCESS_KEY_SECRET
# in the environment its /health says degraded and its tools say what to set.
start gong-worker "$bin/gong-worker" --http-addr 127.0.0.1:8093
start echo-worker "$bin/echo-worker" --http-addr 127.0.0.1:8099
bridge_config="$(bridge_catalog)"
if [ -n "$bridge_config" ]; then
  # The catalog's paths are relative to the checkout; the memory server's
  # graph is kept in .sophia/ unless SOPHIA_MEMORY_FILE says otherwise.
  export SOPHIA_MEMORY_FILE="${SOPHIA_MEMORY_FILE:-$state/memory.jsonl}"
  cd "$root"
  start mcp-bridge "$bin/mcp-bridge" --config "$bridge_config" --http-addr 127.0.0.1:8094
fi
SOPHIA_GATEWAY_TOKEN="$token" start gateway "$bin/sophia-gateway" --http-addr "127.0.0.1:$gateway_port"
wait_http "$gateway_port" /ready gateway
wait_http 8090 /ready agno-worker
wait_http 8091 /ready pulumi-worker
wait_http 8092 /ready intelligence-worker
wait_http 8093 /ready gong-worker
wait_http 8099 /ready echo-worker
if [ -n "$bridge_config" ]; then wait_http 8094 /health mcp-bridge; fi

cat <<JSON

Sophia Mesh is up. Add this to Cursor's mcp.json (~/.cursor/mcp.json or
.cursor/mcp.json in a project). "sophia" is the whole mesh; each profile
entry serves one Cursor mode within Cursor's ~40-tool budget (ask: read-only
tools; agent: everything, destructive tools ask you first; background: the
agents and long jobs). Turn on the entry for the mode you work in;
"sophia-stdio" runs the gateway inside Cursor instead (add --profile ask, ...).

{
  "mcpServers": {
    "sophia": {
      "url": "http://127.0.0.1:$gateway_port/mcp",
      "headers": { "Authorization": "Bearer $token" }
    },
    "sophia-ask": {
      "url": "http://127.0.0.1:$gateway_port/mcp/ask",
      "headers": { "Authorization": "Bearer $token" }
    },
    "sophia-agent": {
      "url": "http://127.0.0.1:$gateway_port/mcp/agent",
      "headers": { "Authorization": "Bearer $token" }
    },
    "sophia-background": {
      "url": "http://127.0.0.1:$gateway_port/mcp/background",
      "headers": { "Authorization": "Bearer $token" }
    },
    "sophia-stdio": {
      "command": "$bin/sophia-gateway",
      "args": ["--stdio"],
      "env": { "NATS_URL": "$NATS_URL" }
    }
  }
}

The console (the mesh live, and approvals of pending changes):
http://127.0.0.1:$gateway_port/console (sign in with the token; docs/console.md).

The token is kept in $token_file. Logs: $logs/. Health: http://127.0.0.1:$gateway_port/health
(it lists what the mesh cannot do yet), metrics: http://127.0.0.1:$gateway_port/metrics.

Agents need a model: a local Ollama (\`ollama serve\`, then \`ollama pull llama3.2:1b\`;
found without a restart), or SOPHIA_INTELLIGENCE_CONFIG with an API key
(ops/intelligence/example.toml). Pulumi previews need the pulumi CLI on PATH.
Gong's tools need GONG_ACCESS_KEY and GONG_ACCESS_KEY_SECRET exported before
up.sh (docs/gong.md).
Press Ctrl-C to stop.
JSON

wait -n "${pids[@]}" || true
say "a mesh process exited; see $logs"
