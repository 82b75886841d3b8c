#!/usr/bin/env bash
# Installs what the console's browser test needs, if missing: Debian's headless-capable
# `chromium` and its WebDriver, `chromium-driver` (/usr/bin/chromium, /usr/bin/chromedriver).
# Safe to run again; infra/test.sh runs it before the tests. Nothing is downloaded except from
# Debian's archive.
set -euo pipefail

log() { printf 'browser-up: %s\n' "$*" >&2; }
if [[ -x /usr/bin/chromium && -x /usr/bin/chromedriver ]]; then
    log "chromium and chromedriver present"
    exit 0
fi
command -v apt-get >/dev/null || { log "error: need Debian's chromium and chromium-driver, and apt-get is missing"; exit 1; }
SUDO=""
if [[ "$(id -u)" != 0 ]]; then
    command -v sudo >/dev/null || { log "error: not root and no sudo: cannot install chromium"; exit 1; }
    SUDO="sudo"
fi
log "apt-get install chromium chromium-driver (first time: about a minute)"
$SUDO env DEBIAN_FRONTEND=noninteractive apt-get update -q >&2
$SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends chromium chromium-driver >&2
/usr/bin/chromium --version >&2
