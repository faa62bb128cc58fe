//! Chat completions to an `anthropic` provider end to end: the gateway on 127.0.0.1:0 in front
//! of a fake Anthropic that refuses what the real one refuses (no key, no `anthropic-version`,
//! no `max_tokens`, roles that do not alternate) and answers in the Messages API's shapes.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::sync::Arc;

use common::{ANTHROPIC_STREAM, Harness, PROVIDER_KEY, Seen, Upstream, anthropic_error, reply};
use http::{HeaderValue, Response, header};
use uprox_gateway::body::Body;

/// What a real Anthropic would refuse, checked on every request.
fn refuse(seen: &Seen) -> Option<Response<Body>> {
    let header = |name: &str| seen.headers.get(name).and_then(|v| v.to_str().ok());
    if header("x-api-key") != Some(PROVIDER_KEY) || seen.authorization.is_some() {
        return Some(anthropic_error(401, "authentication_error", "invalid x-api-key"));
    }
    if seen.path != "/v1/messages" {
        return Some(anthropic_error(404, "not_found_error", "no such endpoint"));
    }
    if header("anthropic-version") != Some("2023-06-01") {
        return Some(anthropic_error(400, "invalid_request_error", "anthropic-version header is required"));
    }
    let v: serde_json::Value = serde_json::from_slice(&seen.body).unwrap();
    if v["max_tokens"].as_u64().is_none() {
        return Some(anthropic_error(400, "invalid_request_error", "max_tokens: Field required"));
    }
    let roles: Vec<&str> = v["messages"].as_array().unwrap().iter().map(|m| m["role"].as_str().unwrap()).collect();
    let alternates = roles.first() == Some(&"user") && roles.windows(2).all(|w| w[0] != w[1]);
    if !alternates {
        return Some(anthropic_error(400, "invalid_request_error", "roles must alternate"));
    }
    None
}

async fn fake_anthropic() -> Upstream {
    Upstream::start(Arc::new(|seen: Seen| {
        Box::pin(async move {
            if let Some(refusal) = refuse(&seen) {
                return refusal;
            }
            let v: serde_json::Value = serde_json::from_slice(&seen.body).unwrap();
            match v["model"].as_str().unwrap() {
                "claude-busy" => anthropic_error(529, "overloaded_error", "Overloaded"),
                "claude-limited" => {
                    let mut r = anthropic_error(429, "rate_limit_error", "slow down");
                    r.headers_mut().insert(header::RETRY_AFTER, HeaderValue::from_static("7"));
                    r
                }
                _ if v["stream"] == true => reply(200, "text/event-stream", ANTHROPIC_STREAM),
                model => reply(
                    200,
                    "application/json",
                    format!(
                        r#"{{"id":"msg_2","type":"message","role":"assistant","model":"{model}","content":[{{"type":"text","text":"Hi!"}}],"stop_reason":"max_tokens","usage":{{"input_tokens":7,"output_tokens":3,"cache_read_input_tokens":2}}}}"#
                    ),
                ),
            }
        })
    }))
    .await
}

const TWO_USER_TURNS: &str = r#"{"model":"claude-sonnet","max_tokens":64,"messages":[
    {"role":"system","content":"be brief"},
    {"role":"user","content":"hello"},
    {"role":"user","content":"again"}]}"#;

#[tokio::test]
async fn chat_completions_are_translated_both_ways() {
    let upstream = fake_anthropic().await;
    let h = Harness::start(&common::anthropic_manifests(&upstream.base_url().replace("/v1", ""))).await;
    let r = h.chat(TWO_USER_TURNS).await;
    assert_eq!(r.status(), 200);
    let v: serde_json::Value = r.json().await.unwrap();
    assert_eq!(v["object"], "chat.completion");
    assert_eq!(v["model"], "claude-sonnet");
    assert_eq!(v["choices"][0]["message"]["content"], "Hi!");
    assert_eq!(v["choices"][0]["finish_reason"], "length");
    assert_eq!(v["usage"]["prompt_tokens"], 9);
    assert_eq!(v["usage"]["prompt_tokens_details"]["cached_tokens"], 2);

    let seen = upstream.seen.lock().unwrap()[0].clone();
    let sent: serde_json::Value = serde_json::from_slice(&seen.body).unwrap();
    assert_eq!(sent["system"], "be brief");
    assert_eq!(sent["messages"].as_array().unwrap().len(), 1, "consecutive user turns are merged");
}

#[tokio::test]
async fn streams_become_openai_chunks_ending_in_done() {
    let upstream = fake_anthropic().await;
    let h = Harness::start(&common::anthropic_manifests(&upstream.base_url().replace("/v1", ""))).await;
    let body = r#"{"model":"claude-sonnet","stream":true,"stream_options":{"include_usage":true},
        "messages":[{"role":"user","content":"hi"}]}"#;
    let r = h.chat(body).await;
    assert_eq!(r.status(), 200);
    assert_eq!(r.headers()["content-type"], "text/event-stream");
    let text = r.text().await.unwrap();
    assert!(text.ends_with("data: [DONE]\n\n"), "{text}");
    let events: Vec<serde_json::Value> = text
        .split("\n\n")
        .filter_map(|e| e.strip_prefix("data: "))
        .filter(|d| *d != "[DONE]")
        .map(|d| serde_json::from_str(d).unwrap())
        .collect();
    let content: String =
        events.iter().filter_map(|e| e["choices"][0]["delta"]["content"].as_str()).collect::<Vec<_>>().concat();
    assert_eq!(content, "Hello there");
    assert!(events.iter().all(|e| e["object"] == "chat.completion.chunk"));
    assert!(events.iter().any(|e| e["choices"][0]["finish_reason"] == "stop"));
    let usage = events.last().unwrap();
    assert_eq!(usage["choices"].as_array().unwrap().len(), 0);
    assert_eq!(usage["usage"]["completion_tokens"], 5);
}

#[tokio::test]
async fn anthropic_errors_become_openai_errors() {
    let upstream = fake_anthropic().await;
    let h = Harness::start(&common::anthropic_manifests(&upstream.base_url().replace("/v1", ""))).await;

    let r = h.chat(r#"{"model":"claude-limited","messages":[{"role":"user","content":"x"}]}"#).await;
    assert_eq!(r.status(), 429);
    assert_eq!(r.headers()["retry-after"], "7", "retry-after is forwarded");
    assert_eq!(common::error_of(r).await["type"], "rate_limit_error");

    let r = h.chat(r#"{"model":"claude-busy","messages":[{"role":"user","content":"x"}]}"#).await;
    assert_eq!(r.status(), 503, "overloaded (529) becomes 503, which OpenAI clients retry");
    common::error_of(r).await;

    // Refused by the gateway before any upstream call: Anthropic cannot honour it.
    let r = h.chat(r#"{"model":"claude-sonnet","n":2,"messages":[{"role":"user","content":"x"}]}"#).await;
    assert_eq!(r.status(), 400);
    assert!(common::error_of(r).await["message"].as_str().unwrap().contains("`n`"), "the message names the parameter");
    assert_eq!(upstream.seen.lock().unwrap().len(), 2);
}
