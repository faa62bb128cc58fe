//! Anthropic's native Messages API (`POST /v1/messages`) behind the OpenAI Chat Completions
//! surface: pure translation of requests, responses, SSE streams and errors, with no IO. The
//! HTTP call around them is [`forward`]; the translations themselves only rewrite bodies.
//!
//! Anything a client asks for that Anthropic cannot honour is refused with a 400 naming the
//! parameter rather than dropped, so a client never gets silently different behaviour. Unknown
//! top-level fields are ignored for forward-compatibility and never forwarded.
//!
//! - [`request`]: OpenAI `chat.completions` request → Anthropic `messages` request.
//! - [`response`]: Anthropic message → OpenAI `chat.completion`.
//! - [`stream`]: Anthropic SSE events → OpenAI `chat.completion.chunk` events.
//! - `sse`: Anthropic's SSE framing, read incrementally; shared by both stream translators.
//! - `turns` and `tools`: the parts of an Anthropic request both request translations build.
//! - [`error`]: Anthropic error responses → gateway status and OpenAI-shaped error bodies.
//! - [`forward`]: the HTTP call around them.
//! - [`responses`]: the same for OpenAI's Responses API (`POST /v1/responses`).

pub mod error;
pub mod forward;
mod messages;
pub mod request;
pub mod response;
pub mod responses;
mod sse;
pub mod stream;
mod tools;
mod turns;

use std::time::{SystemTime, UNIX_EPOCH};

use serde_json::{Value, json};

pub use error::translate_error;
pub use request::translate_request;
pub use response::{response_usage, translate_response};
pub use stream::StreamTranslator;

/// The `anthropic-version` header value the translation is written against.
pub const API_VERSION: &str = "2023-06-01";
/// Anthropic requires `max_tokens`; this is sent when the client sets neither `max_tokens` nor
/// `max_completion_tokens`.
pub const DEFAULT_MAX_TOKENS: u32 = 4096;

/// A translated request, ready to send to `/v1/messages`.
#[derive(Debug, Clone, PartialEq)]
pub struct Translated {
    /// The Anthropic request body.
    pub body: bytes::Bytes,
    /// Whether the client asked for a stream (`stream: true`, also set in `body`).
    pub stream: bool,
    /// `stream_options.include_usage`: whether the client wants a final usage chunk. Not sent
    /// upstream; pass it to [`StreamTranslator::new`].
    pub include_usage: bool,
    /// The model the client asked for, to echo back in responses.
    pub model: String,
}

/// Token usage of one completion, in OpenAI's terms plus the cache-write count Anthropic bills
/// separately.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Usage {
    /// All input tokens: uncached input + cache reads + cache writes.
    pub prompt_tokens: u64,
    /// Output tokens.
    pub completion_tokens: u64,
    /// Input tokens read from the prompt cache (`cache_read_input_tokens`).
    pub cached_tokens: u64,
    /// Input tokens written to the prompt cache (`cache_creation_input_tokens`).
    pub cache_creation_tokens: u64,
}

/// The parts of Anthropic's `usage` object, each kept apart so a stream can update them one by
/// one (`message_start` carries input counts, `message_delta` the output count).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
struct RawUsage {
    input: u64,
    output: u64,
    cache_read: u64,
    cache_creation: u64,
}

impl RawUsage {
    /// Overwrites the counts present in an Anthropic `usage` object; absent ones are kept.
    fn update(&mut self, usage: &Value) {
        let field = |name: &str| usage.get(name).and_then(Value::as_u64);
        if let Some(n) = field("input_tokens") {
            self.input = n;
        }
        if let Some(n) = field("output_tokens") {
            self.output = n;
        }
        if let Some(n) = field("cache_read_input_tokens") {
            self.cache_read = n;
        }
        if let Some(n) = field("cache_creation_input_tokens") {
            self.cache_creation = n;
        }
    }

    fn usage(self) -> Usage {
        Usage {
            prompt_tokens: self.input + self.cache_read + self.cache_creation,
            completion_tokens: self.output,
            cached_tokens: self.cache_read,
            cache_creation_tokens: self.cache_creation,
        }
    }
}

impl Usage {
    /// OpenAI's `usage` object.
    pub fn to_openai(self) -> Value {
        json!({
            "prompt_tokens": self.prompt_tokens,
            "completion_tokens": self.completion_tokens,
            "total_tokens": self.prompt_tokens + self.completion_tokens,
            "prompt_tokens_details": {"cached_tokens": self.cached_tokens},
        })
    }
}

/// Why an Anthropic turn ended, read once from its `stop_reason` for both OpenAI surfaces
/// (chat's `finish_reason`, the Responses `status`). Reasons newer than this code read as
/// [`StopReason::Ended`]: the turn did end.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum StopReason {
    /// `end_turn`, `stop_sequence`, `pause_turn` and reasons newer than this code.
    Ended,
    /// The output or the context window ran out of tokens.
    OutOfTokens,
    /// The model called a tool.
    ToolUse,
    /// The model refused.
    Refusal,
}

impl StopReason {
    fn of(stop_reason: &str) -> Self {
        match stop_reason {
            "max_tokens" | "model_context_window_exceeded" => Self::OutOfTokens,
            "tool_use" => Self::ToolUse,
            "refusal" => Self::Refusal,
            _ => Self::Ended,
        }
    }
}

/// Anthropic `stop_reason` → OpenAI `finish_reason`; an unknown reason is `stop`, the answer
/// clients handle best.
fn finish_reason(stop_reason: &str) -> &'static str {
    match StopReason::of(stop_reason) {
        StopReason::OutOfTokens => "length",
        StopReason::ToolUse => "tool_calls",
        StopReason::Refusal => "content_filter",
        StopReason::Ended => "stop",
    }
}

/// OpenAI's completion id for an Anthropic message id.
fn completion_id(message_id: &str) -> String {
    format!("chatcmpl-{message_id}")
}

fn now_unix() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prompt_tokens_include_cache_reads_and_writes() {
        let mut raw = RawUsage::default();
        raw.update(&json!({"input_tokens": 10, "cache_read_input_tokens": 100, "cache_creation_input_tokens": 5}));
        raw.update(&json!({"output_tokens": 7}));
        let usage = raw.usage();
        assert_eq!(
            usage,
            Usage { prompt_tokens: 115, completion_tokens: 7, cached_tokens: 100, cache_creation_tokens: 5 }
        );
        assert_eq!(usage.to_openai()["total_tokens"], 122);
    }

    #[test]
    fn stop_reasons() {
        assert_eq!(finish_reason("end_turn"), "stop");
        assert_eq!(finish_reason("stop_sequence"), "stop");
        assert_eq!(finish_reason("max_tokens"), "length");
        assert_eq!(finish_reason("tool_use"), "tool_calls");
        assert_eq!(finish_reason("refusal"), "content_filter");
        assert_eq!(finish_reason("pause_turn"), "stop");
    }
}
