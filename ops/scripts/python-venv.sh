# Sourced by the install scripts that put pinned Python packages into a venv
# (install-python-sdk.sh, install-python-servers.sh).
#
#   make_venv <who> <dir> <lock file> <what>
#
# installs every requirement of <lock file> into a fresh venv at <dir>,
# keeps a copy of the lock file there (so a later run can tell it is
# current), and installs Debian's python3 and python3-venv with apt-get if
# `python3 -m venv` cannot work. <who> prefixes its messages; <what> names
# what is installed. Needs Python 3.11 or newer.
make_venv() {
  local who="$1" dir="$2" lock="$3" what="$4" sudo=""
  # A fresh Debian or Ubuntu may lack python3, or the venv module and
  # ensurepip that `python3 -m venv` needs (package python3-venv).
  if ! { command -v python3 >/dev/null && python3 -c 'import venv, ensurepip' 2>/dev/null; } \
    && command -v apt-get >/dev/null; then
    [ "$(id -u)" -eq 0 ] || sudo="sudo"
    echo "$who: installing Debian's python3 and python3-venv with apt-get" >&2
    $sudo apt-get update -qq >&2 && $sudo apt-get install -y -qq python3 python3-venv >&2
  fi
  if ! command -v python3 >/dev/null || ! python3 -c 'import venv, ensurepip' 2>/dev/null; then
    echo "$who: python3 with its venv module is needed (Debian/Ubuntu: apt-get install python3-venv)" >&2
    exit 1
  fi
  if ! python3 -c 'import sys; sys.exit(sys.version_info < (3, 11))'; then
    echo "$who: $what needs Python 3.11 or newer; python3 is $(python3 --version 2>&1)" >&2
    exit 1
  fi
  echo "$who: installing $what into $dir" >&2
  rm -rf "$dir"
  python3 -m venv "$dir" >&2
  "$dir/bin/python" -m pip install --quiet --disable-pip-version-check --no-input \
    --requirement "$lock" >&2
  "$dir/bin/python" -m pip check >&2
  cp "$lock" "$dir/requirements.txt"
}
