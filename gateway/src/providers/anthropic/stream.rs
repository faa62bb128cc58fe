//! Anthropic SSE stream → OpenAI `chat.completion.chunk` SSE stream. [`StreamTranslator`] is a
//! push parser: it takes upstream bytes in whatever splits the network delivers, frames them
//! into events with `super::sse` (which holds at most [`MAX_EVENT_BYTES`] of an unfinished
//! event), and returns complete client events. It does no IO; the caller relays what it returns.
//!
//! The stream ends in exactly one of three ways: `data: [DONE]` after Anthropic's
//! `message_stop`; an OpenAI-shaped error event after an upstream `error` event, an unreadable
//! event or an oversized one; or, when the upstream simply stops before `message_stop`, an error
//! event saying so (a client must not mistake a cut-off answer for a complete one). Nothing is
//! emitted after that end.

use bytes::Bytes;
use serde_json::{Map, Value, json};

pub use super::sse::MAX_EVENT_BYTES;
use super::sse::{self, SseReader, SseTranslator};
use super::{RawUsage, Usage, completion_id, error, finish_reason, now_unix};

/// Translates one Anthropic stream into OpenAI chunks.
#[derive(Debug)]
pub struct StreamTranslator {
    model: String,
    include_usage: bool,
    created: u64,
    id: Option<String>,
    sse: SseReader,
    /// Anthropic content block index → OpenAI tool call index, for `tool_use` blocks.
    tools: Vec<(u64, usize)>,
    usage: Option<RawUsage>,
    /// Set once the client stream has ended (`[DONE]` or an error event).
    ended: bool,
}

impl StreamTranslator {
    /// A translator for one response; `model` is echoed as the client asked for it.
    pub fn new(model: &str, include_usage: bool) -> Self {
        Self {
            model: model.to_owned(),
            include_usage,
            created: now_unix(),
            id: None,
            sse: SseReader::default(),
            tools: Vec::new(),
            usage: None,
            ended: false,
        }
    }

    /// Feeds upstream bytes; returns the complete client SSE events they finish, possibly none.
    pub fn push(&mut self, chunk: &[u8]) -> Vec<Bytes> {
        sse::push(self, chunk)
    }

    /// The upstream ended: flushes a last event left without its blank line and returns the
    /// remaining client events, ending the client stream if it has not ended yet.
    pub fn finish(&mut self) -> Vec<Bytes> {
        sse::finish(self)
    }

    /// Usage seen so far, for accounting; `None` until the upstream reports any.
    pub fn usage(&self) -> Option<Usage> {
        self.usage.map(RawUsage::usage)
    }

    fn on_event(&mut self, event: &Value, out: &mut Vec<Bytes>) {
        let kind = event.get("type").and_then(Value::as_str).unwrap_or_default();
        match kind {
            "message_start" => {
                let message = event.get("message").unwrap_or(&Value::Null);
                if let Some(id) = message.get("id").and_then(Value::as_str) {
                    self.id = Some(completion_id(id));
                }
                if let Some(usage) = message.get("usage") {
                    self.usage.get_or_insert_default().update(usage);
                }
                self.chunk(json!({"role": "assistant", "content": ""}), None, out);
            }
            "content_block_start" => {
                let index = event.get("index").and_then(Value::as_u64).unwrap_or_default();
                let block = event.get("content_block").unwrap_or(&Value::Null);
                match block.get("type").and_then(Value::as_str) {
                    Some("text") => {
                        let text = block.get("text").and_then(Value::as_str).unwrap_or_default();
                        if !text.is_empty() {
                            self.chunk(json!({"content": text}), None, out);
                        }
                    }
                    Some("tool_use") => {
                        let tool = self.tools.len();
                        self.tools.push((index, tool));
                        let call = json!({
                            "index": tool,
                            "id": block.get("id").cloned().unwrap_or(Value::Null),
                            "type": "function",
                            "function": {"name": block.get("name").cloned().unwrap_or(Value::Null), "arguments": ""},
                        });
                        self.chunk(json!({"tool_calls": [call]}), None, out);
                    }
                    // Thinking and server tool blocks are not part of an OpenAI answer.
                    _ => {}
                }
            }
            "content_block_delta" => {
                let index = event.get("index").and_then(Value::as_u64).unwrap_or_default();
                let delta = event.get("delta").unwrap_or(&Value::Null);
                match delta.get("type").and_then(Value::as_str) {
                    Some("text_delta") => {
                        let text = delta.get("text").and_then(Value::as_str).unwrap_or_default();
                        if !text.is_empty() {
                            self.chunk(json!({"content": text}), None, out);
                        }
                    }
                    Some("input_json_delta") => {
                        let partial = delta.get("partial_json").and_then(Value::as_str).unwrap_or_default();
                        let tool = self.tools.iter().find(|(block, _)| *block == index).map(|(_, tool)| *tool);
                        if let (Some(tool), false) = (tool, partial.is_empty()) {
                            let call = json!({"index": tool, "function": {"arguments": partial}});
                            self.chunk(json!({"tool_calls": [call]}), None, out);
                        }
                    }
                    // thinking_delta, signature_delta, citations_delta: nothing for the client.
                    _ => {}
                }
            }
            "message_delta" => {
                if let Some(usage) = event.get("usage") {
                    self.usage.get_or_insert_default().update(usage);
                }
                let reason = event.get("delta").and_then(|d| d.get("stop_reason")).and_then(Value::as_str);
                self.chunk(json!({}), Some(finish_reason(reason.unwrap_or("end_turn"))), out);
            }
            "message_stop" => {
                if self.include_usage {
                    let usage = self.usage.unwrap_or_default().usage().to_openai();
                    let mut chunk = self.envelope(Vec::new());
                    chunk.insert("usage".into(), usage);
                    out.push(sse(&Value::Object(chunk)));
                }
                out.push(Bytes::from_static(b"data: [DONE]\n\n"));
                self.ended = true;
            }
            "error" => {
                let mapped = error::map_body(0, event);
                out.push(sse(&json!({"error": mapped.error})));
                self.ended = true;
            }
            // `ping`, `content_block_stop` and event types newer than this code.
            _ => {}
        }
    }

    /// Ends the client stream with an error of the gateway's own.
    fn fail(&mut self, message: &str, out: &mut Vec<Bytes>) {
        let error = json!({"message": message, "type": "api_error", "param": null, "code": "upstream_stream_error"});
        out.push(sse(&json!({"error": error})));
        self.ended = true;
        self.sse.clear();
    }

    /// The fields every chunk shares, with `choices`.
    fn envelope(&self, choices: Vec<Value>) -> Map<String, Value> {
        let mut chunk = Map::new();
        let id = self.id.clone().unwrap_or_else(|| completion_id("unknown"));
        chunk.insert("id".into(), Value::String(id));
        chunk.insert("object".into(), json!("chat.completion.chunk"));
        chunk.insert("created".into(), json!(self.created));
        chunk.insert("model".into(), json!(self.model));
        chunk.insert("choices".into(), Value::Array(choices));
        chunk
    }

    /// One choice chunk; with `include_usage`, OpenAI sends `"usage": null` on all but the last.
    fn chunk(&self, delta: Value, finish: Option<&str>, out: &mut Vec<Bytes>) {
        let choice = json!({"index": 0, "delta": delta, "logprobs": null, "finish_reason": finish});
        let mut chunk = self.envelope(vec![choice]);
        if self.include_usage {
            chunk.insert("usage".into(), Value::Null);
        }
        out.push(sse(&Value::Object(chunk)));
    }
}

impl SseTranslator for StreamTranslator {
    fn sse(&mut self) -> &mut SseReader {
        &mut self.sse
    }

    fn is_ended(&self) -> bool {
        self.ended
    }

    fn translate(&mut self, event: &Value, out: &mut Vec<Bytes>) {
        self.on_event(event, out);
    }

    fn end_with_error(&mut self, message: &str, out: &mut Vec<Bytes>) {
        self.fail(message, out);
    }
}

fn sse(value: &Value) -> Bytes {
    Bytes::from(format!("data: {value}\n\n"))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;

    const START: &str = "event: message_start\ndata: {\"type\":\"message_start\",\"message\":{\"id\":\"msg_1\",\"usage\":{\"input_tokens\":5,\"output_tokens\":1}}}\n\n";

    fn text(events: &[Bytes]) -> String {
        events.iter().map(|e| String::from_utf8_lossy(e).into_owned()).collect()
    }

    #[test]
    fn a_cut_off_stream_ends_with_an_error_not_done() {
        let mut t = StreamTranslator::new("m", false);
        let mut out = t.push(START.as_bytes());
        out.extend(t.finish());
        let all = text(&out);
        assert!(all.contains("before the response was complete"), "{all}");
        assert!(!all.contains("[DONE]"));
        assert!(t.finish().is_empty(), "finish twice emits nothing more");
        assert_eq!(t.usage().unwrap().prompt_tokens, 5);
    }

    #[test]
    fn a_last_event_without_its_blank_line_is_flushed() {
        let mut t = StreamTranslator::new("m", false);
        let mut out = t.push(START.as_bytes());
        out.extend(t.push(b"data: {\"type\":\"message_stop\"}"));
        assert_eq!(out.len(), 1);
        out.extend(t.finish());
        assert!(text(&out).ends_with("data: [DONE]\n\n"));
    }

    #[test]
    fn unreadable_and_oversized_events_end_the_stream() {
        let mut t = StreamTranslator::new("m", false);
        let out = t.push(b"data: {not json\n\n");
        assert!(text(&out).contains("unreadable"));
        assert!(t.push(START.as_bytes()).is_empty() && t.finish().is_empty());

        let mut t = StreamTranslator::new("m", false);
        let out = t.push(&vec![b'x'; MAX_EVENT_BYTES + 1]);
        assert!(text(&out).contains("oversized"));
        assert!(t.finish().is_empty());
    }

    #[test]
    fn no_usage_before_the_upstream_reports_it() {
        assert_eq!(StreamTranslator::new("m", true).usage(), None);
    }
}
