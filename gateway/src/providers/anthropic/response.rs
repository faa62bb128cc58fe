//! Anthropic message (a non-streaming `/v1/messages` answer) → OpenAI `chat.completion`. Text
//! blocks become `message.content`, `tool_use` blocks become `tool_calls`, and everything the
//! client did not ask for and cannot read (thinking, redacted thinking, server tool blocks) is
//! dropped. Error bodies are [`super::error`]'s concern.

use bytes::Bytes;
use serde_json::{Map, Value, json};

use super::{RawUsage, Usage, completion_id, finish_reason, now_unix};
use crate::error::GatewayError;

/// An answer uprox cannot read is the upstream's failure (a 502), saying `what` is wrong.
pub(super) fn unreadable(what: &str) -> GatewayError {
    GatewayError::UpstreamUnavailable(format!("Anthropic returned a response uprox could not read ({what})"))
}

/// A non-streamed Anthropic answer, as both answer translations (this one and
/// [`super::responses::response`]) read it.
pub(super) struct Message {
    /// The message id.
    pub(super) id: String,
    /// The content blocks, taken out of `message`.
    pub(super) blocks: Vec<Value>,
    /// The rest of the message (`stop_reason`, `usage`, …).
    pub(super) message: Value,
}

/// Reads an Anthropic answer: JSON, of type `message`, with an `id` and `content` blocks.
pub(super) fn read_message(anthropic_body: &[u8]) -> Result<Message, GatewayError> {
    let mut message: Value = serde_json::from_slice(anthropic_body).map_err(|_| unreadable("not JSON"))?;
    if message.get("type").and_then(Value::as_str) != Some("message") {
        return Err(unreadable("not a message"));
    }
    let id = message.get("id").and_then(Value::as_str).ok_or_else(|| unreadable("no id"))?.to_owned();
    let Some(Value::Array(blocks)) = message.get_mut("content").map(Value::take) else {
        return Err(unreadable("no content"));
    };
    Ok(Message { id, blocks, message })
}

/// Translates an Anthropic message into an OpenAI chat completion; `model` is echoed as the
/// client asked for it.
pub fn translate_response(anthropic_body: &[u8], model: &str) -> Result<Bytes, GatewayError> {
    let Message { id, blocks, message } = read_message(anthropic_body)?;

    let mut text: Option<String> = None;
    let mut tool_calls = Vec::new();
    for block in &blocks {
        match block.get("type").and_then(Value::as_str) {
            Some("text") => {
                text.get_or_insert_default().push_str(block.get("text").and_then(Value::as_str).unwrap_or_default());
            }
            Some("tool_use") => {
                let input = block.get("input").cloned().unwrap_or_else(|| json!({}));
                tool_calls.push(json!({
                    "id": block.get("id").cloned().unwrap_or(Value::Null),
                    "type": "function",
                    "function": {
                        "name": block.get("name").cloned().unwrap_or(Value::Null),
                        // `Value`'s `Display` is compact JSON.
                        "arguments": input.to_string(),
                    },
                }));
            }
            _ => {}
        }
    }

    let mut reply = Map::new();
    reply.insert("role".into(), json!("assistant"));
    reply.insert("content".into(), text.map_or(Value::Null, Value::String));
    reply.insert("refusal".into(), Value::Null);
    if !tool_calls.is_empty() {
        reply.insert("tool_calls".into(), Value::Array(tool_calls));
    }
    let finish = message.get("stop_reason").and_then(Value::as_str).map(finish_reason);
    let usage = response_usage_of(&message).unwrap_or_default();
    let completion = json!({
        "id": completion_id(&id),
        "object": "chat.completion",
        "created": now_unix(),
        "model": model,
        "choices": [{"index": 0, "message": reply, "logprobs": null, "finish_reason": finish}],
        "usage": usage.to_openai(),
    });
    serde_json::to_vec(&completion).map(Bytes::from).map_err(|_| unreadable("not serializable"))
}

/// The usage of an Anthropic message body, for accounting; `None` when the body has none.
pub fn response_usage(anthropic_body: &[u8]) -> Option<Usage> {
    serde_json::from_slice::<Value>(anthropic_body).ok().as_ref().and_then(response_usage_of)
}

fn response_usage_of(message: &Value) -> Option<Usage> {
    let usage = message.get("usage").filter(|u| u.is_object())?;
    let mut raw = RawUsage::default();
    raw.update(usage);
    Some(raw.usage())
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;

    #[test]
    fn error_and_garbage_bodies_are_upstream_failures() {
        for body in [&b"{"[..], br#"{"type":"error","error":{"type":"api_error","message":"x"}}"#, b"[]"] {
            let e = translate_response(body, "m").unwrap_err();
            assert_eq!(e.status(), 502, "{e}");
        }
    }

    #[test]
    fn thinking_is_dropped_and_no_text_means_null_content() {
        let body = json!({
            "id": "msg_1", "type": "message", "role": "assistant", "model": "claude",
            "content": [{"type": "thinking", "thinking": "hmm", "signature": "s"}],
            "stop_reason": "end_turn", "usage": {"input_tokens": 1, "output_tokens": 2}
        });
        let out: Value =
            serde_json::from_slice(&translate_response(body.to_string().as_bytes(), "m").unwrap()).unwrap();
        assert_eq!(out["choices"][0]["message"]["content"], Value::Null);
        assert_eq!(response_usage(body.to_string().as_bytes()).unwrap().completion_tokens, 2);
    }
}
