"""The Helm chart, rendered and checked offline (run by tests/chart/run.sh)."""

import json
import os
import pathlib
import re
import shutil
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
    "--set", "prometheusRule.enabled=true",
    "--set", "grafana.dashboard.enabled=true",
    "--set", "operator.watchNamespaces={team-a,team-b}",
    "--set", "gateway.workers=4",
]
# Kinds whose schemas come from other projects' CRDs, checked by hand below.
FOREIGN_KINDS = {"ServiceMonitor", "PodMonitor", "PrometheusRule"}


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
    assert not default & {"HorizontalPodAutoscaler", "NetworkPolicy", "ServiceMonitor", "PrometheusRule"}
    assert {"HorizontalPodAutoscaler", "NetworkPolicy", "ServiceMonitor", "PrometheusRule"} <= kinds
    monitor = of_kind(all_on, "ServiceMonitor")[0]
    assert monitor["apiVersion"] == "monitoring.coreos.com/v1"
    assert monitor["spec"]["endpoints"][0]["port"] == "admin", "metrics are on the admin port, not the API port"
    assert monitor["spec"]["endpoints"][0]["honorLabels"] is True, (
        "the metrics' own namespace label (a Service's namespace) must win over the target's, "
        "or the dashboard and the alerts see every Service in the gateway's namespace"
    )
    service = [d for d in of_kind(all_on, "Service") if d["metadata"]["name"] == "uprox-gateway"][0]
    assert {p["name"] for p in service["spec"]["ports"]} == {"http", "admin"}
    gateway = [d for d in of_kind(all_on, "Deployment") if d["metadata"]["name"] == "uprox-gateway"][0]
    assert "replicas" not in gateway["spec"], "the HPA owns the replica count"


def test_the_operator_metrics_are_scraped_with_the_gateways():
    assert not of_kind(render(), "PodMonitor")
    monitor = of_kind(render(*ALL_ON), "PodMonitor")[0]
    assert monitor["spec"]["selector"]["matchLabels"]["app.kubernetes.io/component"] == "operator"
    endpoint = monitor["spec"]["podMetricsEndpoints"][0]
    assert (endpoint["port"], endpoint["path"], endpoint["honorLabels"]) == ("admin", "/metrics", True)


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


def test_tracing_is_off_by_default_and_configured_from_values():
    def container(*extra):
        docs = render(*extra)
        gateway = [d for d in of_kind(docs, "Deployment") if d["metadata"]["name"] == "uprox-gateway"][0]
        return gateway["spec"]["template"]["spec"]["containers"][0]

    off = container()
    assert not any(a.startswith("--otlp") for a in off["args"]) and "env" not in off
    on = container(
        "--set", "gateway.tracing.endpoint=http://otel-collector.observability:4318",
        "--set-json", "gateway.tracing.sampleRatio=0.25",
        "--set", "gateway.tracing.headersSecret.name=otlp-auth",
        "--set", "gateway.tracing.headersSecret.key=headers",
    )
    assert "--otlp-endpoint=http://otel-collector.observability:4318" in on["args"]
    assert "--otlp-protocol=http/protobuf" in on["args"]
    assert "--trace-sample-ratio=0.25" in on["args"]
    env = {e["name"]: e for e in on["env"]}
    assert env["OTEL_EXPORTER_OTLP_HEADERS"]["valueFrom"]["secretKeyRef"] == {"name": "otlp-auth", "key": "headers"}
    assert "k8s.pod.name=$(POD_NAME)" in env["OTEL_RESOURCE_ATTRIBUTES"]["value"]
    assert list(env).index("POD_NAME") < list(env).index("OTEL_RESOURCE_ATTRIBUTES"), "defined before use"
    for bad in ['gateway.tracing.endpoint="collector:4318"', 'gateway.tracing.protocol="grpc"', "gateway.tracing.sampleRatio=2"]:
        assert helm("template", "uprox", str(CHART), "--set-json", bad, check=False).returncode != 0, bad


def test_bad_values_are_refused_by_the_schema():
    result = helm("template", "uprox", str(CHART), "--set", "gateway.replicas=0", check=False)
    assert result.returncode != 0 and "replicas" in result.stderr
    result = helm("template", "uprox", str(CHART), "--set", "gateway.nosuchkey=1", check=False)
    assert result.returncode != 0


def test_notes_tell_how_to_make_the_first_call():
    result = helm("install", "uprox", str(CHART), "--dry-run=client", "--namespace", "uprox-system")
    assert "uprox-gateway.uprox-system.svc/v1" in result.stdout
    assert "MachineToken" in result.stdout


# --- Dashboard and alerts -------------------------------------------------------------------

DASHBOARD = ROOT / "config" / "grafana" / "uprox.json"
CHART_DASHBOARD = CHART / "dashboards" / "uprox.json"

# Every metric the dashboard and the alerts may query, by who exports it. Renaming a metric in
# the code without updating this list (and the dashboard and rules) fails the tests below.
GATEWAY_METRICS = {
    "uprox_requests_total",
    "uprox_cost_usd_total",
    "uprox_cache_hits_total",
    "uprox_cache_misses_total",
    "uprox_cache_saved_usd_total",
    "uprox_denials_total",
    "gen_ai_server_request_duration_seconds_bucket",
    "gen_ai_server_time_to_first_token_seconds_bucket",
    "gen_ai_client_token_usage_sum",
}
# Gateway-wide series, without the tenant's namespace and service labels (the scrape's target
# labels would stand in for them, so a tenant filter would empty the panel).
GATEWAY_PROCESS_METRICS = {
    "uprox_config_generation",
    "uprox_config_reloads_total",
    "uprox_requests_in_flight",
    "uprox_upstream_errors_total",
    "uprox_upstream_duration_seconds_bucket",
}
OPERATOR_METRICS = {
    "uprox_budget_spend_usd",
    "uprox_budget_limit_usd",
    "uprox_operator_reconcile_failures_total",
}
PROMETHEUS_METRICS = {"up"}
KNOWN_METRICS = GATEWAY_METRICS | GATEWAY_PROCESS_METRICS | OPERATOR_METRICS | PROMETHEUS_METRICS
# Per Service: every query of these carries the dashboard's namespace and service filters.
PER_SERVICE_METRICS = GATEWAY_METRICS
PER_NAMESPACE_METRICS = {"uprox_budget_spend_usd", "uprox_budget_limit_usd"}

ALERTS = {
    "UproxBudgetNearlySpent": "warning",
    "UproxBudgetExceeded": "critical",
    "UproxHighErrorRate": "warning",
    "UproxUpstreamErrors": "warning",
    "UproxConfigReloadFailing": "warning",
    "UproxOperatorReconcileFailures": "warning",
    "UproxGatewayDown": "critical",
}

PROMQL_KEYWORDS = {"and", "or", "unless", "bool", "offset"}


def metric_names(expr):
    """The metric names a PromQL expression reads: identifiers left once strings, label matchers,
    ranges and label lists are gone, without functions (followed by a parenthesis) and keywords."""
    e = re.sub(r'"(?:[^"\\]|\\.)*"', '""', expr)
    e = re.sub(r"\{[^}]*\}", " ", e)
    e = re.sub(r"\[[^\]]*\]", " ", e)
    e = re.sub(r"\b(by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", " ", e)
    names = set()
    for m in re.finditer(r"(?<![\w.])([A-Za-z_:][\w:]*)(\s*\()?", e):
        if not m.group(2) and m.group(1) not in PROMQL_KEYWORDS:
            names.add(m.group(1))
    return names


def selectors(expr, metric):
    """The label matchers of every use of `metric` in `expr` ('' when it has none)."""
    return [m.group(1) or "" for m in re.finditer(rf"(?<![\w:]){metric}(?![\w:])(\{{[^}}]*\}})?", expr)]


def dashboard():
    return json.loads(DASHBOARD.read_text())


def panels(dash):
    """Every panel but rows (which only group), rows' nested panels included."""
    for panel in dash["panels"]:
        if panel["type"] == "row":
            yield from panel.get("panels", [])
        else:
            yield panel


def dashboard_exprs(dash):
    for panel in panels(dash):
        for target in panel["targets"]:
            yield panel["title"], target["expr"]


def variable_exprs(dash):
    for var in dash["templating"]["list"]:
        if var["type"] == "query":
            query = var["query"]["query"] if isinstance(var["query"], dict) else var["query"]
            m = re.fullmatch(r"label_values\((.*),\s*(\w+)\)", query)
            assert m, f"variable {var['name']}: {query}"
            yield var["name"], m.group(1)


def prometheus_rule(*extra):
    rules = of_kind(render("--set", "prometheusRule.enabled=true", *extra), "PrometheusRule")
    assert len(rules) == 1
    return rules[0]


def alert_rules(rule):
    return [r for group in rule["spec"]["groups"] for r in group["rules"]]


def test_the_dashboard_parses_and_has_its_variables():
    dash = dashboard()
    assert dash["schemaVersion"] >= 39
    assert dash["uid"] and dash["title"]
    variables = {v["name"]: v for v in dash["templating"]["list"]}
    assert variables["datasource"]["type"] == "datasource"
    assert variables["datasource"]["query"] == "prometheus"
    assert dict(variable_exprs(dash)) == {
        "namespace": "uprox_requests_total",
        "service": 'uprox_requests_total{namespace=~"$namespace"}',
    }
    assert variables["namespace"]["definition"] == "label_values(uprox_requests_total, namespace)"
    for name in ("namespace", "service"):
        var = variables[name]
        assert var["multi"] is True and var["includeAll"] is True, name
        # All is a match-anything regex, not the list of known values, so that series without
        # the label (a denial before the Service is known) still show.
        assert var["allValue"] == ".*", name
        assert var["datasource"]["uid"] == "${datasource}", name


def test_every_dashboard_panel_has_a_title_a_description_and_a_query():
    dash = dashboard()
    found = list(panels(dash))
    assert len(found) >= 20
    ids = [p["id"] for p in dash["panels"]]
    assert len(ids) == len(set(ids)), "panel ids are unique"
    for panel in found:
        assert panel.get("title", "").strip(), panel
        assert panel.get("description", "").strip(), panel["title"]
        assert panel["type"] in {"timeseries", "stat", "bargauge", "table", "gauge"}, panel["title"]
        assert panel["datasource"]["uid"] == "${datasource}", panel["title"]
        assert panel["targets"], panel["title"]
        assert any(t.get("expr", "").strip() for t in panel["targets"]), panel["title"]
        for target in panel["targets"]:
            assert target["expr"].strip(), panel["title"]
            assert target["datasource"]["uid"] == "${datasource}", panel["title"]
    titles = [p["title"] for p in found]
    assert len(titles) == len(set(titles)), "panel titles are unique"


def test_the_dashboard_covers_what_the_gateway_exports():
    used = {name for _, expr in dashboard_exprs(dashboard()) for name in metric_names(expr)}
    assert used == KNOWN_METRICS - PROMETHEUS_METRICS, "a metric without a panel, or a panel on an unknown metric"


def test_every_per_service_query_is_filtered_by_namespace_and_service():
    for title, expr in dashboard_exprs(dashboard()):
        for metric in metric_names(expr):
            for matchers in selectors(expr, metric):
                if metric in PER_SERVICE_METRICS:
                    assert 'namespace=~"$namespace"' in matchers and 'service=~"$service"' in matchers, (title, expr)
                elif metric in PER_NAMESPACE_METRICS:
                    assert 'namespace=~"$namespace"' in matchers, (title, expr)
                elif metric in GATEWAY_PROCESS_METRICS:
                    assert "$namespace" not in matchers and "$service" not in matchers, (title, expr)


def test_the_dashboard_and_the_rules_use_only_known_metrics():
    exprs = list(dashboard_exprs(dashboard())) + list(variable_exprs(dashboard()))
    exprs += [(r["alert"], r["expr"]) for r in alert_rules(prometheus_rule())]
    for where, expr in exprs:
        unknown = metric_names(expr) - KNOWN_METRICS
        assert not unknown, f"{where}: unknown metrics {unknown} in {expr}"
    # The check itself finds names (and would see a renamed one).
    assert metric_names('sum by (le) (rate(uprox_foo_bucket{a="b"}[5m])) or up') == {"uprox_foo_bucket", "up"}


def test_the_chart_dashboard_is_config_grafana_uprox_json():
    assert CHART_DASHBOARD.read_bytes() == DASHBOARD.read_bytes(), (
        "charts/uprox/dashboards/uprox.json differs from config/grafana/uprox.json; copy it over"
    )


def test_the_dashboard_configmap_carries_the_dashboard():
    docs = render("--set", "grafana.dashboard.enabled=true")
    maps = [d for d in of_kind(docs, "ConfigMap") if d["metadata"]["name"] == "uprox-dashboard"]
    assert len(maps) == 1
    cm = maps[0]
    assert cm["metadata"]["namespace"] == "uprox-system"
    assert cm["metadata"]["labels"]["grafana_dashboard"] == "1", "what the Grafana sidecar looks for"
    assert cm["metadata"]["labels"]["app.kubernetes.io/part-of"] == "uprox"
    assert json.loads(cm["data"]["uprox.json"]) == dashboard()
    assert cm["data"]["uprox.json"] == DASHBOARD.read_text()

    moved = render(
        "--set", "grafana.dashboard.enabled=true",
        "--set", "grafana.dashboard.namespace=monitoring",
        "--set", "grafana.dashboard.labels.team=platform",
        "--set", "grafana.dashboard.annotations.grafana_folder=uprox",
    )
    cm = [d for d in of_kind(moved, "ConfigMap") if d["metadata"]["name"] == "uprox-dashboard"][0]
    assert cm["metadata"]["namespace"] == "monitoring"
    assert cm["metadata"]["labels"]["team"] == "platform" and cm["metadata"]["labels"]["grafana_dashboard"] == "1"
    assert cm["metadata"]["annotations"] == {"grafana_folder": "uprox"}


def test_the_prometheus_rule_has_every_alert():
    rule = prometheus_rule("--set", "prometheusRule.labels.release=kube-prometheus-stack")
    assert rule["apiVersion"] == "monitoring.coreos.com/v1"
    assert rule["metadata"]["namespace"] == "uprox-system"
    assert rule["metadata"]["labels"]["release"] == "kube-prometheus-stack", "to match the Prometheus' ruleSelector"
    rules = alert_rules(rule)
    assert {r["alert"]: r["labels"]["severity"] for r in rules} == ALERTS
    assert len(rules) == len(ALERTS)
    for r in rules:
        assert r["expr"].strip(), r["alert"]
        assert set(r) <= {"alert", "expr", "for", "labels", "annotations"}, r["alert"]
        if "for" in r:
            assert re.fullmatch(r"\d+[smh]", r["for"]), r["alert"]
        for annotation in ("summary", "description"):
            text = r["annotations"][annotation]
            # Names the object it is about, through the alert's labels.
            assert "{{ $labels." in text, (r["alert"], annotation)
            # Prometheus templates reached the rule intact (Helm did not eat them).
            assert text.count("{{") == text.count("}}"), (r["alert"], annotation)
    by_name = {r["alert"]: r for r in rules}
    assert ">= 0.8" in by_name["UproxBudgetNearlySpent"]["expr"] and by_name["UproxBudgetNearlySpent"]["for"] == "5m"
    assert ">= 1" in by_name["UproxBudgetExceeded"]["expr"]
    assert "> 0.05" in by_name["UproxHighErrorRate"]["expr"] and '[10m]' in by_name["UproxHighErrorRate"]["expr"]
    assert "by (namespace, service)" in by_name["UproxHighErrorRate"]["expr"]
    assert "by (provider)" in by_name["UproxUpstreamErrors"]["expr"] and by_name["UproxUpstreamErrors"]["for"] == "10m"
    assert 'result="failure"' in by_name["UproxConfigReloadFailing"]["expr"]


def test_gateway_down_watches_the_job_the_service_monitor_scrapes():
    docs = render(*ALL_ON)
    monitor = of_kind(docs, "ServiceMonitor")[0]
    services = [
        d for d in of_kind(docs, "Service")
        if d["metadata"]["labels"].items() >= monitor["spec"]["selector"]["matchLabels"].items()
    ]
    assert len(services) == 1
    down = {r["alert"]: r for r in alert_rules(of_kind(docs, "PrometheusRule")[0])}["UproxGatewayDown"]
    # The job of a ServiceMonitor's targets is the scraped Service's name.
    selector = f'up{{job="{services[0]["metadata"]["name"]}", namespace="uprox-system"}}'
    assert f"== 0" in down["expr"] and f"absent({selector})" in down["expr"], down["expr"]
    assert down["for"] == "5m"

    custom = prometheus_rule("--set", 'prometheusRule.gatewayUpSelector=job="llm-gateway"')
    down = {r["alert"]: r for r in alert_rules(custom)}["UproxGatewayDown"]
    assert 'absent(up{job="llm-gateway"})' in down["expr"]


def test_dashboards_and_rules_are_off_by_default():
    docs = render()
    assert not of_kind(docs, "PrometheusRule")
    assert not [d for d in of_kind(docs, "ConfigMap") if "grafana_dashboard" in d["metadata"].get("labels", {})]


@pytest.mark.skipif(shutil.which("promtool") is None, reason="promtool is not installed")
def test_the_rules_pass_promtool(tmp_path):
    path = tmp_path / "rules.yaml"
    path.write_text(yaml.safe_dump(prometheus_rule()["spec"]))
    result = subprocess.run(["promtool", "check", "rules", str(path)], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.skipif(shutil.which("promtool") is None, reason="promtool is not installed")
def test_the_dashboard_queries_parse(tmp_path):
    # Grafana's variables replaced by what they stand for, each query checked as a recording rule.
    def plain(expr):
        return expr.replace("$__range", "6h").replace("$namespace", ".*").replace("$service", ".*")

    rules = [{"record": f"uprox:dashboard:{i}", "expr": plain(expr)} for i, (_, expr) in enumerate(dashboard_exprs(dashboard()))]
    path = tmp_path / "dashboard.yaml"
    path.write_text(yaml.safe_dump({"groups": [{"name": "dashboard", "rules": rules}]}))
    result = subprocess.run(["promtool", "check", "rules", str(path)], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.skipif(shutil.which("promtool") is None, reason="promtool is not installed")
def test_the_alerts_fire_when_they_should(tmp_path):
    (tmp_path / "rules.yaml").write_text(yaml.safe_dump(prometheus_rule()["spec"]))
    budget = 'namespace="team", budget="b", window="daily"'
    tests = {
        "rule_files": ["rules.yaml"],
        "evaluation_interval": "1m",
        "tests": [
            {
                "interval": "1m",
                "input_series": [
                    # Two operator replicas export the same Budget.
                    {"series": f'uprox_budget_spend_usd{{{budget}, pod="op-0"}}', "values": "85x20"},
                    {"series": f'uprox_budget_spend_usd{{{budget}, pod="op-1"}}', "values": "85x20"},
                    {"series": f'uprox_budget_limit_usd{{{budget}, pod="op-0"}}', "values": "100x20"},
                    {"series": f'uprox_budget_limit_usd{{{budget}, pod="op-1"}}', "values": "100x20"},
                    # Service team/app: 10 % 5xx at 1 request/s; team/quiet: all 5xx, 1 request per 10 min.
                    {"series": 'uprox_requests_total{namespace="team", service="app", status_class="2xx"}', "values": "0+54x30"},
                    {"series": 'uprox_requests_total{namespace="team", service="app", status_class="5xx"}', "values": "0+6x30"},
                    {"series": 'uprox_requests_total{namespace="team", service="quiet", status_class="5xx"}', "values": "0+0.1x30"},
                    # No gateway target at all.
                ],
                "alert_rule_test": [
                    {
                        "eval_time": "10m",
                        "alertname": "UproxBudgetNearlySpent",
                        "exp_alerts": [{
                            "exp_labels": {"severity": "warning", "namespace": "team", "budget": "b", "window": "daily"},
                            "exp_annotations": {
                                "summary": "Budget team/b has spent 85% of its daily limit",
                                "description": "Budget team/b is at 85% of its daily limit (80 % or more for 5 minutes). "
                                "At 100 % the gateway refuses its Services' requests until the window ends.",
                            },
                        }],
                    },
                    {"eval_time": "10m", "alertname": "UproxBudgetExceeded", "exp_alerts": []},
                    {
                        "eval_time": "25m",
                        "alertname": "UproxHighErrorRate",
                        "exp_alerts": [{
                            "exp_labels": {"severity": "warning", "namespace": "team", "service": "app"},
                            "exp_annotations": {
                                "summary": "Service team/app answers 10% of its requests with 5xx",
                                "description": "More than 5 % of the requests of Service team/app failed with a 5xx status "
                                "over the last 10 minutes (10%). See the upstream errors by provider and key on the uprox dashboard.",
                            },
                        }],
                    },
                    {
                        "eval_time": "10m",
                        "alertname": "UproxGatewayDown",
                        "exp_alerts": [{
                            "exp_labels": {"severity": "critical", "job": "uprox-gateway", "namespace": "uprox-system"},
                            "exp_annotations": {
                                "summary": "uprox gateway uprox-system/uprox-gateway is down",
                                "description": "No target of uprox-system/uprox-gateway has answered a Prometheus scrape for "
                                "5 minutes (all down, or none discovered). Workloads calling the gateway are likely failing.",
                            },
                        }],
                    },
                ],
            }
        ],
    }
    (tmp_path / "tests.yaml").write_text(yaml.safe_dump(tests))
    result = subprocess.run(["promtool", "test", "rules", "tests.yaml"], capture_output=True, text=True, cwd=tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr
