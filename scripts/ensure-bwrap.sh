#!/usr/bin/env bash
# Make sure bubblewrap (bwrap), the job sandbox of `npucenter up`, is installed (docs/security.md).
#
#   scripts/ensure-bwrap.sh     find bwrap; install Debian's `bubblewrap` with apt-get when it
#                               is missing and we are root (CI: a fresh machine as root)
#
# Always exits 0: when bwrap cannot be installed it says why; the center then refuses tenant
# jobs (NPUCENTER_JOB_ISOLATION=auto) and the sandbox tests skip with that reason.
set -uo pipefail

log() { echo "ensure-bwrap: $*" >&2; }

if command -v bwrap >/dev/null; then
  exit 0
fi
if [[ $(id -u) -ne 0 ]]; then
  log "bubblewrap is missing and we are not root: install it (sudo apt-get install -y bubblewrap)"
  exit 0
fi
log "installing bubblewrap with apt-get"
if ! DEBIAN_FRONTEND=noninteractive apt-get install -y -qq bubblewrap >&2; then
  DEBIAN_FRONTEND=noninteractive apt-get update -qq >&2 || true
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq bubblewrap >&2 || log "could not install bubblewrap"
fi
exit 0
