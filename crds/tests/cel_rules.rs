//! The CRDs' CEL rules (`x-kubernetes-validations`), evaluated client-side with kube's CEL
//! engine: the sample manifests pass, and each broken variant is refused with its message —
//! the same verdict the API server gives on `kubectl apply`.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use kube::core::cel::{validate_cel, validate_cel_update};
use serde::Deserialize as _;
use uprox_crds::{Budget, MachineToken, Policy, Provider, Service};

fn samples() -> Vec<serde_json::Value> {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../config/samples");
    let mut docs = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap() {
        let text = std::fs::read_to_string(entry.unwrap().path()).unwrap();
        for doc in serde_yaml::Deserializer::from_str(&text) {
            docs.push(serde_json::Value::deserialize(doc).unwrap());
        }
    }
    docs
}

fn provider(spec: serde_json::Value) -> Provider {
    serde_json::from_value(serde_json::json!({
        "apiVersion": "uprox.dev/v1alpha1", "kind": "Provider",
        "metadata": {"name": "p", "namespace": "ns"}, "spec": spec
    }))
    .unwrap()
}

fn refused(result: Result<(), impl std::fmt::Display>, needle: &str) {
    match result {
        Ok(()) => panic!("expected a refusal mentioning {needle:?}"),
        Err(e) => assert!(e.to_string().contains(needle), "{e} should mention {needle:?}"),
    }
}

#[test]
fn every_sample_passes_its_rules() {
    let mut checked = 0;
    for doc in samples() {
        let result = match doc["kind"].as_str().unwrap() {
            "Provider" => validate_cel(&serde_json::from_value::<Provider>(doc).unwrap()),
            "Service" => validate_cel(&serde_json::from_value::<Service>(doc).unwrap()),
            "MachineToken" => validate_cel(&serde_json::from_value::<MachineToken>(doc).unwrap()),
            "Policy" => validate_cel(&serde_json::from_value::<Policy>(doc).unwrap()),
            "Budget" => validate_cel(&serde_json::from_value::<Budget>(doc).unwrap()),
            _ => continue,
        };
        result.unwrap();
        checked += 1;
    }
    assert!(checked >= 6, "the samples should hold every kind");
}

#[test]
fn provider_rules() {
    let key = serde_json::json!({"label": "main", "secretRef": {"name": "s", "key": "k"}});
    validate_cel(&provider(serde_json::json!({"type": "mock"}))).unwrap();
    validate_cel(&provider(serde_json::json!({"type": "openai", "keys": [key]}))).unwrap();
    refused(validate_cel(&provider(serde_json::json!({"type": "openai"}))), "at least one entry in spec.keys");
    refused(
        validate_cel(&provider(serde_json::json!({"type": "openai-compatible", "keys": [key], "models": ["*"]}))),
        "needs spec.baseUrl",
    );
    refused(
        validate_cel(&provider(serde_json::json!({"type": "azure", "keys": [key], "models": ["gpt-4o"]}))),
        "endpoint on every key",
    );
    let azure_key = serde_json::json!({"label": "eu", "secretRef": {"name": "s", "key": "k"}, "endpoint": "https://eu.openai.azure.com"});
    validate_cel(&provider(serde_json::json!({"type": "azure", "keys": [azure_key], "models": ["gpt-4o"]}))).unwrap();
    refused(validate_cel(&provider(serde_json::json!({"type": "azure", "keys": [azure_key]}))), "deployment names");
    refused(
        validate_cel(&provider(serde_json::json!({"type": "openai", "keys": [key, key]}))),
        "labels must be unique",
    );
    let price = serde_json::json!({"model": "gpt-4o*", "inputPerMTok": "2.50", "outputPerMTok": "10"});
    validate_cel(&provider(serde_json::json!({"type": "mock", "prices": [price]}))).unwrap();
    refused(
        validate_cel(&provider(serde_json::json!({"type": "mock", "prices": [price, price]}))),
        "each model pattern may appear only once",
    );
}

#[test]
fn budget_needs_a_ceiling() {
    let budget = |spec: serde_json::Value| -> Budget {
        serde_json::from_value(serde_json::json!({
            "apiVersion": "uprox.dev/v1alpha1", "kind": "Budget",
            "metadata": {"name": "b", "namespace": "ns"}, "spec": spec
        }))
        .unwrap()
    };
    validate_cel(&budget(serde_json::json!({"services": ["a"], "dailyUSD": "5"}))).unwrap();
    refused(validate_cel(&budget(serde_json::json!({"services": ["a"]}))), "dailyUSD");
}

#[test]
fn a_token_cannot_move_to_another_service() {
    let token = |service: &str| -> MachineToken {
        serde_json::from_value(serde_json::json!({
            "apiVersion": "uprox.dev/v1alpha1", "kind": "MachineToken",
            "metadata": {"name": "t", "namespace": "ns"}, "spec": {"service": service}
        }))
        .unwrap()
    };
    validate_cel_update(&token("a"), &token("a")).unwrap();
    refused(validate_cel_update(&token("b"), &token("a")), "immutable");
}
