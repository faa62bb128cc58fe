//! The `mock` provider: answers chat completions and embeddings itself, offline and at no cost, so the sample
//! config runs anywhere and users can try their clients. Replies are deterministic (derived from
//! the model and the messages), usage is counted the way OpenAI roughly counts it, and streaming
//! produces real `chat.completion.chunk` events ending in `[DONE]`. Embeddings are
//! deterministic unit vectors derived from the model and each input.
//!
//! The same code serves the `uprox-mock-upstream` binary used by tests and benchmarks. Chat is
//! here; embeddings are in [`embeddings`], the Responses API in [`responses`].

pub mod embeddings;
pub mod files;
pub mod responses;

pub use embeddings::{embeddings, embeddings_json};

use std::time::{SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use http::{HeaderValue, Response, header};
use serde::Deserialize;
use serde_json::{Value, json};
use sha2::{Digest as _, Sha256};

use crate::body::{Body, BoxError};
use crate::error::GatewayError;

const WORDS: &[&str] = &[
    "gateway",
    "token",
    "budget",
    "policy",
    "cluster",
    "latency",
    "stream",
    "model",
    "request",
    "replica",
    "snapshot",
    "cache",
    "provider",
    "service",
    "quota",
    "audit",
    "prompt",
    "answer",
    "kubectl",
    "namespace",
    "secret",
    "limit",
    "route",
    "usage",
    "reload",
    "operator",
    "manifest",
    "header",
    "window",
    "ledger",
    "metric",
    "trace",
];

/// The fields of a chat completion request the mock reads; everything else is ignored.
#[derive(Debug, Deserialize)]
pub struct MockRequest {
    /// The model asked for, echoed back.
    pub model: Option<String>,
    /// The conversation.
    pub messages: Option<Vec<Message>>,
    /// Output cap (legacy name).
    pub max_tokens: Option<u32>,
    /// Output cap.
    pub max_completion_tokens: Option<u32>,
    /// Whether to stream.
    #[serde(default)]
    pub stream: bool,
    /// Streaming options.
    pub stream_options: Option<StreamOptions>,
}

/// One message.
#[derive(Debug, Deserialize)]
pub struct Message {
    /// `system`, `user`, `assistant`, `tool`, `developer`.
    #[serde(default)]
    pub role: String,
    /// A string or an array of content parts.
    #[serde(default)]
    pub content: Value,
}

/// `stream_options`.
#[derive(Debug, Deserialize)]
pub struct StreamOptions {
    /// Whether a final usage chunk is wanted.
    #[serde(default)]
    pub include_usage: bool,
}

/// A generated completion.
#[derive(Debug, Clone, PartialEq)]
pub struct Completion {
    /// `chatcmpl-…`, derived from the request.
    pub id: String,
    /// Echoed model name.
    pub model: String,
    /// Unix seconds.
    pub created: u64,
    /// Output pieces; one piece is one completion token.
    pub pieces: Vec<String>,
    /// Prompt tokens.
    pub prompt_tokens: u32,
    /// `stop` or `length`.
    pub finish_reason: &'static str,
}

impl Completion {
    /// The whole reply text.
    pub fn text(&self) -> String {
        self.pieces.concat()
    }

    fn usage(&self) -> Value {
        let completion = self.pieces.len() as u32;
        json!({
            "prompt_tokens": self.prompt_tokens,
            "completion_tokens": completion,
            "total_tokens": self.prompt_tokens + completion,
            "prompt_tokens_details": {"cached_tokens": 0, "audio_tokens": 0},
            "completion_tokens_details": {"reasoning_tokens": 0, "audio_tokens": 0, "accepted_prediction_tokens": 0, "rejected_prediction_tokens": 0}
        })
    }
}

fn text_of(content: &Value) -> String {
    match content {
        Value::String(s) => s.clone(),
        Value::Array(parts) => {
            parts.iter().filter_map(|p| p.get("text").and_then(Value::as_str)).collect::<Vec<_>>().join(" ")
        }
        _ => String::new(),
    }
}

/// Generates the reply to a parsed request.
pub fn complete(request: &MockRequest, model: &str) -> Result<Completion, GatewayError> {
    let messages = match &request.messages {
        Some(m) if !m.is_empty() => m,
        _ => {
            return Err(GatewayError::InvalidRequest("messages must be a non-empty array".into()));
        }
    };
    let mut hasher = Sha256::new();
    hasher.update(model.as_bytes());
    let mut prompt_tokens = 3u32;
    for m in messages {
        let text = text_of(&m.content);
        hasher.update(m.role.as_bytes());
        hasher.update([0]);
        hasher.update(text.as_bytes());
        hasher.update([0]);
        prompt_tokens = prompt_tokens.saturating_add(4 + (text.chars().count() as u32).div_ceil(4));
    }
    let seed: [u8; 32] = hasher.finalize().into();
    let last_user = messages.iter().rev().find(|m| m.role == "user").map(|m| text_of(&m.content)).unwrap_or_default();

    let mut words: Vec<String> = vec!["Mock".into(), "reply".into(), "from".into(), format!("{model}.")];
    let echoed: Vec<&str> = last_user.split_whitespace().take(24).collect();
    if !echoed.is_empty() {
        words.push("You".into());
        words.push("said:".into());
        words.extend(echoed.iter().map(|w| (*w).to_owned()));
        words.push("—".into());
    }
    words.extend(seed[..8].iter().map(|b| WORDS[*b as usize % WORDS.len()].to_owned()));
    let last = words.len() - 1;
    let mut pieces: Vec<String> =
        words.into_iter().enumerate().map(|(i, w)| if i == last { format!("{w}.") } else { format!("{w} ") }).collect();

    let cap = request.max_completion_tokens.or(request.max_tokens).map(|c| c as usize);
    let finish_reason = match cap {
        Some(cap) if cap < pieces.len() => {
            pieces.truncate(cap);
            "length"
        }
        _ => "stop",
    };
    let created = SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0);
    Ok(Completion {
        id: format!("chatcmpl-mock{}", hex::encode(&seed[8..20])),
        model: model.to_owned(),
        created,
        pieces,
        prompt_tokens,
        finish_reason,
    })
}

/// The non-streaming `chat.completion` body.
pub fn to_json(c: &Completion) -> Bytes {
    let body = json!({
        "id": c.id,
        "object": "chat.completion",
        "created": c.created,
        "model": c.model,
        "choices": [{
            "index": 0,
            "message": {"role": "assistant", "content": c.text(), "refusal": null, "annotations": []},
            "logprobs": null,
            "finish_reason": c.finish_reason,
        }],
        "usage": c.usage(),
        "service_tier": "default",
        "system_fingerprint": "fp_uprox_mock",
    });
    Bytes::from(body.to_string())
}

/// The SSE events of a streamed reply, `[DONE]` included.
pub fn to_sse(c: &Completion, include_usage: bool) -> Vec<Bytes> {
    let chunk = |delta: Value, finish: Value| {
        let mut v = json!({
            "id": c.id,
            "object": "chat.completion.chunk",
            "created": c.created,
            "model": c.model,
            "system_fingerprint": "fp_uprox_mock",
            "choices": [{"index": 0, "delta": delta, "logprobs": null, "finish_reason": finish}],
        });
        if include_usage {
            v["usage"] = Value::Null;
        }
        Bytes::from(format!("data: {v}\n\n"))
    };
    let mut events = Vec::with_capacity(c.pieces.len() + 4);
    events.push(chunk(json!({"role": "assistant", "content": "", "refusal": null}), Value::Null));
    events.extend(c.pieces.iter().map(|p| chunk(json!({"content": p}), Value::Null)));
    events.push(chunk(json!({}), json!(c.finish_reason)));
    if include_usage {
        let v = json!({
            "id": c.id,
            "object": "chat.completion.chunk",
            "created": c.created,
            "model": c.model,
            "system_fingerprint": "fp_uprox_mock",
            "choices": [],
            "usage": c.usage(),
        });
        events.push(Bytes::from(format!("data: {v}\n\n")));
    }
    events.push(Bytes::from_static(b"data: [DONE]\n\n"));
    events
}

/// Answers a raw chat completion body as OpenAI would, streaming or not.
pub fn respond(body: &[u8], model_override: Option<&str>) -> Result<Response<Body>, GatewayError> {
    let request: MockRequest = serde_json::from_slice(body).map_err(|e| {
        GatewayError::InvalidRequest(format!("Request body is not a valid chat completion request: {e}"))
    })?;
    let model = model_override.or(request.model.as_deref()).ok_or(GatewayError::MissingField("model"))?;
    let completion = complete(&request, model)?;
    if request.stream {
        let include_usage = request.stream_options.as_ref().is_some_and(|o| o.include_usage);
        Ok(sse_response(to_sse(&completion, include_usage)))
    } else {
        let mut response = Response::new(crate::body::full(to_json(&completion)));
        response.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
        Ok(response)
    }
}

/// A `text/event-stream` response whose frames are `events`, one frame each.
pub fn sse_response(events: Vec<Bytes>) -> Response<Body> {
    use http_body_util::{BodyExt as _, StreamBody};
    let frames = futures_util::stream::iter(events.into_iter().map(|b| Ok::<_, BoxError>(hyper::body::Frame::data(b))));
    let mut response = Response::new(StreamBody::new(frames).boxed_unsync());
    let headers = response.headers_mut();
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static("text/event-stream"));
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    response
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;

    fn request(json: &str) -> MockRequest {
        serde_json::from_str(json).unwrap()
    }

    #[test]
    fn replies_are_deterministic_and_echo_the_user() {
        let r = request(r#"{"model":"mock-1","messages":[{"role":"user","content":"hello there"}]}"#);
        let a = complete(&r, "mock-1").unwrap();
        let b = complete(&r, "mock-1").unwrap();
        assert_eq!(a.text(), b.text());
        assert_eq!(a.id, b.id);
        assert!(a.text().contains("hello there"));
        assert_eq!(a.finish_reason, "stop");
        let other = complete(&request(r#"{"messages":[{"role":"user","content":"bye"}]}"#), "mock-1").unwrap();
        assert_ne!(a.text(), other.text());
    }

    #[test]
    fn usage_is_realistic() {
        let r = request(
            r#"{"messages":[{"role":"system","content":"be brief"},{"role":"user","content":[{"type":"text","text":"count these words please"}]}]}"#,
        );
        let c = complete(&r, "mock-1").unwrap();
        assert!(c.prompt_tokens > 8);
        assert_eq!(c.pieces.len(), c.text().split_whitespace().count());
    }

    #[test]
    fn max_tokens_truncates_with_length() {
        let r = request(r#"{"max_completion_tokens":3,"messages":[{"role":"user","content":"hi"}]}"#);
        let c = complete(&r, "mock-1").unwrap();
        assert_eq!(c.pieces.len(), 3);
        assert_eq!(c.finish_reason, "length");
    }

    #[test]
    fn empty_messages_are_refused() {
        assert!(complete(&request(r#"{"messages":[]}"#), "m").is_err());
        assert!(complete(&request(r#"{}"#), "m").is_err());
    }

    #[test]
    fn stream_concatenates_to_the_same_text_and_ends_with_done() {
        let r = request(r#"{"messages":[{"role":"user","content":"stream me"}]}"#);
        let c = complete(&r, "mock-1").unwrap();
        let events = to_sse(&c, true);
        assert_eq!(events.last().unwrap().as_ref(), b"data: [DONE]\n\n");
        let mut text = String::new();
        let mut usage_seen = false;
        for e in &events[..events.len() - 1] {
            let s = std::str::from_utf8(e).unwrap();
            let v: Value = serde_json::from_str(s.strip_prefix("data: ").unwrap().trim()).unwrap();
            if let Some(content) = v["choices"][0]["delta"]["content"].as_str() {
                text.push_str(content);
            }
            if v["choices"].as_array().unwrap().is_empty() {
                usage_seen = v["usage"]["completion_tokens"].as_u64() == Some(c.pieces.len() as u64);
            }
        }
        assert_eq!(text, c.text());
        assert!(usage_seen);
        assert!(to_sse(&c, false).iter().all(|e| !std::str::from_utf8(e).unwrap().contains("\"usage\"")));
    }
}
