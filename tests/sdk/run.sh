#!/usr/bin/env bash
# Runs the end-to-end suite with the real OpenAI Python SDK against the standalone gateway, and
# the offline checks of the CRDs and sample manifests (tests/manifests); then the Node suite
# (tests/sdk/node) with the real `openai` npm package against a gateway started the same way.
#
# Creates .venv at the repository root when it is missing, installs the client libraries into
# it, builds the gateway (debug) and runs pytest on tests/sdk. Extra arguments go to pytest.
# Installs the Node suite's locked dependencies into tests/sdk/node/node_modules (npm ci) and
# runs it with `node --test`. Exits non-zero when either suite fails.
#
# Environment:
#   VENV              the virtualenv to use (default .venv at the repository root)
#   CARGO_TARGET_DIR  where cargo builds (default target/)
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
cd "$ROOT"

VENV=${VENV:-$ROOT/.venv}
TARGET_DIR=${CARGO_TARGET_DIR:-target}
[[ $TARGET_DIR == /* ]] || TARGET_DIR="$ROOT/$TARGET_DIR"

log() { printf '[sdk] %s\n' "$*" >&2; }

if [[ ! -x $VENV/bin/python ]]; then
    log "creating virtualenv $VENV"
    if ! python3 -m venv "$VENV"; then
        # Debian's own python3 ships venv support in a separate package.
        rm -rf "$VENV"
        command -v apt-get >/dev/null || { log "python3 -m venv failed"; exit 1; }
        log "installing python3-venv with apt-get"
        env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq python3-venv >/dev/null 2>&1 ||
            { apt-get update -qq && env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq python3-venv >/dev/null; }
        python3 -m venv "$VENV"
    fi
fi

log "installing test dependencies"
"$VENV/bin/python" -m pip install --quiet --disable-pip-version-check \
    'openai>=1.50' 'anthropic>=0.40' 'pytest>=7' 'pyyaml>=6' 'jsonschema>=4' 'kubernetes-validate>=1.30' \
    'opentelemetry-proto>=1.20'

log "building uprox-gateway (debug)"
cargo build --quiet -p uprox-gateway --bins

export UPROX_GATEWAY_BIN="$TARGET_DIR/debug/uprox-gateway"
[[ -x $UPROX_GATEWAY_BIN ]] || { log "no $UPROX_GATEWAY_BIN after the build"; exit 1; }

status=0
"$VENV/bin/python" -m pytest tests/sdk tests/manifests -p no:cacheprovider "$@" || status=$?

NODE_DIR="$ROOT/tests/sdk/node"
if ! command -v node >/dev/null || ! command -v npm >/dev/null; then
    command -v apt-get >/dev/null || { log "the Node suite needs node and npm"; exit 1; }
    log "installing nodejs and npm with apt-get"
    env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq nodejs npm >/dev/null 2>&1 ||
        { apt-get update -qq && env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq nodejs npm >/dev/null; }
fi
log "installing the Node suite's dependencies (npm ci, node $(node --version))"
(cd "$NODE_DIR" && npm ci --no-audit --no-fund --loglevel=error)
log "running the Node SDK suite"
"$VENV/bin/python" "$NODE_DIR/with_gateway.py" node --test --test-reporter=spec openai.test.mjs || status=$?
exit "$status"
