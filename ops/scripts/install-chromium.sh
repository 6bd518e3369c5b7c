#!/usr/bin/env bash
# Makes sure Debian's headless-capable Chromium and its WebDriver are
# installed and prints chromedriver's path (diagnostics go to stderr). The
# browser tests (tests/src/browser.rs) drive /usr/bin/chromium through it.
#
# Order of preference:
#   1. $SOPHIA_CHROMEDRIVER, if set and executable (the browser is then the
#      caller's business: $SOPHIA_CHROMIUM, default /usr/bin/chromium);
#   2. /usr/bin/chromedriver with /usr/bin/chromium beside it;
#   3. Debian's `chromium` and `chromium-driver` packages, via apt-get
#      (noninteractive; the package lists are refreshed only when apt does
#      not know the packages). Root, or sudo when it is there.
set -euo pipefail

log() { echo "install-chromium: $*" >&2; }
die() { log "error: $*"; exit 1; }

if [ -n "${SOPHIA_CHROMEDRIVER:-}" ] && [ -x "$SOPHIA_CHROMEDRIVER" ]; then
  echo "$SOPHIA_CHROMEDRIVER"; exit 0
fi
driver=/usr/bin/chromedriver
browser=/usr/bin/chromium
if [ -x "$driver" ] && [ -x "$browser" ]; then
  echo "$driver"; exit 0
fi

command -v apt-get >/dev/null 2>&1 \
  || die "apt-get is not available: install Chromium and chromedriver of the same version and set SOPHIA_CHROMEDRIVER (and SOPHIA_CHROMIUM) to their paths"
sudo=""
if [ "$(id -u)" -ne 0 ]; then
  command -v sudo >/dev/null 2>&1 \
    || die "not root and no sudo: as root, run apt-get install chromium chromium-driver"
  sudo="sudo"
fi
export DEBIAN_FRONTEND=noninteractive
packages=(chromium chromium-driver)

# A fresh machine (or container) may have no package lists at all.
known() { apt-cache show "${packages[@]}" >/dev/null 2>&1; }
if ! known; then
  log "apt-get update (apt does not know ${packages[*]} yet)"
  $sudo apt-get update -qq >&2
fi
log "installing Debian's ${packages[*]} with apt-get"
if ! $sudo apt-get install -y -qq --no-install-recommends "${packages[@]}" >&2; then
  # Lists older than the mirror name files that are gone: refresh, retry.
  log "apt-get install failed; refreshing the package lists and retrying"
  $sudo apt-get update -qq >&2
  $sudo apt-get install -y -qq --no-install-recommends "${packages[@]}" >&2
fi
[ -x "$driver" ] || die "$driver is still missing after installing chromium-driver"
[ -x "$browser" ] || die "$browser is still missing after installing chromium"
log "installed $("$driver" --version 2>/dev/null || echo chromedriver)"
echo "$driver"
