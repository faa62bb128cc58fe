//! Scopes end to end: every endpoint needs exactly its scope, from the MachineToken and from
//! every Policy attached to its Service or to itself; a missing one is a 403 `permission_error`
//! naming the scope (Anthropic-shaped on the Messages routes). `embeddings` is covered in
//! `embeddings.rs`.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::sync::Arc;

use common::{Harness, Seen, TOKEN, Upstream, error_of, reply};

const CHAT: &str = r#"{"model":"mock-1","messages":[{"role":"user","content":"hi"}]}"#;
const MESSAGES: &str = r#"{"model":"claude-x","max_tokens":10,"messages":[{"role":"user","content":"hi"}]}"#;

/// A fake Anthropic that answers every Messages request.
async fn fake_anthropic() -> Upstream {
    Upstream::start(Arc::new(|s: Seen| {
        Box::pin(async move {
            if s.path == "/v1/messages/count_tokens" {
                reply(200, "application/json", r#"{"input_tokens":3}"#)
            } else {
                reply(
                    200,
                    "application/json",
                    r#"{"id":"msg_1","type":"message","role":"assistant","model":"claude-x","content":[{"type":"text","text":"hi"}],"stop_reason":"end_turn","stop_sequence":null,"usage":{"input_tokens":3,"output_tokens":1}}"#,
                )
            }
        })
    }))
    .await
}

/// A mock and an anthropic Provider; the Service's spec and the token's extra fields as given.
fn manifests(anthropic: &Upstream, service_spec: &str, token_extra: &str) -> String {
    format!(
        r#"
apiVersion: uprox.dev/v1alpha1
kind: Provider
metadata: {{name: mock, namespace: team}}
spec: {{type: mock}}
---
apiVersion: uprox.dev/v1alpha1
kind: Provider
metadata: {{name: claude, namespace: team}}
spec:
  type: anthropic
  baseUrl: "http://{addr}"
  models: ["claude-*"]
  keys: [{{label: main, secretRef: {{name: keys, key: anthropic}}}}]
---
apiVersion: v1
kind: Secret
metadata: {{name: keys, namespace: team}}
stringData: {{anthropic: sk-ant-key}}
---
apiVersion: uprox.dev/v1alpha1
kind: Policy
metadata: {{name: chat-only, namespace: team}}
spec: {{scopes: [chat]}}
"#,
        addr = anthropic.addr
    ) + &common::identity_with(service_spec, token_extra)
}

async fn get(h: &Harness, path: &str) -> reqwest::Response {
    h.client.get(h.url(path)).bearer_auth(TOKEN).send().await.unwrap()
}

async fn anthropic(h: &Harness, path: &str) -> reqwest::Response {
    h.client
        .post(h.url(path))
        .header("x-api-key", TOKEN)
        .header("anthropic-version", "2023-06-01")
        .header("content-type", "application/json")
        .body(MESSAGES)
        .send()
        .await
        .unwrap()
}

/// The message of an OpenAI-shaped 403.
async fn denied(response: reqwest::Response) -> String {
    assert_eq!(response.status(), 403);
    let e = error_of(response).await;
    assert_eq!(e["type"], "permission_error");
    e["message"].as_str().unwrap().to_owned()
}

/// The message of an Anthropic-shaped 403.
async fn denied_anthropic(response: reqwest::Response) -> String {
    assert_eq!(response.status(), 403);
    let v: serde_json::Value = response.json().await.unwrap();
    assert_eq!(v["type"], "error");
    assert_eq!(v["error"]["type"], "permission_error");
    v["error"]["message"].as_str().unwrap().to_owned()
}

const NO_MODELS: &str = r#"MachineToken team/app does not hold the scope "models""#;

#[tokio::test]
async fn a_chat_token_may_not_list_models_or_use_messages() {
    let fake = fake_anthropic().await;
    let h = Harness::start(&manifests(&fake, "{}", ", scopes: [chat]")).await;
    assert_eq!(h.chat(CHAT).await.status(), 200);

    assert_eq!(denied(get(&h, "/v1/models").await).await, NO_MODELS);
    assert_eq!(denied(get(&h, "/v1/models/mock-1").await).await, NO_MODELS);
    let r = h.client.get(h.url("/openai/models")).header("api-key", TOKEN).send().await.unwrap();
    assert_eq!(denied(r).await, NO_MODELS);

    let no_messages = r#"MachineToken team/app does not hold the scope "messages""#;
    assert_eq!(denied_anthropic(anthropic(&h, "/v1/messages").await).await, no_messages);
    assert_eq!(denied_anthropic(anthropic(&h, "/v1/messages/count_tokens").await).await, no_messages);
    assert!(fake.seen.lock().unwrap().is_empty(), "a denied request never reaches the upstream");
}

#[tokio::test]
async fn a_messages_token_may_use_messages_but_not_chat() {
    let fake = fake_anthropic().await;
    let h = Harness::start(&manifests(&fake, "{}", ", scopes: [messages]")).await;
    assert_eq!(anthropic(&h, "/v1/messages").await.status(), 200);
    let r = anthropic(&h, "/v1/messages/count_tokens").await;
    assert_eq!(r.status(), 200);
    assert_eq!(r.json::<serde_json::Value>().await.unwrap()["input_tokens"], 3);

    let no_chat = r#"MachineToken team/app does not hold the scope "chat""#;
    assert_eq!(denied(h.chat(CHAT).await).await, no_chat);
    let r = h.post("/openai/deployments/mock-1/chat/completions", Some(TOKEN), CHAT).await;
    assert_eq!(denied(r).await, no_chat);
    assert_eq!(denied(get(&h, "/v1/models").await).await, NO_MODELS);
}

#[tokio::test]
async fn a_models_token_may_only_list_models() {
    let fake = fake_anthropic().await;
    let h = Harness::start(&manifests(&fake, "{}", ", scopes: [models]")).await;
    let r = get(&h, "/v1/models").await;
    assert_eq!(r.status(), 200);
    let r = get(&h, "/v1/models/mock-1").await;
    assert_eq!(r.status(), 200);
    assert!(denied(h.chat(CHAT).await).await.contains(r#""chat""#));
    let r = h.post("/v1/embeddings", Some(TOKEN), r#"{"model":"mock-1","input":"x"}"#).await;
    assert!(denied(r).await.contains(r#""embeddings""#));
}

#[tokio::test]
async fn a_policy_without_the_scope_denies_it_to_every_token_of_its_service() {
    let fake = fake_anthropic().await;
    // The token holds every scope; the Service's Policy allows chat only.
    let h = Harness::start(&manifests(&fake, "{policies: [chat-only]}", "")).await;
    assert_eq!(h.chat(CHAT).await.status(), 200);
    let by_policy = |scope: &str| format!(r#"Policy team/chat-only does not allow the scope "{scope}""#);
    assert_eq!(denied(get(&h, "/v1/models").await).await, by_policy("models"));
    assert_eq!(denied(get(&h, "/v1/models/mock-1").await).await, by_policy("models"));
    assert_eq!(denied_anthropic(anthropic(&h, "/v1/messages").await).await, by_policy("messages"));
    let r = h.post("/v1/embeddings", Some(TOKEN), r#"{"model":"mock-1","input":"x"}"#).await;
    assert_eq!(denied(r).await, by_policy("embeddings"));
}

#[tokio::test]
async fn a_token_policy_narrows_scopes_too() {
    let fake = fake_anthropic().await;
    let h = Harness::start(&manifests(&fake, "{}", ", policies: [chat-only]")).await;
    assert_eq!(h.chat(CHAT).await.status(), 200);
    let msg = denied(get(&h, "/v1/models").await).await;
    assert_eq!(msg, r#"Policy team/chat-only does not allow the scope "models""#);
}
