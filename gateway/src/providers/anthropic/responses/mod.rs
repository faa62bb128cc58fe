//! OpenAI's Responses API (`POST /v1/responses`) in front of Anthropic's Messages API: pure
//! translation of requests, answers and SSE streams, and [`forward`], the HTTP call around
//! them (the same headers, key failover and error mapping as chat completions).
//!
//! - [`request`]: Responses request → Anthropic `messages` request, refusing by name what
//!   Anthropic cannot honour.
//! - [`response`]: Anthropic message → `response` object.
//! - [`stream`]: Anthropic SSE events → Responses events (`response.created` …
//!   `response.completed`).
//!
//! Ids are derived, not invented, so a stream and its final object agree and tests can pin
//! them: the response is `resp_` + the Anthropic message id's suffix, a text block `i` is the
//! message item `msg_{suffix}_{i}`, a `tool_use` block is the function call item `fc_{suffix}`
//! of its tool use id (whose whole id is the `call_id`).

pub mod request;
pub mod response;
pub mod stream;

use bytes::Bytes;
use http::{Method, Response};
use serde_json::{Map, Value};

pub use request::translate_request;
pub use response::translate_response;
pub use stream::StreamTranslator;

use super::forward::{error_response, event_stream, json_response, read_answer};
use super::{RawUsage, StopReason};
use crate::body::Body;
use crate::error::GatewayError;
use crate::providers::responses::{Incomplete, Status, usage_json};
use crate::upstream::Call;

/// A translated request, ready to send to `/v1/messages`.
#[derive(Debug, Clone, PartialEq)]
pub struct Translated {
    /// The Anthropic request body.
    pub body: Bytes,
    /// Whether the client asked for a stream.
    pub stream: bool,
    /// The model the client asked for, echoed back.
    pub model: String,
    /// The request's settings, echoed in the `response` object.
    pub echo: Map<String, Value>,
}

/// Sends one Responses request to Anthropic and answers in the Responses shape.
pub async fn forward(mut call: Call<'_>, client_body: &[u8]) -> Result<Response<Body>, GatewayError> {
    let Translated { body, stream, model, echo } = translate_request(client_body)?;
    let request = call.request(Method::POST, body);
    let (parts, incoming) = call.send(request).await?.into_parts();
    let body = call.relay(&parts, incoming);
    if !parts.status.is_success() {
        return Ok(error_response(&parts, body).await);
    }
    if stream {
        return Ok(event_stream(body, StreamTranslator::new(model, echo)));
    }
    let bytes = read_answer(body).await?;
    Ok(json_response(translate_response(&bytes, &model, echo)?))
}

/// `resp_…` for an Anthropic message id.
fn response_id(message_id: &str) -> String {
    format!("resp_{}", message_id.strip_prefix("msg_").unwrap_or(message_id))
}

/// The message item of text block `index`.
fn message_item_id(message_id: &str, index: u64) -> String {
    format!("msg_{}_{index}", message_id.strip_prefix("msg_").unwrap_or(message_id))
}

/// The function call item of a `tool_use` block.
fn call_item_id(tool_use_id: &str) -> String {
    format!("fc_{}", tool_use_id.strip_prefix("toolu_").unwrap_or(tool_use_id))
}

/// The response status for an Anthropic `stop_reason`. Reasons newer than this code read as
/// completed: the turn did end.
fn status(stop_reason: Option<&str>) -> Status<'static> {
    match stop_reason.map(StopReason::of) {
        Some(StopReason::OutOfTokens) => Status::Incomplete(Incomplete::MaxOutputTokens),
        Some(StopReason::Refusal) => Status::Incomplete(Incomplete::ContentFilter),
        Some(StopReason::Ended | StopReason::ToolUse) | None => Status::Completed,
    }
}

/// The Responses `usage` object: input counts cache reads and writes, like OpenAI's.
fn usage(raw: RawUsage) -> Value {
    let u = raw.usage();
    usage_json(u.prompt_tokens, u.completion_tokens, u.cached_tokens, u.cache_creation_tokens)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_derived() {
        assert_eq!(response_id("msg_01abc"), "resp_01abc");
        assert_eq!(message_item_id("msg_01abc", 2), "msg_01abc_2");
        assert_eq!(call_item_id("toolu_01x"), "fc_01x");
        assert_eq!(status(Some("max_tokens")), Status::Incomplete(Incomplete::MaxOutputTokens));
        assert_eq!(status(Some("tool_use")), Status::Completed);
        assert_eq!(status(Some("refusal")), Status::Incomplete(Incomplete::ContentFilter));
    }
}
