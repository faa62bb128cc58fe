//! The Anthropic Messages API ingress end to end: `/v1/messages` and
//! `/v1/messages/count_tokens` on the gateway on 127.0.0.1:0, in front of a fake Anthropic that
//! refuses what the real one refuses (no key, no `anthropic-version`, a client token). Bodies
//! pass through byte for byte both ways; errors the gateway raises itself are Anthropic-shaped.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::sync::Arc;

use common::{ANTHROPIC_STREAM, Harness, PROVIDER_KEY, Seen, TOKEN, Upstream, anthropic_error};
use http::{HeaderValue, Response, header};
use uprox_gateway::body::Body;
use uprox_gateway::error::GatewayError;

/// The `anthropic-version` values the fake accepts (the gateway's own is the first).
const VERSIONS: &[&str] = &["2023-06-01", "2023-01-01"];

/// An answer carrying Anthropic's `request-id` header.
fn reply(status: u16, content_type: &'static str, body: impl Into<bytes::Bytes>) -> Response<Body> {
    let mut r = common::reply(status, content_type, body);
    r.headers_mut().insert("request-id", HeaderValue::from_static("req_upstream_1"));
    r
}

/// What a real Anthropic would refuse, checked on every request.
fn refuse(seen: &Seen) -> Option<Response<Body>> {
    let header = |name: &str| seen.headers.get(name).and_then(|v| v.to_str().ok());
    if header("x-api-key") != Some(PROVIDER_KEY) || seen.authorization.is_some() {
        return Some(anthropic_error(401, "authentication_error", "invalid x-api-key"));
    }
    if seen.headers.values().any(|v| v.as_bytes().windows(TOKEN.len()).any(|w| w == TOKEN.as_bytes())) {
        return Some(anthropic_error(400, "invalid_request_error", "a uprox token reached the upstream"));
    }
    if !header("anthropic-version").is_some_and(|v| VERSIONS.contains(&v)) {
        return Some(anthropic_error(400, "invalid_request_error", "anthropic-version header is required"));
    }
    None
}

/// A message answer with deliberately unusual formatting, to show it is relayed untouched.
const MESSAGE: &str = "{\"id\":\"msg_2\",  \"type\":\"message\",\"role\":\"assistant\",\"model\":\"claude-sonnet\",\n\"content\":[{\"type\":\"text\",\"text\":\"Hi!\"}],\"stop_reason\":\"end_turn\",\"stop_sequence\":null,\"usage\":{\"input_tokens\":7,\"output_tokens\":3},\"x-unknown\":{\"kept\":true}}";

async fn fake_anthropic() -> Upstream {
    Upstream::start(Arc::new(|seen: Seen| {
        Box::pin(async move {
            if let Some(refusal) = refuse(&seen) {
                return refusal;
            }
            let v: serde_json::Value = serde_json::from_slice(&seen.body).unwrap();
            match (seen.path.as_str(), v["model"].as_str().unwrap()) {
                ("/v1/messages/count_tokens", _) => reply(200, "application/json", r#"{"input_tokens":42}"#),
                ("/v1/messages", "claude-limited") => {
                    let mut r = anthropic_error(429, "rate_limit_error", "slow down");
                    r.headers_mut().insert(header::RETRY_AFTER, HeaderValue::from_static("7"));
                    r.headers_mut().insert("anthropic-ratelimit-requests-remaining", HeaderValue::from_static("0"));
                    r.headers_mut().insert("x-internal-upstream-header", HeaderValue::from_static("secret"));
                    r
                }
                ("/v1/messages", _) if v["stream"] == true => reply(200, "text/event-stream", ANTHROPIC_STREAM),
                ("/v1/messages", _) => {
                    let mut r = reply(200, "application/json", MESSAGE);
                    r.headers_mut().insert("anthropic-ratelimit-tokens-remaining", HeaderValue::from_static("9000"));
                    r
                }
                _ => anthropic_error(404, "not_found_error", "no such endpoint"),
            }
        })
    }))
    .await
}

/// An anthropic provider for `claude-*` at `anthropic_base`, an openai-compatible one for
/// `gpt-*`, a service and a token with [`TOKEN`].
fn manifests(anthropic_base: &str) -> String {
    format!(
        r#"
apiVersion: uprox.dev/v1alpha1
kind: Provider
metadata: {{name: claude, namespace: team}}
spec:
  type: anthropic
  baseUrl: "{anthropic_base}"
  models: ["claude-*"]
  keys: [{{label: main, secretRef: {{name: anthropic-key, key: apiKey}}}}]
---
apiVersion: v1
kind: Secret
metadata: {{name: anthropic-key, namespace: team}}
stringData: {{apiKey: "{PROVIDER_KEY}"}}
---
apiVersion: uprox.dev/v1alpha1
kind: Provider
metadata: {{name: openai, namespace: team}}
spec:
  type: openai-compatible
  baseUrl: "http://127.0.0.1:9/v1"
  models: ["gpt-*"]
  keys: [{{label: main, secretRef: {{name: anthropic-key, key: apiKey}}}}]
"#
    ) + &common::identity()
}

async fn setup() -> (Upstream, Harness) {
    let upstream = fake_anthropic().await;
    let h = Harness::start(&manifests(&format!("http://{}", upstream.addr))).await;
    (upstream, h)
}

/// Posts like an Anthropic SDK: the token in `x-api-key`, plus any extra headers.
async fn post(h: &Harness, path: &str, token: &str, body: &str, extra: &[(&str, &str)]) -> reqwest::Response {
    let mut r = h
        .client
        .post(h.url(path))
        .header("content-type", "application/json")
        .header("x-api-key", token)
        .body(body.to_owned());
    for (name, value) in extra {
        r = r.header(*name, *value);
    }
    r.send().await.unwrap()
}

/// The `error` object of an Anthropic-shaped error response, after checking its shape.
async fn anthropic_error_of(response: reqwest::Response) -> serde_json::Value {
    assert!(response.headers().contains_key("x-request-id"), "every response carries x-request-id");
    assert_eq!(response.headers()["content-type"], "application/json");
    let v: serde_json::Value = response.json().await.unwrap();
    assert_eq!(v["type"], "error", "not Anthropic-shaped: {v}");
    let e = v["error"].clone();
    assert!(e["type"].is_string() && e["message"].as_str().is_some_and(|m| !m.is_empty()), "not Anthropic-shaped: {v}");
    e
}

const REQUEST: &str = "{\"model\":\"claude-sonnet\",  \"max_tokens\":64,\n\"messages\":[{\"role\":\"user\",\"content\":\"hello\"}],\"metadata\":{\"user_id\":\"u1\"},\"some_future_field\":[1,2.50,\"x\"]}";

#[tokio::test]
async fn messages_pass_through_byte_for_byte_with_the_key_swapped() {
    let (upstream, h) = setup().await;
    let r = post(&h, "/v1/messages", TOKEN, REQUEST, &[]).await;
    assert_eq!(r.status(), 200);
    assert_eq!(r.headers()["content-type"], "application/json");
    assert_eq!(r.headers()["request-id"], "req_upstream_1", "Anthropic's request id is relayed");
    assert_eq!(r.headers()["anthropic-ratelimit-tokens-remaining"], "9000");
    assert!(r.headers().contains_key("x-request-id"));
    assert_eq!(r.text().await.unwrap(), MESSAGE, "the answer is relayed untouched");

    let seen = upstream.seen.lock().unwrap()[0].clone();
    assert_eq!(seen.path, "/v1/messages");
    assert_eq!(seen.body, REQUEST.as_bytes(), "the request is forwarded untouched");
    assert_eq!(seen.headers["x-api-key"], PROVIDER_KEY);
    assert_eq!(seen.headers["anthropic-version"], "2023-06-01", "the gateway's version when the client sends none");
    assert!(seen.authorization.is_none());

    // A Bearer token works the same; it does not reach the upstream either.
    let r = h.post("/v1/messages", Some(TOKEN), REQUEST).await;
    assert_eq!(r.status(), 200);
    let seen = upstream.seen.lock().unwrap()[1].clone();
    assert!(seen.authorization.is_none());
    assert_eq!(seen.headers["x-api-key"], PROVIDER_KEY);
}

#[tokio::test]
async fn streams_pass_through_unchanged() {
    let (_upstream, h) = setup().await;
    let body = r#"{"model":"claude-sonnet","max_tokens":64,"stream":true,"messages":[{"role":"user","content":"hi"}]}"#;
    let r = post(&h, "/v1/messages", TOKEN, body, &[]).await;
    assert_eq!(r.status(), 200);
    assert_eq!(r.headers()["content-type"], "text/event-stream");
    let text = r.text().await.unwrap();
    assert_eq!(text, ANTHROPIC_STREAM);
    assert!(text.ends_with("event: message_stop\ndata: {\"type\":\"message_stop\"}\n\n"));
}

#[tokio::test]
async fn count_tokens_passes_through_with_the_clients_version_and_betas() {
    let (upstream, h) = setup().await;
    let body = r#"{"model":"claude-sonnet","messages":[{"role":"user","content":"hello"}]}"#;
    let extra = [("anthropic-version", "2023-01-01"), ("anthropic-beta", "token-counting-2024-11-01")];
    let r = post(&h, "/v1/messages/count_tokens", TOKEN, body, &extra).await;
    assert_eq!(r.status(), 200);
    let v: serde_json::Value = r.json().await.unwrap();
    assert_eq!(v["input_tokens"], 42);

    let seen = upstream.seen.lock().unwrap()[0].clone();
    assert_eq!(seen.path, "/v1/messages/count_tokens");
    assert_eq!(seen.body, body.as_bytes());
    assert_eq!(seen.headers["anthropic-version"], "2023-01-01", "the client's version wins");
    assert_eq!(seen.headers["anthropic-beta"], "token-counting-2024-11-01");
    assert_eq!(seen.headers["x-api-key"], PROVIDER_KEY);
}

#[tokio::test]
async fn upstream_rate_limits_pass_through_with_retry_after() {
    let (_upstream, h) = setup().await;
    let body = r#"{"model":"claude-limited","max_tokens":8,"messages":[{"role":"user","content":"x"}]}"#;
    let r = post(&h, "/v1/messages", TOKEN, body, &[]).await;
    assert_eq!(r.status(), 429);
    assert_eq!(r.headers()["retry-after"], "7");
    assert_eq!(r.headers()["anthropic-ratelimit-requests-remaining"], "0");
    assert!(!r.headers().contains_key("x-internal-upstream-header"), "only known headers are relayed");
    let e = anthropic_error_of(r).await;
    assert_eq!(e["type"], "rate_limit_error");
    assert_eq!(e["message"], "slow down", "Anthropic's own error body is relayed");
}

#[tokio::test]
async fn models_of_other_provider_types_are_refused_in_anthropic_shape() {
    let (upstream, h) = setup().await;
    let body = r#"{"model":"gpt-4o","max_tokens":8,"messages":[{"role":"user","content":"x"}]}"#;
    let r = post(&h, "/v1/messages", TOKEN, body, &[]).await;
    assert_eq!(r.status(), 400);
    let e = anthropic_error_of(r).await;
    assert_eq!(e["type"], "invalid_request_error");
    let message = e["message"].as_str().unwrap();
    assert!(message.contains("gpt-4o") && message.contains("/v1/chat/completions"), "{message}");

    let r = post(&h, "/v1/messages/count_tokens", TOKEN, body, &[]).await;
    assert_eq!(r.status(), 400);
    assert_eq!(anthropic_error_of(r).await["type"], "invalid_request_error");
    assert!(upstream.seen.lock().unwrap().is_empty(), "nothing reached any upstream");
}

#[tokio::test]
async fn gateway_errors_are_anthropic_shaped() {
    let (upstream, h) = setup().await;
    let r = post(&h, "/v1/messages", "uprox_live_CCCCCCCCCCCCCCCCCCCCCCCCCCCCCCCCCCCCCCCCCCC", REQUEST, &[]).await;
    assert_eq!(r.status(), 401);
    assert_eq!(anthropic_error_of(r).await["type"], "authentication_error");

    let r = h.post("/v1/messages/count_tokens", None, REQUEST).await;
    assert_eq!(r.status(), 401);
    assert_eq!(anthropic_error_of(r).await["type"], "authentication_error");

    let r = post(&h, "/v1/messages", TOKEN, r#"{"max_tokens":8,"messages":[]}"#, &[]).await;
    assert_eq!(r.status(), 400);
    assert_eq!(anthropic_error_of(r).await["type"], "invalid_request_error");

    let r = post(&h, "/v1/messages", TOKEN, r#"{"model":"nope","max_tokens":8,"messages":[]}"#, &[]).await;
    assert_eq!(r.status(), 404);
    assert_eq!(anthropic_error_of(r).await["type"], "not_found_error");

    let r = h.client.get(h.url("/v1/messages")).header("x-api-key", TOKEN).send().await.unwrap();
    assert_eq!(r.status(), 405);
    assert_eq!(r.headers()["allow"], "POST");
    assert_eq!(anthropic_error_of(r).await["type"], "invalid_request_error");
    assert!(upstream.seen.lock().unwrap().is_empty());
}

#[tokio::test]
async fn anthropic_error_types_follow_the_status() {
    let cases = [
        (GatewayError::InvalidRequest("bad".into()), 400, "invalid_request_error"),
        (GatewayError::MissingField("model"), 400, "invalid_request_error"),
        (GatewayError::MissingCredential, 401, "authentication_error"),
        (GatewayError::InvalidCredential, 401, "authentication_error"),
        (GatewayError::Forbidden("no".into()), 403, "permission_error"),
        (GatewayError::UnknownModel("m".into()), 404, "not_found_error"),
        (GatewayError::NotFound { method: "GET".into(), path: "/x".into() }, 404, "not_found_error"),
        (
            GatewayError::MethodNotAllowed { method: "GET".into(), path: "/x".into(), allow: "POST" },
            405,
            "invalid_request_error",
        ),
        (GatewayError::PayloadTooLarge(10), 413, "request_too_large"),
        (GatewayError::Unsupported("azure"), 501, "invalid_request_error"),
        (GatewayError::UpstreamUnavailable("refused".into()), 502, "api_error"),
        (GatewayError::UpstreamRejectedKey(401), 502, "api_error"),
        (GatewayError::UpstreamTimeout(5), 504, "api_error"),
        (GatewayError::NotReady, 503, "overloaded_error"),
    ];
    for (error, status, kind) in cases {
        let message = error.to_string();
        let allow = matches!(error, GatewayError::MethodNotAllowed { .. });
        let response = error.into_anthropic_response();
        assert_eq!(response.status(), status, "{message}");
        assert_eq!(response.headers()["content-type"], "application/json");
        if allow {
            assert_eq!(response.headers()["allow"], "POST");
        }
        if status == 503 {
            assert_eq!(response.headers()["retry-after"], "1");
        }
        let body = http_body_util::BodyExt::collect(response.into_body()).await.unwrap().to_bytes();
        let v: serde_json::Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(v["type"], "error");
        assert_eq!(v["error"]["type"], kind, "{message}");
        assert_eq!(v["error"]["message"], message);
        assert_eq!(v.as_object().unwrap().len(), 2, "{v}");
    }
}
