//! Anthropic message (a non-streamed `/v1/messages` answer) → `response` object. Each text block
//! becomes a `message` output item with one `output_text` part, each `tool_use` block a
//! `function_call` item; thinking and server tool blocks are dropped (the request cannot ask
//! for them). `max_tokens` ends as `status: incomplete` with reason `max_output_tokens`.

use bytes::Bytes;
use serde_json::{Map, Value, json};

use super::{call_item_id, message_item_id, response_id, status, usage};
use crate::error::GatewayError;
use crate::providers::anthropic::response::{Message, read_message, unreadable};
use crate::providers::anthropic::{RawUsage, now_unix};
use crate::providers::responses::{Envelope, function_call_item, message_item};

/// Translates an Anthropic message into a `response` object; `model` is echoed as the client
/// asked for it, with the request's `echo`ed settings.
pub fn translate_response(anthropic_body: &[u8], model: &str, echo: Map<String, Value>) -> Result<Bytes, GatewayError> {
    let Message { id, blocks, message } = read_message(anthropic_body)?;
    let id = id.as_str();

    let mut output = Vec::with_capacity(blocks.len());
    for (index, block) in blocks.iter().enumerate() {
        let field = |name: &str| block.get(name).and_then(Value::as_str).unwrap_or_default();
        match field("type") {
            "text" => output.push(message_item(&message_item_id(id, index as u64), "completed", Some(field("text")))),
            "tool_use" => {
                // `Value`'s `Display` is compact JSON.
                let arguments = block.get("input").map_or_else(|| "{}".to_owned(), Value::to_string);
                let call_id = field("id");
                output.push(function_call_item(
                    &call_item_id(call_id),
                    "completed",
                    call_id,
                    field("name"),
                    &arguments,
                ));
            }
            _ => {}
        }
    }
    let mut raw = RawUsage::default();
    raw.update(message.get("usage").unwrap_or(&json!({})));
    let envelope = Envelope { id: response_id(id), model: model.to_owned(), created_at: now_unix(), echo };
    let stop_reason = message.get("stop_reason").and_then(Value::as_str);
    let response = envelope.response(status(stop_reason), &output, Some(usage(raw)));
    serde_json::to_vec(&response).map(Bytes::from).map_err(|_| unreadable("not serializable"))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;
    use crate::providers::responses::echo_defaults;

    #[test]
    fn error_and_garbage_bodies_are_upstream_failures() {
        for body in [&b"{"[..], br#"{"type":"error","error":{"type":"api_error","message":"x"}}"#, b"[]"] {
            let e = translate_response(body, "m", echo_defaults()).unwrap_err();
            assert_eq!(e.status(), 502, "{e}");
        }
    }
}
