//! Anthropic SSE stream → Responses SSE stream. [`StreamTranslator`] is a push parser like the
//! chat one: it takes upstream bytes in whatever splits the network delivers, frames them into
//! events with the shared `anthropic::sse` reader (which holds at most
//! [`MAX_EVENT_BYTES`] of an unfinished event), keeps the text of the answer (which the `…done`
//! events and the final `response` repeat), and returns complete client events. It does no IO.
//!
//! `message_start` opens the response (`response.created`, `response.in_progress`); a text
//! block is a message item (`output_item.added`, `content_part.added`, `output_text.delta`…,
//! `output_text.done`, `content_part.done`, `output_item.done`); a `tool_use` block is a
//! function call item (`output_item.added`, `function_call_arguments.delta`…,
//! `function_call_arguments.done`, `output_item.done`); `message_stop` ends it with
//! `response.completed` (or `response.incomplete` after `max_tokens`) carrying the output and
//! usage. An upstream `error` event, an unreadable or oversized event, or an upstream that stops
//! before `message_stop` ends it with an `error` event and `response.failed`. Nothing is emitted
//! after the end.

use bytes::Bytes;
use serde_json::{Map, Value};

use super::{call_item_id, message_item_id, response_id, status, usage};
use crate::providers::anthropic::forward::Translator;
pub use crate::providers::anthropic::sse::MAX_EVENT_BYTES;
use crate::providers::anthropic::sse::{self, SseReader, SseTranslator};
use crate::providers::anthropic::{RawUsage, Usage, error, now_unix};
use crate::providers::responses::{Envelope, Events, Status};

/// A content block being streamed.
#[derive(Debug)]
struct Open {
    /// Anthropic's block index.
    index: u64,
    output_index: usize,
    kind: OpenKind,
}

#[derive(Debug)]
enum OpenKind {
    Text {
        item_id: String,
        text: String,
    },
    Call {
        item_id: String,
        call_id: String,
        name: String,
        arguments: String,
    },
    /// Thinking and server tool blocks: not part of a Responses answer here.
    Skipped,
}

/// Translates one Anthropic stream into Responses events.
#[derive(Debug)]
pub struct StreamTranslator {
    model: String,
    /// The request's settings; moved into the envelope at `message_start`.
    echo: Option<Map<String, Value>>,
    envelope: Option<Envelope>,
    message_id: String,
    events: Events,
    sse: SseReader,
    open: Vec<Open>,
    next_output_index: usize,
    /// Finished output items with their output index.
    output: Vec<(usize, Value)>,
    usage: Option<RawUsage>,
    stop_reason: Option<String>,
    /// Set once the client stream has ended.
    ended: bool,
}

impl StreamTranslator {
    /// A translator for one response; `model` is echoed as the client asked for it, with the
    /// request's `echo`ed settings.
    pub fn new(model: String, echo: Map<String, Value>) -> Self {
        Self {
            model,
            echo: Some(echo),
            envelope: None,
            message_id: String::new(),
            events: Events::default(),
            sse: SseReader::default(),
            open: Vec::new(),
            next_output_index: 0,
            output: Vec::new(),
            usage: None,
            stop_reason: None,
            ended: false,
        }
    }

    /// Feeds upstream bytes; returns the complete client events they finish, possibly none.
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
        let index = event.get("index").and_then(Value::as_u64).unwrap_or_default();
        match kind {
            "message_start" => {
                let message = event.get("message").unwrap_or(&Value::Null);
                self.message_id = message.get("id").and_then(Value::as_str).unwrap_or("msg_unknown").to_owned();
                if let Some(u) = message.get("usage") {
                    self.usage.get_or_insert_default().update(u);
                }
                let envelope = Envelope {
                    id: response_id(&self.message_id),
                    model: std::mem::take(&mut self.model),
                    created_at: now_unix(),
                    echo: self.echo.take().unwrap_or_default(),
                };
                out.extend(self.events.start(&envelope));
                self.envelope = Some(envelope);
            }
            "content_block_start" => {
                if self.envelope.is_none() {
                    return self.fail(
                        "server_error",
                        "The upstream provider's stream did not start with a message",
                        out,
                    );
                }
                let block = event.get("content_block").unwrap_or(&Value::Null);
                let field = |name: &str| block.get(name).and_then(Value::as_str).unwrap_or_default();
                let output_index = self.next_output_index;
                let kind = match field("type") {
                    "text" => {
                        let item_id = message_item_id(&self.message_id, index);
                        out.extend(self.events.message_added(output_index, &item_id));
                        let text = field("text").to_owned();
                        if !text.is_empty() {
                            out.push(self.events.text_delta(output_index, &item_id, &text));
                        }
                        OpenKind::Text { item_id, text }
                    }
                    "tool_use" => {
                        let (call_id, name) = (field("id").to_owned(), field("name").to_owned());
                        let item_id = call_item_id(&call_id);
                        out.push(self.events.function_call_added(output_index, &item_id, &call_id, &name));
                        OpenKind::Call { item_id, call_id, name, arguments: String::new() }
                    }
                    _ => OpenKind::Skipped,
                };
                if !matches!(kind, OpenKind::Skipped) {
                    self.next_output_index += 1;
                }
                self.open.push(Open { index, output_index, kind });
            }
            "content_block_delta" => {
                let delta = event.get("delta").unwrap_or(&Value::Null);
                let Some(open) = self.open.iter_mut().find(|o| o.index == index) else { return };
                match (&mut open.kind, delta.get("type").and_then(Value::as_str)) {
                    (OpenKind::Text { item_id, text }, Some("text_delta")) => {
                        let piece = delta.get("text").and_then(Value::as_str).unwrap_or_default();
                        if !piece.is_empty() {
                            text.push_str(piece);
                            out.push(self.events.text_delta(open.output_index, item_id, piece));
                        }
                    }
                    (OpenKind::Call { item_id, arguments, .. }, Some("input_json_delta")) => {
                        let piece = delta.get("partial_json").and_then(Value::as_str).unwrap_or_default();
                        if !piece.is_empty() {
                            arguments.push_str(piece);
                            out.push(self.events.arguments_delta(open.output_index, item_id, piece));
                        }
                    }
                    // thinking, signature and citations deltas: nothing for the client.
                    _ => {}
                }
            }
            "content_block_stop" => {
                if let Some(at) = self.open.iter().position(|o| o.index == index) {
                    let open = self.open.remove(at);
                    self.close(open, out);
                }
            }
            "message_delta" => {
                if let Some(u) = event.get("usage") {
                    self.usage.get_or_insert_default().update(u);
                }
                if let Some(reason) = event.get("delta").and_then(|d| d.get("stop_reason")).and_then(Value::as_str) {
                    self.stop_reason = Some(reason.to_owned());
                }
            }
            "message_stop" => {
                let Some(envelope) = self.envelope.take() else {
                    return self.fail(
                        "server_error",
                        "The upstream provider's stream did not start with a message",
                        out,
                    );
                };
                for open in std::mem::take(&mut self.open) {
                    self.close(open, out);
                }
                let output = self.finished_output();
                let usage = usage(self.usage.unwrap_or_default());
                out.extend(self.events.end(&envelope, status(self.stop_reason.as_deref()), &output, Some(usage)));
                self.ended = true;
            }
            "error" => {
                let mapped = error::map_body(0, event);
                let message =
                    mapped.error.get("message").and_then(Value::as_str).unwrap_or("The upstream provider failed");
                let code = if mapped.status == http::StatusCode::TOO_MANY_REQUESTS {
                    "rate_limit_exceeded"
                } else {
                    "server_error"
                };
                let message = message.to_owned();
                self.fail(code, &message, out);
            }
            // `ping` and event types newer than this code.
            _ => {}
        }
    }

    /// The events that finish a content block.
    fn close(&mut self, open: Open, out: &mut Vec<Bytes>) {
        let item = match open.kind {
            OpenKind::Text { item_id, text } => self.events.message_done(open.output_index, &item_id, &text, out),
            OpenKind::Call { item_id, call_id, name, arguments } => {
                let arguments = if arguments.is_empty() { "{}" } else { arguments.as_str() };
                self.events.function_call_done(open.output_index, &item_id, &call_id, &name, arguments, out)
            }
            OpenKind::Skipped => return,
        };
        self.output.push((open.output_index, item));
    }

    fn finished_output(&mut self) -> Vec<Value> {
        let mut output = std::mem::take(&mut self.output);
        output.sort_by_key(|(i, _)| *i);
        output.into_iter().map(|(_, item)| item).collect()
    }

    /// Ends the client stream with an error: `error` and `response.failed` once the response
    /// has started, the `error` event alone before.
    fn fail(&mut self, code: &str, message: &str, out: &mut Vec<Bytes>) {
        match self.envelope.take() {
            Some(envelope) => {
                let output = self.finished_output();
                let usage = self.usage.map(usage);
                out.extend(self.events.end(&envelope, Status::Failed { code, message }, &output, usage));
            }
            None => {
                let fields = serde_json::json!({"code": code, "message": message, "param": null});
                out.push(self.events.event("error", fields));
            }
        }
        self.ended = true;
        self.sse.clear();
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
        self.fail("server_error", message, out);
    }
}

impl Translator for StreamTranslator {
    fn push(&mut self, chunk: &[u8]) -> Vec<Bytes> {
        StreamTranslator::push(self, chunk)
    }

    fn finish(&mut self) -> Vec<Bytes> {
        StreamTranslator::finish(self)
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;
    use crate::providers::responses::echo_defaults;

    const START: &str = "event: message_start\ndata: {\"type\":\"message_start\",\"message\":{\"id\":\"msg_1\",\"usage\":{\"input_tokens\":5,\"output_tokens\":1}}}\n\n";

    fn text(events: &[Bytes]) -> String {
        events.iter().map(|e| String::from_utf8_lossy(e).into_owned()).collect()
    }

    #[test]
    fn a_cut_off_stream_fails_the_response() {
        let mut t = StreamTranslator::new("m".into(), echo_defaults());
        let mut out = t.push(START.as_bytes());
        out.extend(t.finish());
        let all = text(&out);
        assert!(all.contains("event: response.failed"), "{all}");
        assert!(all.contains("before the response was complete"), "{all}");
        assert!(!all.contains("response.completed"));
        assert!(t.finish().is_empty(), "finish twice emits nothing more");
        assert_eq!(t.usage().unwrap().prompt_tokens, 5);
    }

    #[test]
    fn an_error_before_the_message_is_an_error_event_alone() {
        let mut t = StreamTranslator::new("m".into(), echo_defaults());
        let out =
            t.push(b"data: {\"type\":\"error\",\"error\":{\"type\":\"rate_limit_error\",\"message\":\"slow\"}}\n\n");
        let all = text(&out);
        assert!(all.starts_with("event: error\n"), "{all}");
        assert!(all.contains("rate_limit_exceeded") && !all.contains("response.failed"), "{all}");
        assert!(t.finish().is_empty());
    }

    #[test]
    fn unreadable_and_oversized_events_end_the_stream() {
        let mut t = StreamTranslator::new("m".into(), echo_defaults());
        let mut out = t.push(START.as_bytes());
        out.extend(t.push(b"data: {not json\n\n"));
        assert!(text(&out).contains("unreadable"));
        assert!(t.push(START.as_bytes()).is_empty() && t.finish().is_empty());

        let mut t = StreamTranslator::new("m".into(), echo_defaults());
        let out = t.push(&vec![b'x'; MAX_EVENT_BYTES + 1]);
        assert!(text(&out).contains("oversized"));
        assert!(t.finish().is_empty());
    }
}
