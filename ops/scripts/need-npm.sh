# Sourced by the install scripts that use npm (install-conformance.sh,
# install-mcp-servers.sh).
#
#   need_npm <who>
#
# installs Debian's nodejs and npm with apt-get when npm is missing (a fresh
# Debian or Ubuntu has none), and exits naming what to install when that is
# not possible. <who> prefixes its messages.
need_npm() {
  local who="$1" sudo=""
  if ! command -v npm >/dev/null && command -v apt-get >/dev/null; then
    [ "$(id -u)" -eq 0 ] || sudo="sudo"
    echo "$who: installing Debian's nodejs and npm with apt-get" >&2
    $sudo apt-get update -qq >&2 && $sudo apt-get install -y -qq nodejs npm >&2
  fi
  if ! command -v npm >/dev/null; then
    echo "$who: npm is needed (Debian/Ubuntu: apt-get install nodejs npm)" >&2
    exit 1
  fi
}
