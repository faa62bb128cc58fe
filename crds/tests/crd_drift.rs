//! The committed CRD YAML (`crds/*.yaml`) must be exactly what `crdgen` renders from the types,
//! and every CRD must follow the project's conventions: category `uprox`, a short name that no
//! core kind uses, and a status subresource.
//!
//! This test only compares and inspects; regenerating is `cargo run -p uprox-crds --bin crdgen`.

use std::path::Path;

use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::CustomResourceExt;
use uprox_crds::{Budget, MachineToken, Policy, Provider, Service};

type TestResult = Result<(), Box<dyn std::error::Error>>;

/// Short names of built-in kinds (`kubectl api-resources`); ours must not shadow any.
const CORE_SHORT_NAMES: &[&str] = &[
    "svc", "po", "cm", "ns", "no", "pv", "pvc", "ep", "ev", "sa", "rc", "ds", "deploy", "rs", "sts", "hpa", "cj",
    "crd", "csr", "ing", "netpol", "pdb", "pc", "sc", "limits", "quota",
];

fn crds() -> [CustomResourceDefinition; 5] {
    [Provider::crd(), Service::crd(), MachineToken::crd(), Policy::crd(), Budget::crd()]
}

#[test]
fn committed_crd_yaml_is_up_to_date() -> TestResult {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"));
    let rendered = uprox_crds::crdgen::render()?;
    assert_eq!(rendered.len(), crds().len(), "crdgen must render every CRD");
    for (file, yaml) in rendered {
        let committed = std::fs::read_to_string(dir.join(&file)).unwrap_or_default();
        assert!(
            committed == yaml,
            "CRD YAML is stale: run `cargo run -p uprox-crds --bin crdgen` (crds/{file} differs from the types)"
        );
        let in_chart = std::fs::read_to_string(dir.join("../charts/uprox/crds").join(&file)).unwrap_or_default();
        assert!(
            in_chart == yaml,
            "the Helm chart's CRDs differ from the types: run `cargo run -p uprox-crds --bin crdgen` \
             (charts/uprox/crds/{file})"
        );
    }
    Ok(())
}

#[test]
fn every_crd_has_the_category_a_short_name_and_a_status_subresource() {
    for crd in crds() {
        let names = &crd.spec.names;
        let kind = &names.kind;
        assert!(names.categories.as_deref().unwrap_or_default().iter().any(|c| c == "uprox"), "{kind}: category uprox");
        let short = names.short_names.as_deref().unwrap_or_default();
        assert!(!short.is_empty(), "{kind}: needs a short name");
        for name in short {
            assert!(!CORE_SHORT_NAMES.contains(&name.as_str()), "{kind}: short name {name} clashes with a core kind");
        }
        assert!(!crd.spec.versions.is_empty(), "{kind}: no versions");
        for version in &crd.spec.versions {
            let status = version.subresources.as_ref().and_then(|s| s.status.as_ref());
            assert!(status.is_some(), "{kind} {}: needs the status subresource", version.name);
        }
    }
}

#[test]
fn short_names_are_unique_across_uprox_kinds() {
    let mut all: Vec<String> = crds().into_iter().flat_map(|c| c.spec.names.short_names.unwrap_or_default()).collect();
    let count = all.len();
    all.sort();
    all.dedup();
    assert_eq!(all.len(), count, "two uprox kinds share a short name: {all:?}");
}
