//! Azure OpenAI: every URL shape the Azure SDKs build reaches the gateway, and `azure`
//! Providers are called at `{endpoint}/openai/deployments/{deployment}/chat/completions` with
//! `api-key` and `api-version`, each key at its own resource's endpoint.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::sync::Arc;

use common::{Harness, Seen, TOKEN, Upstream};
use http::{HeaderValue, Response, StatusCode, header};
use uprox_gateway::body::{Body, full};

/// A fake Azure resource: answers deployment URLs like OpenAI, refuses anything else.
async fn azure_resource(key: &'static str, status: u16) -> Upstream {
    Upstream::start(Arc::new(move |seen: Seen| {
        Box::pin(async move {
            let ok_key = seen.headers.get("api-key").and_then(|v| v.to_str().ok()) == Some(key);
            let ok_path = seen.path.starts_with("/openai/deployments/") && seen.path.ends_with("/chat/completions");
            if !ok_key || !ok_path || seen.authorization.is_some() {
                let mut r = Response::new(full(r#"{"error":{"code":"401","message":"Access denied"}}"#));
                *r.status_mut() = StatusCode::UNAUTHORIZED;
                return r;
            }
            if status != 200 {
                let mut r: Response<Body> = Response::new(full(
                    r#"{"error":{"message":"busy","type":"server_error","param":null,"code":null}}"#,
                ));
                *r.status_mut() = StatusCode::from_u16(status).unwrap();
                r.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
                return r;
            }
            uprox_gateway::providers::mock::respond(&seen.body, Some("azure-deployment")).unwrap()
        }) as futures_util::future::BoxFuture<'static, Response<Body>>
    }))
    .await
}

fn manifests(east: &Upstream, west: &Upstream, compatible: &Upstream) -> String {
    format!(
        r#"
apiVersion: uprox.dev/v1alpha1
kind: Provider
metadata: {{name: azure, namespace: team}}
spec:
  type: azure
  apiVersion: "2024-06-01"
  models: ["gpt4o", "gpt4o-mini"]
  keys:
    - {{label: east, priority: 10, endpoint: "http://{east}", secretRef: {{name: azure-keys, key: east}}}}
    - {{label: west, priority: 1, endpoint: "http://{west}", secretRef: {{name: azure-keys, key: west}}}}
---
apiVersion: v1
kind: Secret
metadata: {{name: azure-keys, namespace: team}}
stringData: {{east: key-east, west: key-west}}
---
apiVersion: uprox.dev/v1alpha1
kind: Provider
metadata: {{name: compatible, namespace: team}}
spec:
  type: openai-compatible
  baseUrl: "http://{compatible}/v1"
  models: ["llama-*"]
  keys: [{{label: main, secretRef: {{name: azure-keys, key: east}}}}]
"#,
        east = east.addr,
        west = west.addr,
        compatible = compatible.addr,
    ) + &common::identity()
}

const BODY: &str = r#"{"messages":[{"role":"user","content":"hi"}]}"#;

#[tokio::test]
async fn every_azure_sdk_url_shape_works() {
    let (east, west, compatible) =
        (azure_resource("key-east", 200).await, azure_resource("key-west", 200).await, Upstream::openai_like().await);
    let h = Harness::start(&manifests(&east, &west, &compatible)).await;

    // The deployment route, as AzureOpenAI builds it, with the token in api-key.
    let r = h
        .client
        .post(h.url("/openai/deployments/gpt4o/chat/completions?api-version=2024-10-21"))
        .header("api-key", TOKEN)
        .body(BODY)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let seen = east.seen.lock().unwrap()[0].clone();
    assert_eq!(seen.path, "/openai/deployments/gpt4o/chat/completions");
    assert_eq!(seen.query.as_deref(), Some("api-version=2024-06-01"), "the Provider's api-version, not the client's");
    assert_eq!(seen.body.as_ref(), BODY.as_bytes(), "Azure reads the deployment from the URL: the body is untouched");

    // The flat and v1 routes take the model from the body.
    for path in ["/openai/chat/completions?api-version=2024-10-21", "/openai/v1/chat/completions"] {
        let r =
            h.post(path, Some(TOKEN), r#"{"model":"gpt4o-mini","messages":[{"role":"user","content":"hi"}]}"#).await;
        assert_eq!(r.status(), 200, "{path}");
    }
    assert!(east.seen.lock().unwrap().iter().any(|s| s.path == "/openai/deployments/gpt4o-mini/chat/completions"));

    // Model listings under /openai.
    for path in ["/openai/models", "/openai/v1/models"] {
        let r = h.client.get(h.url(path)).header("api-key", TOKEN).send().await.unwrap();
        let v: serde_json::Value = r.json().await.unwrap();
        let ids: Vec<&str> = v["data"].as_array().unwrap().iter().map(|m| m["id"].as_str().unwrap()).collect();
        assert_eq!(ids, ["gpt4o", "gpt4o-mini"], "{path}");
    }
    assert!(west.seen.lock().unwrap().is_empty(), "the preferred key's resource serves");
}

#[tokio::test]
async fn each_key_calls_its_own_resource_and_fails_over_to_the_next() {
    let (east, west, compatible) =
        (azure_resource("key-east", 503).await, azure_resource("key-west", 200).await, Upstream::openai_like().await);
    let h = Harness::start(&manifests(&east, &west, &compatible)).await;
    let r = h.post("/openai/deployments/gpt4o/chat/completions", Some(TOKEN), BODY).await;
    assert_eq!(r.status(), 200, "east answers 503, west serves");
    assert_eq!(east.seen.lock().unwrap().len(), 1);
    assert_eq!(west.seen.lock().unwrap().len(), 1);
}

#[tokio::test]
async fn a_deployment_url_can_reach_any_provider_which_then_gets_the_model_in_the_body() {
    let (east, west, compatible) =
        (azure_resource("key-east", 200).await, azure_resource("key-west", 200).await, Upstream::openai_like().await);
    let h = Harness::start(&manifests(&east, &west, &compatible)).await;
    let r = h.post("/openai/deployments/llama-3/chat/completions", Some(TOKEN), BODY).await;
    assert_eq!(r.status(), 200);
    let seen = compatible.seen.lock().unwrap()[0].clone();
    let sent: serde_json::Value = serde_json::from_slice(&seen.body).unwrap();
    assert_eq!(sent["model"], "llama-3");
    assert_eq!(sent["messages"][0]["content"], "hi");

    let r = h.post("/openai/deployments/bad%2Fname/chat/completions", Some(TOKEN), BODY).await;
    assert_eq!(r.status(), 404, "an unknown deployment is an unknown model");
}
