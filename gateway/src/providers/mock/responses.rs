//! The `mock` provider's Responses API (`POST /v1/responses`): the same deterministic reply and
//! usage as its chat completions, as a `response` object or as a Responses event stream
//! (`response.created` … `response.completed`). `input` may be a string or a list of items;
//! `instructions` count as a system message and `max_output_tokens` cuts the reply
//! (`status: incomplete`). Nothing is stored.

use http::{HeaderValue, Response, header};
use serde_json::{Map, Value};

use super::{Completion, Message, MockRequest, complete, sse_response};
use crate::body::{Body, full};
use crate::error::GatewayError;
use crate::providers::responses::{Envelope, Events, Incomplete, Status, echo_of, message_item, usage_json};

fn invalid(param: &'static str, message: &str) -> GatewayError {
    GatewayError::InvalidParam { param, message: message.to_owned() }
}

/// The conversation of a Responses request, as the mock's chat messages.
fn messages(request: &Map<String, Value>) -> Result<Vec<Message>, GatewayError> {
    let mut messages = Vec::new();
    if let Some(instructions) = request.get("instructions").filter(|v| !v.is_null()) {
        messages.push(Message { role: "system".into(), content: instructions.clone() });
    }
    match request.get("input") {
        None | Some(Value::Null) => return Err(GatewayError::MissingField("input")),
        Some(Value::String(s)) => messages.push(Message { role: "user".into(), content: Value::String(s.clone()) }),
        Some(Value::Array(items)) => {
            for item in items {
                let field = |name: &str| item.get(name).cloned().unwrap_or(Value::Null);
                match (item.get("role").and_then(Value::as_str), item.get("type").and_then(Value::as_str)) {
                    (Some(role), _) => messages.push(Message { role: role.to_owned(), content: field("content") }),
                    (None, Some("function_call_output")) => {
                        messages.push(Message { role: "tool".into(), content: field("output") })
                    }
                    (None, Some("function_call")) => {
                        messages.push(Message { role: "assistant".into(), content: field("arguments") })
                    }
                    _ => {}
                }
            }
        }
        Some(_) => return Err(invalid("input", "`input` must be a string or an array of input items")),
    }
    if messages.iter().all(|m| m.role == "system") {
        return Err(invalid("input", "`input` must contain at least one message"));
    }
    Ok(messages)
}

/// The envelope, output item id and final status of a completion.
fn shape(completion: &Completion, request: &Map<String, Value>) -> (Envelope, String, Status<'static>, Value) {
    let suffix = completion.id.strip_prefix("chatcmpl-").unwrap_or(&completion.id);
    let envelope = Envelope {
        id: format!("resp_{suffix}"),
        model: completion.model.clone(),
        created_at: completion.created,
        echo: echo_of(request),
    };
    let status = match completion.finish_reason {
        "length" => Status::Incomplete(Incomplete::MaxOutputTokens),
        _ => Status::Completed,
    };
    let usage = usage_json(u64::from(completion.prompt_tokens), completion.pieces.len() as u64, 0, 0);
    (envelope, format!("msg_{suffix}"), status, usage)
}

/// The non-streamed `response` object.
pub fn to_json(completion: &Completion, request: &Map<String, Value>) -> Value {
    let (envelope, item_id, status, usage) = shape(completion, request);
    let output = [message_item(&item_id, "completed", Some(&completion.text()))];
    envelope.response(status, &output, Some(usage))
}

/// The stream's events, from `response.created` to `response.completed` (or
/// `response.incomplete`).
pub fn to_sse(completion: &Completion, request: &Map<String, Value>) -> Vec<bytes::Bytes> {
    let (envelope, item_id, status, usage) = shape(completion, request);
    let mut events = Events::default();
    let mut out = Vec::with_capacity(completion.pieces.len() + 8);
    out.extend(events.start(&envelope));
    out.extend(events.message_added(0, &item_id));
    out.extend(completion.pieces.iter().map(|piece| events.text_delta(0, &item_id, piece)));
    let item = events.message_done(0, &item_id, &completion.text(), &mut out);
    out.extend(events.end(&envelope, status, &[item], Some(usage)));
    out
}

/// Answers a raw Responses request body as OpenAI would, streaming or not.
pub fn respond(body: &[u8]) -> Result<Response<Body>, GatewayError> {
    let request: Map<String, Value> = serde_json::from_slice(body)
        .map_err(|e| GatewayError::InvalidRequest(format!("Request body is not a valid Responses request: {e}")))?;
    let model = request.get("model").and_then(Value::as_str).ok_or(GatewayError::MissingField("model"))?;
    let max_output_tokens = match request.get("max_output_tokens") {
        None | Some(Value::Null) => None,
        Some(v) => Some(
            v.as_u64()
                .filter(|n| *n > 0)
                .and_then(|n| u32::try_from(n).ok())
                .ok_or_else(|| invalid("max_output_tokens", "`max_output_tokens` must be a positive integer"))?,
        ),
    };
    let chat = MockRequest {
        model: Some(model.to_owned()),
        messages: Some(messages(&request)?),
        max_tokens: None,
        max_completion_tokens: max_output_tokens,
        stream: false,
        stream_options: None,
    };
    let completion = complete(&chat, model)?;
    if request.get("stream") == Some(&Value::Bool(true)) {
        return Ok(sse_response(to_sse(&completion, &request)));
    }
    let mut response = Response::new(full(to_json(&completion, &request).to_string()));
    response.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
    Ok(response)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;

    fn request(v: Value) -> Map<String, Value> {
        v.as_object().unwrap().clone()
    }

    fn completion(r: &Map<String, Value>) -> Completion {
        let chat = MockRequest {
            model: Some("mock-1".into()),
            messages: Some(messages(r).unwrap()),
            max_tokens: None,
            max_completion_tokens: r.get("max_output_tokens").and_then(Value::as_u64).map(|n| n as u32),
            stream: false,
            stream_options: None,
        };
        complete(&chat, "mock-1").unwrap()
    }

    #[test]
    fn a_string_input_gets_the_chat_reply_as_a_response() {
        let r = request(serde_json::json!({"model": "mock-1", "input": "hello there", "instructions": "be brief"}));
        let c = completion(&r);
        let v = to_json(&c, &r);
        assert_eq!(v["object"], "response");
        assert_eq!(v["status"], "completed");
        assert!(v["id"].as_str().unwrap().starts_with("resp_"));
        assert_eq!(v["instructions"], "be brief");
        assert_eq!(v["output"][0]["content"][0]["text"], c.text());
        assert!(c.text().contains("hello there"));
        assert_eq!(v["usage"]["output_tokens"], c.pieces.len());
        assert_eq!(v["usage"]["total_tokens"], c.pieces.len() as u64 + u64::from(c.prompt_tokens));
    }

    #[test]
    fn item_lists_and_max_output_tokens() {
        let r = request(serde_json::json!({"model": "mock-1", "max_output_tokens": 2, "input": [
            {"role": "user", "content": [{"type": "input_text", "text": "first"}]},
            {"type": "function_call", "call_id": "c1", "name": "f", "arguments": "{}"},
            {"type": "function_call_output", "call_id": "c1", "output": "42"},
        ]}));
        let v = to_json(&completion(&r), &r);
        assert_eq!(v["status"], "incomplete");
        assert_eq!(v["incomplete_details"]["reason"], "max_output_tokens");
        assert_eq!(v["usage"]["output_tokens"], 2);
    }

    #[test]
    fn the_stream_spells_the_same_text_and_ends_with_usage() {
        let r = request(serde_json::json!({"model": "mock-1", "input": "stream me", "stream": true}));
        let c = completion(&r);
        let events: Vec<Value> = to_sse(&c, &r)
            .iter()
            .map(|e| {
                let text = std::str::from_utf8(e).unwrap();
                serde_json::from_str(text.lines().nth(1).unwrap().strip_prefix("data: ").unwrap()).unwrap()
            })
            .collect();
        let kinds: Vec<&str> = events.iter().map(|e| e["type"].as_str().unwrap()).collect();
        assert_eq!(
            &kinds[..4],
            ["response.created", "response.in_progress", "response.output_item.added", "response.content_part.added"]
        );
        assert_eq!(kinds.last(), Some(&"response.completed"));
        let text: String = events.iter().filter_map(|e| e["delta"].as_str()).collect();
        assert_eq!(text, c.text());
        assert!(events.iter().enumerate().all(|(i, e)| e["sequence_number"] == i));
        assert_eq!(events.last().unwrap()["response"]["usage"]["output_tokens"], c.pieces.len());
    }

    #[test]
    fn input_is_required() {
        assert!(matches!(
            messages(&request(serde_json::json!({"model": "m"}))),
            Err(GatewayError::MissingField("input"))
        ));
        assert!(messages(&request(serde_json::json!({"input": [], "instructions": "x"}))).is_err());
        assert!(respond(br#"{"model":"m","input":"x","max_output_tokens":0}"#).is_err());
    }
}
