#!/usr/bin/env bash
# The kind suite: a real Kubernetes API server, the real operator and the real gateway.
#
#   make e2e            (needs a Docker engine, kind and kubectl on PATH)
#
# It creates the cluster from kind-cluster.yaml (or reuses it) and installs uprox the way users
# do: the image built from this checkout (`make image`), loaded into kind, and `helm install`
# of charts/uprox (E2E_MODE=host instead runs both binaries on the host against the cluster,
# with the CRDs applied from crds/). Then it applies the sample manifests and checks with the
# generated token: a chat completion through the gateway, its cost in the usage ledger and the
# Budget status, a Policy change, a revocation and a
# deletion (printing how long each took to take effect), and that deleting the MachineToken
# deletes its Secret. KEEP=1 keeps the cluster afterwards.
#
# It is not part of `make test`: machines without Docker cannot run it.
set -euo pipefail
cd "$(dirname "$0")/../.."

CLUSTER=uprox-e2e
NS=uprox-system
GATEWAY=127.0.0.1:18080
ADMIN=127.0.0.1:18081
WORK=$(mktemp -d)

need() { command -v "$1" >/dev/null || { echo "e2e: $1 is required on PATH ($2)" >&2; exit 2; }; }
need docker "a Docker engine runs the kind node"
need kind "https://kind.sigs.k8s.io/docs/user/quick-start/#installation"
need kubectl "https://kubernetes.io/docs/tasks/tools/"
need curl "to call the gateway"
docker info >/dev/null 2>&1 || { echo "e2e: no Docker engine answers (docker info failed)" >&2; exit 2; }

pids=()
cleanup() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
  if [[ "${KEEP:-0}" != 1 ]]; then kind delete cluster --name "$CLUSTER" >/dev/null 2>&1 || true; fi
  rm -rf "$WORK"
}
trap cleanup EXIT

ms_now() { date +%s%3N; }
fail() { echo "e2e: FAIL: $*" >&2; echo "--- operator log" >&2; tail -50 "$WORK/operator.log" >&2 || true;
         kubectl -n "$NS" logs deploy/uprox-operator --tail=50 >&2 2>/dev/null || true
         echo "--- gateway log" >&2; tail -50 "$WORK/gateway.log" >&2 || true;
         kubectl -n "$NS" logs deploy/uprox-gateway --tail=50 >&2 2>/dev/null || true; exit 1; }
# wait_for SECONDS CMD...: retries CMD every 50 ms until it succeeds.
wait_for() {
  local deadline=$(( $(date +%s) + $1 )); shift
  until "$@" >/dev/null 2>&1; do
    (( $(date +%s) < deadline )) || return 1
    sleep 0.05
  done
}

echo "e2e: cluster"
kind get clusters 2>/dev/null | grep -qx "$CLUSTER" || kind create cluster --config kind-cluster.yaml --wait 120s
export KUBECONFIG="$WORK/kubeconfig"
kind get kubeconfig --name "$CLUSTER" > "$KUBECONFIG"

if [[ "${E2E_MODE:-helm}" == helm ]]; then
  need helm "https://helm.sh/docs/intro/install/ (or .tools/helm after make chart)"
  IMAGE=ghcr.io/uprox/uprox:e2e
  echo "e2e: image"
  docker build -t "$IMAGE" .
  kind load docker-image "$IMAGE" --name "$CLUSTER"
  echo "e2e: helm install"
  helm upgrade --install uprox charts/uprox --namespace "$NS" --create-namespace --wait --timeout 180s \
    --set image.repository="${IMAGE%:*}" --set image.tag="${IMAGE##*:}" --set image.pullPolicy=Never \
    --set operator.logFormat=text --set gateway.logFormat=text
  kubectl -n "$NS" port-forward svc/uprox-gateway "${GATEWAY##*:}:80" > "$WORK/gateway.log" 2>&1 & pids+=($!)
  kubectl -n "$NS" port-forward deploy/uprox-operator "${ADMIN##*:}:8081" > "$WORK/operator.log" 2>&1 & pids+=($!)
  wait_for 30 curl -sf "http://$ADMIN/readyz" || fail "the operator did not become ready"
else
  echo "e2e: CRDs"
  kubectl apply -f crds/ >/dev/null
  kubectl wait --for condition=Established crd --all --timeout=60s >/dev/null
  kubectl create namespace "$NS" --dry-run=client -o yaml | kubectl apply -f - >/dev/null
  echo "e2e: build"
  cargo build --release -p uprox-operator -p uprox-gateway
  ./target/release/uprox-operator --namespace "$NS" --admin-listen "$ADMIN" --log-format text \
    > "$WORK/operator.log" 2>&1 & pids+=($!)
  ./target/release/uprox-gateway --source cluster --namespace "$NS" --listen "$GATEWAY" \
    > "$WORK/gateway.log" 2>&1 & pids+=($!)
  wait_for 60 curl -sf "http://$ADMIN/readyz" || fail "the operator did not become ready"
fi

echo "e2e: samples"
kubectl apply -f config/samples/ >/dev/null
kubectl -n default wait --for condition=Ready machinetoken/demo-app --timeout=60s >/dev/null \
  || fail "MachineToken demo-app did not become Ready"
wait_for 30 curl -sf "http://$GATEWAY/readyz" || fail "the gateway did not become ready"
TOKEN=$(kubectl -n default get secret demo-app-token -o jsonpath='{.data.token}' | base64 -d)
[[ "$TOKEN" == uprox_live_* ]] || fail "the token Secret does not hold a uprox token"
kubectl get uprox -A

chat() {
  curl -s -o /dev/null -w '%{http_code}' "http://$GATEWAY/v1/chat/completions" \
    -H "authorization: Bearer $TOKEN" -H 'content-type: application/json' \
    -d "{\"model\":\"${1:-mock-1}\",\"messages\":[{\"role\":\"user\",\"content\":\"hi\"}]}"
}
is() { [[ "$(chat "${2:-mock-1}")" == "$1" ]]; }
wait_for 10 is 200 || fail "a chat completion with the generated token did not succeed"
echo "e2e: chat with the generated token: 200"

echo "e2e: spend reaches the ledger and the Budget status"
start=$(ms_now)
spent() { [[ -n "$(kubectl -n default get budget demo-budget -o jsonpath='{.status.dailySpendUSD}')" ]] \
  && kubectl -n "$NS" get configmap uprox-usage >/dev/null 2>&1; }
wait_for 30 spent || fail "the chat's cost did not reach the usage ledger and the Budget status"
echo "e2e: spend to Budget status: $(( $(ms_now) - start )) ms"
kubectl -n default get budget demo-budget

echo "e2e: a Policy change (drop mock-* from the models)"
start=$(ms_now)
kubectl -n default patch policy demo-policy --type merge -p '{"spec":{"models":["gpt-4o*"]}}' >/dev/null
wait_for 10 is 403 mock-1 || fail "the Policy change did not take effect"
echo "e2e: policy change to effect: $(( $(ms_now) - start )) ms"
kubectl -n default patch policy demo-policy --type merge -p '{"spec":{"models":["mock-*"]}}' >/dev/null
wait_for 10 is 200 || fail "the Policy change back did not take effect"

echo "e2e: revocation"
start=$(ms_now)
kubectl -n default patch machinetoken demo-app --type merge -p '{"spec":{"revoked":true}}' >/dev/null
wait_for 10 is 401 || fail "the revoked token was still accepted after 10 s"
echo "e2e: revoked to 401: $(( $(ms_now) - start )) ms"
kubectl -n default patch machinetoken demo-app --type merge -p '{"spec":{"revoked":false}}' >/dev/null
wait_for 10 is 200 || fail "the un-revoked token was not accepted again"

echo "e2e: delete the MachineToken"
start=$(ms_now)
kubectl -n default delete machinetoken demo-app --wait=false >/dev/null
wait_for 10 is 401 || fail "the deleted token was still accepted after 10 s"
echo "e2e: deleted to 401: $(( $(ms_now) - start )) ms"
wait_for 60 bash -c "! kubectl -n default get secret demo-app-token" \
  || fail "the token Secret was not garbage-collected with its MachineToken"

echo "e2e: 6 passed, 0 failed"
