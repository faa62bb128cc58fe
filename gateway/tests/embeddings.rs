//! `POST /v1/embeddings` and its Azure shapes end to end: passthrough to OpenAI-shaped
//! upstreams, Azure deployment URLs, the refusal for Anthropic, the `embeddings` scope, and the
//! mock provider's float and base64 vectors.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::sync::Arc;

use base64::Engine as _;
use common::{Harness, PROVIDER_KEY, Seen, TOKEN, Upstream, error_of, manifests, reply};
use http::Response;
use uprox_gateway::body::Body;

const EMBED: &str = r#"{"model":"gpt-embed","input":["one","two"],"x_vendor_extension":{"keep":[1,2,3]}}"#;

/// An upstream answering `/v1/embeddings` (and Azure's `/openai/deployments/{d}/embeddings`)
/// with the mock's vectors; anything else is a 404.
async fn embeddings_upstream() -> Upstream {
    Upstream::start(Arc::new(|s: Seen| {
        Box::pin(async move {
            if s.path == "/v1/embeddings"
                || (s.path.starts_with("/openai/deployments/") && s.path.ends_with("/embeddings"))
            {
                let body = if s.path.starts_with("/openai/") {
                    // Azure reads the deployment from the URL: answer with it as the model.
                    let mut v: serde_json::Value = serde_json::from_slice(&s.body).unwrap();
                    v["model"] = "azure-deployment".into();
                    serde_json::to_vec(&v).unwrap()
                } else {
                    s.body.to_vec()
                };
                uprox_gateway::providers::mock::embeddings(&body).unwrap()
            } else {
                reply(
                    404,
                    "application/json",
                    r#"{"error":{"message":"no","type":"not_found","param":null,"code":null}}"#,
                )
            }
        }) as futures_util::future::BoxFuture<'static, Response<Body>>
    }))
    .await
}

fn floats(v: &serde_json::Value) -> Vec<f32> {
    v.as_array().unwrap().iter().map(|x| x.as_f64().unwrap() as f32).collect()
}

#[tokio::test]
async fn openai_compatible_embeddings_are_forwarded_untouched_with_the_provider_key() {
    let upstream = embeddings_upstream().await;
    let h = Harness::start(&manifests(&upstream.base_url())).await;
    let r = h.post("/v1/embeddings", Some(TOKEN), EMBED).await;
    assert_eq!(r.status(), 200);
    assert!(r.headers().contains_key("x-request-id"));
    let v: serde_json::Value = r.json().await.unwrap();
    assert_eq!(v["object"], "list");
    assert_eq!(v["data"].as_array().unwrap().len(), 2);
    assert_eq!(v["model"], "gpt-embed");

    let seen = upstream.seen.lock().unwrap().clone();
    assert_eq!(seen.len(), 1);
    assert_eq!(seen[0].path, "/v1/embeddings");
    assert_eq!(seen[0].authorization.as_deref(), Some(format!("Bearer {PROVIDER_KEY}").as_str()));
    assert_eq!(seen[0].body.as_ref(), EMBED.as_bytes(), "the body is forwarded byte for byte");
}

#[tokio::test]
async fn the_mock_answers_float_and_base64_with_the_same_numbers() {
    let h = Harness::start(&manifests("http://127.0.0.1:9/v1")).await;
    let r = h.post("/v1/embeddings", Some(TOKEN), r#"{"model":"mock-1","input":"hello","dimensions":16}"#).await;
    assert_eq!(r.status(), 200);
    assert_eq!(r.headers()["content-type"], "application/json");
    let float: serde_json::Value = r.json().await.unwrap();
    let vector = floats(&float["data"][0]["embedding"]);
    assert_eq!(vector.len(), 16);
    assert_eq!(float["model"], "mock-1");
    assert_eq!(float["usage"]["prompt_tokens"], 2);

    let r = h
        .post(
            "/v1/embeddings",
            Some(TOKEN),
            r#"{"model":"mock-1","input":"hello","dimensions":16,"encoding_format":"base64"}"#,
        )
        .await;
    assert_eq!(r.status(), 200);
    let b64: serde_json::Value = r.json().await.unwrap();
    let bytes =
        base64::engine::general_purpose::STANDARD.decode(b64["data"][0]["embedding"].as_str().unwrap()).unwrap();
    let decoded: Vec<f32> = bytes.chunks_exact(4).map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]])).collect();
    assert_eq!(decoded, vector);

    // Default length, and the deployment URL naming a mock model.
    let r = h.post("/openai/deployments/mock-1/embeddings", Some(TOKEN), r#"{"input":"hello"}"#).await;
    assert_eq!(r.status(), 200);
    let v: serde_json::Value = r.json().await.unwrap();
    assert_eq!(v["data"][0]["embedding"].as_array().unwrap().len(), 8);
    assert_eq!(v["model"], "mock-1");

    // Invalid requests are OpenAI-shaped 400s naming the field.
    for (body, param) in [
        (r#"{"model":"mock-1","input":[]}"#, "input"),
        (r#"{"model":"mock-1","input":"x","dimensions":0}"#, "dimensions"),
        (r#"{"model":"mock-1","input":"x","encoding_format":"hex"}"#, "encoding_format"),
        (r#"{"input":"x"}"#, "model"),
    ] {
        let r = h.post("/v1/embeddings", Some(TOKEN), body).await;
        assert_eq!(r.status(), 400, "{body}");
        assert_eq!(error_of(r).await["param"], param, "{body}");
    }
    let r = h.client.get(h.url("/v1/embeddings")).bearer_auth(TOKEN).send().await.unwrap();
    assert_eq!(r.status(), 405);
}

fn azure_manifests(azure: &Upstream, compatible: &Upstream) -> String {
    format!(
        r#"
apiVersion: uprox.dev/v1alpha1
kind: Provider
metadata: {{name: azure, namespace: team}}
spec:
  type: azure
  apiVersion: "2024-06-01"
  models: ["text-embedding-3-small"]
  keys: [{{label: east, endpoint: "http://{azure}", secretRef: {{name: keys, key: azure}}}}]
---
apiVersion: uprox.dev/v1alpha1
kind: Provider
metadata: {{name: compatible, namespace: team}}
spec:
  type: openai-compatible
  baseUrl: "http://{compatible}/v1"
  models: ["llama-*"]
  keys: [{{label: main, secretRef: {{name: keys, key: compatible}}}}]
---
apiVersion: uprox.dev/v1alpha1
kind: Provider
metadata: {{name: claude, namespace: team}}
spec:
  type: anthropic
  baseUrl: "http://{compatible}"
  models: ["claude-*"]
  keys: [{{label: main, secretRef: {{name: keys, key: compatible}}}}]
---
apiVersion: v1
kind: Secret
metadata: {{name: keys, namespace: team}}
stringData: {{azure: key-azure, compatible: "{PROVIDER_KEY}"}}
"#,
        azure = azure.addr,
        compatible = compatible.addr,
    ) + &common::identity()
}

#[tokio::test]
async fn azure_routes_reach_the_deployments_embeddings_url() {
    let (azure, compatible) = (embeddings_upstream().await, embeddings_upstream().await);
    let h = Harness::start(&azure_manifests(&azure, &compatible)).await;
    let body = r#"{"input":"hello"}"#;

    let r = h
        .client
        .post(h.url("/openai/deployments/text-embedding-3-small/embeddings?api-version=2024-10-21"))
        .header("api-key", TOKEN)
        .body(body)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let v: serde_json::Value = r.json().await.unwrap();
    assert_eq!(v["model"], "azure-deployment");
    let seen = azure.seen.lock().unwrap()[0].clone();
    assert_eq!(seen.path, "/openai/deployments/text-embedding-3-small/embeddings");
    assert_eq!(seen.query.as_deref(), Some("api-version=2024-06-01"));
    assert_eq!(seen.headers["api-key"], "key-azure");
    assert!(seen.authorization.is_none());
    assert_eq!(seen.body.as_ref(), body.as_bytes(), "Azure reads the deployment from the URL: the body is untouched");

    // The flat and v1 routes take the model from the body.
    let named = r#"{"model":"text-embedding-3-small","input":["a","b"]}"#;
    for path in ["/openai/embeddings?api-version=2024-10-21", "/openai/v1/embeddings"] {
        let r = h.post(path, Some(TOKEN), named).await;
        assert_eq!(r.status(), 200, "{path}");
        let v: serde_json::Value = r.json().await.unwrap();
        assert_eq!(v["data"].as_array().unwrap().len(), 2);
    }
    let seen = azure.seen.lock().unwrap().clone();
    assert_eq!(seen.len(), 3);
    assert!(seen.iter().all(|s| s.path == "/openai/deployments/text-embedding-3-small/embeddings"));

    // A deployment URL routed to an OpenAI-shaped provider puts the model in the body.
    let r = h.post("/openai/deployments/llama-embed/embeddings", Some(TOKEN), body).await;
    assert_eq!(r.status(), 200);
    let seen = compatible.seen.lock().unwrap()[0].clone();
    assert_eq!(seen.path, "/v1/embeddings");
    let sent: serde_json::Value = serde_json::from_slice(&seen.body).unwrap();
    assert_eq!(sent["model"], "llama-embed");
    assert_eq!(sent["input"], "hello");
}

#[tokio::test]
async fn anthropic_models_have_no_embeddings() {
    let (azure, compatible) = (embeddings_upstream().await, embeddings_upstream().await);
    let h = Harness::start(&azure_manifests(&azure, &compatible)).await;
    let r = h.post("/v1/embeddings", Some(TOKEN), r#"{"model":"claude-x","input":"hello"}"#).await;
    assert_eq!(r.status(), 400);
    let e = error_of(r).await;
    assert!(e["message"].as_str().unwrap().contains("Anthropic has no embeddings API"), "{e}");
    assert!(e["message"].as_str().unwrap().contains("claude-x"), "{e}");
    assert_eq!(e["param"], "model");
    assert_eq!(e["type"], "invalid_request_error");
    assert!(compatible.seen.lock().unwrap().is_empty());
}

#[tokio::test]
async fn a_token_without_the_embeddings_scope_is_refused() {
    let yaml =
        "apiVersion: uprox.dev/v1alpha1\nkind: Provider\nmetadata: {name: mock, namespace: team}\nspec: {type: mock}\n"
            .to_owned()
            + &common::identity_with("{}", ", scopes: [chat]");
    let h = Harness::start(&yaml).await;
    let r = h.post("/v1/embeddings", Some(TOKEN), r#"{"model":"mock-1","input":"hello"}"#).await;
    assert_eq!(r.status(), 403);
    let e = error_of(r).await;
    assert!(e["message"].as_str().unwrap().contains("embeddings"), "{e}");
    let r = h.post("/openai/deployments/mock-1/embeddings", Some(TOKEN), r#"{"input":"hello"}"#).await;
    assert_eq!(r.status(), 403);
    let r = h.chat(r#"{"model":"mock-1","messages":[{"role":"user","content":"hi"}]}"#).await;
    assert_eq!(r.status(), 200, "the chat scope still works");
}

#[tokio::test]
async fn the_mock_takes_every_input_form_and_answers_the_encoding_asked_for() {
    let h = Harness::start(&manifests("http://127.0.0.1:9/v1")).await;
    let h = &h;
    let embed = |body: &'static str| async move {
        let r = h.post("/v1/embeddings", Some(TOKEN), body).await;
        assert_eq!(r.status(), 200, "{body}");
        r.json::<serde_json::Value>().await.unwrap()
    };
    // The four input forms: one string, strings, token ids, arrays of token ids.
    for (body, items, tokens) in [
        (r#"{"model":"mock-1","input":"hello"}"#, 1, 2),
        (r#"{"model":"mock-1","input":["a","bb","ccc"]}"#, 3, 3),
        (r#"{"model":"mock-1","input":[101,2023,102]}"#, 1, 3),
        (r#"{"model":"mock-1","input":[[101,2023],[102]]}"#, 2, 3),
    ] {
        let v = embed(body).await;
        let data = v["data"].as_array().unwrap();
        assert_eq!(data.len(), items, "{body}");
        assert!(data.iter().enumerate().all(|(i, d)| d["index"] == i && d["object"] == "embedding"), "{body}");
        assert_eq!(v["usage"]["prompt_tokens"], tokens, "{body}");
    }
    let ids = embed(r#"{"model":"mock-1","input":[101,2023,102]}"#).await;
    let nested = embed(r#"{"model":"mock-1","input":[[101,2023,102],[7]]}"#).await;
    assert_eq!(ids["data"][0]["embedding"], nested["data"][0]["embedding"], "the same ids, the same vector");

    // No encoding_format is OpenAI's default, float; float and base64 are answered as asked.
    let omitted = embed(r#"{"model":"mock-1","input":"hello","dimensions":4}"#).await;
    let float = embed(r#"{"model":"mock-1","input":"hello","dimensions":4,"encoding_format":"float"}"#).await;
    let b64 = embed(r#"{"model":"mock-1","input":"hello","dimensions":4,"encoding_format":"base64"}"#).await;
    assert!(omitted["data"][0]["embedding"].is_array());
    assert_eq!(omitted, float);
    let encoded = b64["data"][0]["embedding"].as_str().expect("base64 is a string");
    let bytes = base64::engine::general_purpose::STANDARD.decode(encoded).unwrap();
    let decoded: Vec<f32> = bytes.chunks_exact(4).map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]])).collect();
    assert_eq!(decoded, floats(&float["data"][0]["embedding"]));
    assert_eq!(decoded.len(), 4, "dimensions is honoured");
}

#[tokio::test]
async fn token_inputs_and_the_encoding_reach_an_openai_shaped_upstream_untouched() {
    let upstream = embeddings_upstream().await;
    let h = Harness::start(&manifests(&upstream.base_url())).await;
    let body = r#"{"model":"gpt-embed","input":[[1,2,3],[4]],"encoding_format":"base64","dimensions":5}"#;
    let r = h.post("/v1/embeddings", Some(TOKEN), body).await;
    assert_eq!(r.status(), 200);
    let v: serde_json::Value = r.json().await.unwrap();
    assert_eq!(v["data"].as_array().unwrap().len(), 2);
    assert!(v["data"][0]["embedding"].is_string(), "base64 as asked");
    assert_eq!(upstream.seen.lock().unwrap()[0].body.as_ref(), body.as_bytes());
}
