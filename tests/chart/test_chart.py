"""The Helm chart, rendered and checked offline (run by tests/chart/run.sh)."""

import os
import pathlib
import subprocess

import kubernetes_validate
import pytest
import yaml

ROOT = pathlib.Path(__file__).resolve().parents[2]
CHART = ROOT / "charts" / "uprox"
HELM = os.environ.get("HELM", "helm")
KUBERNETES = "1.33.0"

ALL_ON = [
    "--set", "gateway.autoscaling.enabled=true",
    "--set", "networkPolicy.enabled=true",
    "--set", "serviceMonitor.enabled=true",
    "--set", "operator.watchNamespaces={team-a,team-b}",
    "--set", "gateway.workers=4",
]
# Kinds whose schemas come from other projects' CRDs, checked by hand below.
FOREIGN_KINDS = {"ServiceMonitor"}


def helm(*args, check=True):
    return subprocess.run([HELM, *args], capture_output=True, text=True, check=check)


def render(*extra):
    out = helm("template", "uprox", str(CHART), "--namespace", "uprox-system", "--include-crds", *extra).stdout
    return [d for d in yaml.safe_load_all(out) if d]


@pytest.fixture(scope="module", params=["default", "all-on"])
def docs(request):
    return render(*(ALL_ON if request.param == "all-on" else []))


def of_kind(docs, kind):
    return [d for d in docs if d["kind"] == kind]


@pytest.mark.parametrize("values", [[], ALL_ON], ids=["default", "all-on"])
def test_helm_lint_strict(values):
    result = helm("lint", "--strict", str(CHART), *values, check=False)
    assert result.returncode == 0, result.stdout + result.stderr


def test_every_manifest_validates_against_the_kubernetes_schemas(docs):
    for doc in docs:
        if doc["kind"] in FOREIGN_KINDS:
            continue
        kubernetes_validate.validate(doc, KUBERNETES, strict=True)


def test_the_chart_crds_are_the_generated_ones():
    for committed in sorted((ROOT / "crds").glob("*.yaml")):
        in_chart = CHART / "crds" / committed.name
        assert in_chart.read_bytes() == committed.read_bytes(), f"charts/uprox/crds/{committed.name} differs"
    assert sorted(p.name for p in (CHART / "crds").glob("*.yaml")) == sorted(p.name for p in (ROOT / "crds").glob("*.yaml"))


def test_rbac_has_no_wildcards(docs):
    for doc in of_kind(docs, "ClusterRole") + of_kind(docs, "Role"):
        for rule in doc.get("rules", []):
            for field in ("apiGroups", "resources", "verbs"):
                assert "*" not in rule.get(field, []), f"{doc['kind']} {doc['metadata']['name']}: {rule}"


def rules_of(docs, kind, name, namespace=None):
    for doc in of_kind(docs, kind):
        if doc["metadata"]["name"] == name and (namespace is None or doc["metadata"].get("namespace") == namespace):
            return doc["rules"]
    raise AssertionError(f"no {kind} {name} in {namespace}")


def verbs(rules, group, resource):
    return {v for r in rules if group in r["apiGroups"] and resource in r["resources"] for v in r["verbs"]}


def test_operator_rbac_is_least_privilege():
    default = render()
    cluster_rules = rules_of(default, "ClusterRole", "uprox-operator")
    assert verbs(cluster_rules, "uprox.dev", "machinetokens") == {"get", "list", "watch"}
    assert verbs(cluster_rules, "uprox.dev", "machinetokens/status") == {"get", "patch", "update"}
    assert "delete" not in verbs(cluster_rules, "", "secrets")
    assert "patch" not in verbs(cluster_rules, "", "secrets"), "Secrets are patched only in the release namespace"
    own = rules_of(default, "Role", "uprox-operator-compiled", "uprox-system")
    assert "patch" in verbs(own, "", "secrets") and "patch" in verbs(own, "", "configmaps")
    assert verbs(own, "coordination.k8s.io", "leases") >= {"get", "create", "update"}

    scoped = render(*ALL_ON)
    assert not [d for d in of_kind(scoped, "ClusterRole") if d["metadata"]["name"] == "uprox-operator"]
    for ns in ("team-a", "team-b"):
        rules = rules_of(scoped, "Role", "uprox-operator", ns)
        assert verbs(rules, "uprox.dev", "providers") == {"get", "list", "watch"}
    operator = [d for d in of_kind(scoped, "Deployment") if d["metadata"]["name"] == "uprox-operator"][0]
    assert "--watch-namespaces=team-a,team-b" in operator["spec"]["template"]["spec"]["containers"][0]["args"]


def test_the_gateway_only_reads_its_namespace(docs):
    rules = rules_of(docs, "Role", "uprox-gateway", "uprox-system")
    assert verbs(rules, "", "configmaps") == {"get", "list", "watch", "create", "patch", "update"}
    updates = [r for r in rules if "configmaps" in r["resources"] and "update" in r["verbs"]]
    assert updates == [
        {"apiGroups": [""], "resources": ["configmaps"], "resourceNames": ["uprox-usage"], "verbs": ["update"]}
    ], "only the usage ledger is replaced"
    assert verbs(rules, "", "secrets") == {"get", "list", "watch"}
    assert verbs(rules, "discovery.k8s.io", "endpointslices") == {"get", "list", "watch"}, "replicas share limits"
    assert not [d for d in of_kind(docs, "ClusterRoleBinding") if "gateway" in d["metadata"]["name"]]


def test_pods_are_hardened_and_probed(docs):
    for deployment in of_kind(docs, "Deployment"):
        pod = deployment["spec"]["template"]["spec"]
        assert pod["securityContext"]["runAsNonRoot"] is True
        assert pod["securityContext"]["seccompProfile"]["type"] == "RuntimeDefault"
        for container in pod["containers"]:
            sc = container["securityContext"]
            assert sc["readOnlyRootFilesystem"] is True
            assert sc["allowPrivilegeEscalation"] is False
            assert sc["capabilities"]["drop"] == ["ALL"]
            assert container["readinessProbe"] and container["livenessProbe"]
            assert container["resources"]["requests"] and container["resources"]["limits"]


def test_the_gateway_rolls_without_dropping_requests(docs):
    gateway = [d for d in of_kind(docs, "Deployment") if d["metadata"]["name"] == "uprox-gateway"][0]
    assert gateway["spec"]["strategy"]["rollingUpdate"]["maxUnavailable"] == 0
    container = gateway["spec"]["template"]["spec"]["containers"][0]
    assert container["lifecycle"]["preStop"]["sleep"]["seconds"] > 0
    assert "--source=cluster" in container["args"]
    assert "--peers-service=uprox-gateway" in container["args"], "rate limits shared by the ready replicas"
    assert container["readinessProbe"]["httpGet"]["port"] == "admin", "probes on the admin port"
    service = [d for d in of_kind(docs, "Service") if d["metadata"]["name"] == "uprox-gateway"][0]
    assert service["spec"]["ports"][0]["port"] == 80
    assert of_kind(docs, "PodDisruptionBudget")


def test_the_operator_runs_two_replicas_with_leader_election(docs):
    operator = [d for d in of_kind(docs, "Deployment") if d["metadata"]["name"] == "uprox-operator"][0]
    assert operator["spec"]["replicas"] == 2
    env = operator["spec"]["template"]["spec"]["containers"][0]["env"]
    assert any(e["name"] == "POD_NAME" for e in env), "the Lease identity is the pod name"


def test_team_roles_aggregate_into_the_builtin_roles(docs):
    labels = {d["metadata"]["name"]: d["metadata"]["labels"] for d in of_kind(docs, "ClusterRole")}
    assert labels["uprox-admin"]["rbac.authorization.k8s.io/aggregate-to-admin"] == "true"
    assert labels["uprox-editor"]["rbac.authorization.k8s.io/aggregate-to-edit"] == "true"
    assert labels["uprox-viewer"]["rbac.authorization.k8s.io/aggregate-to-view"] == "true"
    editor = rules_of(docs, "ClusterRole", "uprox-editor")
    assert "create" in verbs(editor, "uprox.dev", "machinetokens")
    assert verbs(editor, "uprox.dev", "providers") == {"get", "list", "watch"}
    assert verbs(editor, "uprox.dev", "budgets") == {"get", "list", "watch"}


def test_optional_features_render_when_enabled():
    default = {d["kind"] for d in render()}
    all_on = render(*ALL_ON)
    kinds = {d["kind"] for d in all_on}
    assert not default & {"HorizontalPodAutoscaler", "NetworkPolicy", "ServiceMonitor"}
    assert {"HorizontalPodAutoscaler", "NetworkPolicy", "ServiceMonitor"} <= kinds
    monitor = of_kind(all_on, "ServiceMonitor")[0]
    assert monitor["apiVersion"] == "monitoring.coreos.com/v1"
    assert monitor["spec"]["endpoints"][0]["port"] == "admin", "metrics are on the admin port, not the API port"
    service = [d for d in of_kind(all_on, "Service") if d["metadata"]["name"] == "uprox-gateway"][0]
    assert {p["name"] for p in service["spec"]["ports"]} == {"http", "admin"}
    gateway = [d for d in of_kind(all_on, "Deployment") if d["metadata"]["name"] == "uprox-gateway"][0]
    assert "replicas" not in gateway["spec"], "the HPA owns the replica count"


def test_the_response_cache_is_sized_from_values():
    def args(*extra):
        docs = render(*extra)
        gateway = [d for d in of_kind(docs, "Deployment") if d["metadata"]["name"] == "uprox-gateway"][0]
        return gateway["spec"]["template"]["spec"]["containers"][0]["args"]

    assert "--cache-max-bytes=134217728" in args(), "128 MiB by default, well below the 512 MiB limit"
    sized = args("--set", "gateway.cache.maxBytes=1048576", "--set", "gateway.cache.maxEntryBytes=65536")
    assert "--cache-max-bytes=1048576" in sized and "--cache-max-entry-bytes=65536" in sized
    result = helm("template", "uprox", str(CHART), "--set", "gateway.cache.maxBytes=-1", check=False)
    assert result.returncode != 0


def test_bad_values_are_refused_by_the_schema():
    result = helm("template", "uprox", str(CHART), "--set", "gateway.replicas=0", check=False)
    assert result.returncode != 0 and "replicas" in result.stderr
    result = helm("template", "uprox", str(CHART), "--set", "gateway.nosuchkey=1", check=False)
    assert result.returncode != 0


def test_notes_tell_how_to_make_the_first_call():
    result = helm("install", "uprox", str(CHART), "--dry-run=client", "--namespace", "uprox-system")
    assert "uprox-gateway.uprox-system.svc/v1" in result.stdout
    assert "MachineToken" in result.stdout
