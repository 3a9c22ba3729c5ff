#!/usr/bin/env bash
# Make sure a chromium the dashboard's browser tests can drive (Playwright, executable_path) is
# installed: tests/e2e/test_dashboard_browser.py.
#
#   scripts/ensure-chromium.sh        find chromium; install Debian's `chromium` with apt-get when
#                                     it is missing and we are root (CI: a fresh machine as root)
#
# Never downloads a browser from Playwright's CDN (`playwright install`). Always exits 0: when
# chromium cannot be installed it says why, and the browser tests skip with that reason.
# NPUCENTER_CHROMIUM=/path/to/chrome: use that binary, install nothing.
set -uo pipefail

log() { echo "ensure-chromium: $*" >&2; }

find_chromium() {
  local c
  for c in "${NPUCENTER_CHROMIUM:-}" /usr/lib/chromium/chromium \
           "$(command -v chromium || true)" "$(command -v chromium-browser || true)" \
           "$(command -v google-chrome || true)"; do
    if [[ -n "$c" && -x "$c" ]]; then echo "$c"; return 0; fi
  done
  return 1
}

if found=$(find_chromium); then
  log "using $found"
  exit 0
fi
if [[ $(id -u) -ne 0 ]]; then
  log "chromium is missing and we are not root: install it (sudo apt-get install -y chromium)"
  log "or set NPUCENTER_CHROMIUM; until then the browser tests are skipped"
  exit 0
fi
if ! command -v apt-get >/dev/null; then
  log "chromium is missing and there is no apt-get: install chromium (or set NPUCENTER_CHROMIUM);"
  log "until then the browser tests are skipped"
  exit 0
fi
log "installing chromium with apt-get"
if DEBIAN_FRONTEND=noninteractive apt-get update -qq >&2 \
   && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >&2 \
   && found=$(find_chromium); then
  log "using $found"
else
  log "apt-get could not install chromium (offline? no such package?); the browser tests are skipped"
fi
exit 0
