"""The manifests as the API server would judge them, checked offline.

- The generated CRDs are valid apiextensions.k8s.io/v1 objects for the oldest Kubernetes we
  support (kubernetes-validate, strict: unknown fields are errors).
- Every uprox resource in config/samples validates against the openAPIV3Schema of its CRD
  (types, enums, patterns, ranges, required fields), and a broken variant does not — so the
  schema checks have teeth. CEL rules are evaluated by the Rust test crds/tests/cel_rules.rs.
"""

from __future__ import annotations

import copy
import pathlib
import subprocess
import sys

import jsonschema
import pytest
import yaml

ROOT = pathlib.Path(__file__).resolve().parents[2]
CRD_FILES = sorted((ROOT / "crds").glob("*.yaml"))
SAMPLES = sorted((ROOT / "config" / "samples").glob("*.yaml"))
OLDEST_KUBERNETES = "1.33.0"


def crd_schemas() -> dict[str, dict]:
    schemas = {}
    for path in CRD_FILES:
        crd = yaml.safe_load(path.read_text())
        kind = crd["spec"]["names"]["kind"]
        (version,) = [v for v in crd["spec"]["versions"] if v["served"] and v["storage"]]
        schemas[kind] = version["schema"]["openAPIV3Schema"]
    return schemas


def sample_resources() -> list[dict]:
    docs = []
    for path in SAMPLES:
        docs.extend(d for d in yaml.safe_load_all(path.read_text()) if d)
    return [d for d in docs if d.get("apiVersion", "").startswith("uprox.dev/")]


def validate(resource: dict) -> None:
    schema = crd_schemas()[resource["kind"]]
    jsonschema.Draft7Validator(schema).validate(resource)


def test_there_is_a_crd_per_kind() -> None:
    assert set(crd_schemas()) == {"Provider", "Service", "MachineToken", "Policy", "Budget"}


def test_crds_are_valid_kubernetes_objects() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "kubernetes_validate", "--strict", "-k", OLDEST_KUBERNETES, *map(str, CRD_FILES)],
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.parametrize("resource", sample_resources(), ids=lambda r: f"{r['kind']}/{r['metadata']['name']}")
def test_samples_match_their_schema(resource: dict) -> None:
    validate(resource)


def by_kind(kind: str) -> dict:
    return copy.deepcopy(next(r for r in sample_resources() if r["kind"] == kind))


@pytest.mark.parametrize(
    ("kind", "path", "value"),
    [
        ("Policy", ("spec", "models"), ["*gpt"]),  # a glob may only end in *
        ("Provider", ("spec", "type"), "bedrock"),  # not a provider type
        ("Provider", ("spec", "baseUrl"), "ftp://example.com"),  # http(s) only
        ("Budget", ("spec", "dailyUSD"), "5.1234567"),  # at most six decimals
        ("Budget", ("spec", "action"), "Throttle"),  # Block or Alert
        ("Budget", ("spec", "services"), []),  # at least one Service
        ("MachineToken", ("spec", "scopes"), ["admin"]),  # not a scope
        ("Service", ("spec", "cacheTtlSeconds"), -1),  # no negative TTL
    ],
)
def test_broken_resources_are_refused(kind: str, path: tuple[str, ...], value: object) -> None:
    resource = by_kind(kind)
    target = resource
    for key in path[:-1]:
        target = target[key]
    target[path[-1]] = value
    with pytest.raises(jsonschema.ValidationError):
        validate(resource)
