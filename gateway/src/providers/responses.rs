//! OpenAI's Responses API wire format, for the answers uprox writes itself (the `mock` provider,
//! the Anthropic translation) and for reading `usage` out of the answers it relays.
//!
//! - [`Envelope`]: the `response` object — the fields every answer repeats (id, model, the
//!   request's echoed settings) around what changes (status, output, usage).
//! - [`Events`]: server-sent events in the Responses shape, `event:` and `data:` lines with a
//!   `sequence_number` counting from 0.
//! - [`Usage`], [`response_usage`], [`SseUsage`]: token usage of a relayed answer — a JSON
//!   `response` object or the `response.completed` event of a stream — for accounting. They read
//!   the bytes they are shown; they never hold back or copy what is relayed.
//!
//! It does no IO and knows nothing about providers.

use bytes::Bytes;
use serde::Deserialize;
use serde_json::{Map, Value, json};

/// The fields of a `response` object that do not change while it is produced.
#[derive(Debug, Clone)]
pub struct Envelope {
    /// `resp_…`.
    pub id: String,
    /// The model, as the client named it.
    pub model: String,
    /// Unix seconds.
    pub created_at: u64,
    /// The request's settings echoed back, as OpenAI does (`instructions`, `tools`,
    /// `temperature`, …); see [`echo_defaults`].
    pub echo: Map<String, Value>,
}

/// How a response ended, when it did not complete.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Incomplete {
    /// `max_output_tokens` cut the answer.
    MaxOutputTokens,
    /// The provider withheld the answer.
    ContentFilter,
}

impl Incomplete {
    fn reason(self) -> &'static str {
        match self {
            Incomplete::MaxOutputTokens => "max_output_tokens",
            Incomplete::ContentFilter => "content_filter",
        }
    }
}

/// The status of a response, with what goes with it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Status<'a> {
    /// Still being produced (the `response.created` and `response.in_progress` events).
    InProgress,
    /// Done.
    Completed,
    /// Done, but cut short.
    Incomplete(Incomplete),
    /// Failed, with an error `code` (one of the SDK's `ResponseError` codes) and a message.
    Failed {
        /// `server_error`, `rate_limit_exceeded`, …
        code: &'a str,
        /// For the caller.
        message: &'a str,
    },
}

impl Status<'_> {
    /// The `status` string.
    pub fn as_str(&self) -> &'static str {
        match self {
            Status::InProgress => "in_progress",
            Status::Completed => "completed",
            Status::Incomplete(_) => "incomplete",
            Status::Failed { .. } => "failed",
        }
    }
}

/// The echoed settings of a request that names none: what OpenAI answers with.
pub fn echo_defaults() -> Map<String, Value> {
    let mut echo = Map::new();
    for (k, v) in [
        ("instructions", Value::Null),
        ("max_output_tokens", Value::Null),
        ("metadata", json!({})),
        ("parallel_tool_calls", json!(true)),
        ("temperature", json!(1.0)),
        ("tool_choice", json!("auto")),
        ("tools", json!([])),
        ("top_p", json!(1.0)),
        ("user", Value::Null),
    ] {
        echo.insert(k.to_owned(), v);
    }
    echo
}

/// The echoed settings of `request`: [`echo_defaults`] with the request's own values.
pub fn echo_of(request: &Map<String, Value>) -> Map<String, Value> {
    let mut echo = echo_defaults();
    for (key, value) in echo.iter_mut() {
        if let Some(v) = request.get(key).filter(|v| !v.is_null()) {
            *value = v.clone();
        }
    }
    echo
}

impl Envelope {
    /// The `response` object.
    pub fn response(&self, status: Status<'_>, output: &[Value], usage: Option<Value>) -> Value {
        let mut r = self.echo.clone();
        r.insert("id".into(), Value::String(self.id.clone()));
        r.insert("object".into(), json!("response"));
        r.insert("created_at".into(), json!(self.created_at));
        r.insert("model".into(), Value::String(self.model.clone()));
        r.insert("status".into(), json!(status.as_str()));
        r.insert("background".into(), json!(false));
        r.insert("previous_response_id".into(), Value::Null);
        r.insert("reasoning".into(), json!({"effort": null, "summary": null}));
        // Answers uprox writes itself are never stored: `GET /v1/responses/{id}` cannot find them.
        r.insert("store".into(), json!(false));
        r.insert("text".into(), json!({"format": {"type": "text"}}));
        r.insert("truncation".into(), json!("disabled"));
        r.insert("output".into(), Value::Array(output.to_vec()));
        r.insert("usage".into(), usage.unwrap_or(Value::Null));
        let incomplete = match status {
            Status::Incomplete(why) => json!({"reason": why.reason()}),
            _ => Value::Null,
        };
        r.insert("incomplete_details".into(), incomplete);
        let error = match status {
            Status::Failed { code, message } => json!({"code": code, "message": message}),
            _ => Value::Null,
        };
        r.insert("error".into(), error);
        Value::Object(r)
    }
}

/// The `usage` object: `input_tokens` counts every input token, cached or not.
pub fn usage_json(input_tokens: u64, output_tokens: u64, cached_tokens: u64, cache_write_tokens: u64) -> Value {
    json!({
        "input_tokens": input_tokens,
        "input_tokens_details": {"cached_tokens": cached_tokens, "cache_write_tokens": cache_write_tokens},
        "output_tokens": output_tokens,
        "output_tokens_details": {"reasoning_tokens": 0},
        "total_tokens": input_tokens + output_tokens,
    })
}

/// An assistant `message` output item with one `output_text` part.
pub fn message_item(id: &str, status: &str, text: Option<&str>) -> Value {
    let content = match text {
        Some(text) => vec![text_part(text)],
        None => Vec::new(),
    };
    json!({"id": id, "type": "message", "status": status, "role": "assistant", "content": content})
}

/// An `output_text` content part.
pub fn text_part(text: &str) -> Value {
    json!({"type": "output_text", "text": text, "annotations": [], "logprobs": []})
}

/// A `function_call` output item.
pub fn function_call_item(id: &str, status: &str, call_id: &str, name: &str, arguments: &str) -> Value {
    json!({"id": id, "type": "function_call", "status": status, "call_id": call_id, "name": name, "arguments": arguments})
}

/// Writes Responses stream events, numbering them.
#[derive(Debug, Default)]
pub struct Events {
    sequence: u64,
}

impl Events {
    /// One event of type `kind` with `fields`, `type` and `sequence_number` added.
    pub fn event(&mut self, kind: &str, fields: Value) -> Bytes {
        let mut object = match fields {
            Value::Object(m) => m,
            _ => Map::new(),
        };
        object.insert("type".into(), json!(kind));
        object.insert("sequence_number".into(), json!(self.sequence));
        self.sequence += 1;
        Bytes::from(format!("event: {kind}\ndata: {}\n\n", Value::Object(object)))
    }

    /// `response.created` and `response.in_progress` for a response just started.
    pub fn start(&mut self, envelope: &Envelope) -> [Bytes; 2] {
        let response = envelope.response(Status::InProgress, &[], None);
        [
            self.event("response.created", json!({"response": response})),
            self.event("response.in_progress", json!({"response": response})),
        ]
    }

    /// The events that open a message item at `output_index`, up to its empty text part.
    pub fn message_added(&mut self, output_index: usize, item_id: &str) -> [Bytes; 2] {
        [
            self.event(
                "response.output_item.added",
                json!({"output_index": output_index, "item": message_item(item_id, "in_progress", None)}),
            ),
            self.event(
                "response.content_part.added",
                json!({"item_id": item_id, "output_index": output_index, "content_index": 0, "part": text_part("")}),
            ),
        ]
    }

    /// One `response.output_text.delta`.
    pub fn text_delta(&mut self, output_index: usize, item_id: &str, delta: &str) -> Bytes {
        self.event(
            "response.output_text.delta",
            json!({"item_id": item_id, "output_index": output_index, "content_index": 0, "delta": delta, "logprobs": []}),
        )
    }

    /// The events that close a message item: the text, the part, the item; returns the item.
    pub fn message_done(&mut self, output_index: usize, item_id: &str, text: &str, out: &mut Vec<Bytes>) -> Value {
        let item = message_item(item_id, "completed", Some(text));
        out.push(self.event(
            "response.output_text.done",
            json!({"item_id": item_id, "output_index": output_index, "content_index": 0, "text": text, "logprobs": []}),
        ));
        out.push(self.event(
            "response.content_part.done",
            json!({"item_id": item_id, "output_index": output_index, "content_index": 0, "part": text_part(text)}),
        ));
        out.push(self.event("response.output_item.done", json!({"output_index": output_index, "item": item})));
        item
    }

    /// The event that opens a function call item.
    pub fn function_call_added(&mut self, output_index: usize, item_id: &str, call_id: &str, name: &str) -> Bytes {
        let item = function_call_item(item_id, "in_progress", call_id, name, "");
        self.event("response.output_item.added", json!({"output_index": output_index, "item": item}))
    }

    /// One `response.function_call_arguments.delta`.
    pub fn arguments_delta(&mut self, output_index: usize, item_id: &str, delta: &str) -> Bytes {
        self.event(
            "response.function_call_arguments.delta",
            json!({"item_id": item_id, "output_index": output_index, "delta": delta}),
        )
    }

    /// The events that close a function call item; returns the item.
    pub fn function_call_done(
        &mut self,
        output_index: usize,
        item_id: &str,
        call_id: &str,
        name: &str,
        arguments: &str,
        out: &mut Vec<Bytes>,
    ) -> Value {
        let item = function_call_item(item_id, "completed", call_id, name, arguments);
        out.push(self.event(
            "response.function_call_arguments.done",
            json!({"item_id": item_id, "output_index": output_index, "name": name, "arguments": arguments}),
        ));
        out.push(self.event("response.output_item.done", json!({"output_index": output_index, "item": item})));
        item
    }

    /// The last event: `response.completed`, `response.incomplete` or `response.failed` (after
    /// an `error` event) with the whole response.
    pub fn end(
        &mut self,
        envelope: &Envelope,
        status: Status<'_>,
        output: &[Value],
        usage: Option<Value>,
    ) -> Vec<Bytes> {
        let mut out = Vec::with_capacity(2);
        let kind = match status {
            Status::InProgress | Status::Completed => "response.completed",
            Status::Incomplete(_) => "response.incomplete",
            Status::Failed { code, message } => {
                out.push(self.event("error", json!({"code": code, "message": message, "param": null})));
                "response.failed"
            }
        };
        let response = envelope.response(status, output, usage);
        out.push(self.event(kind, json!({"response": response})));
        out
    }
}

/// Token usage of one response, in OpenAI's terms.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
pub struct Usage {
    /// Every input token, cached ones included.
    #[serde(default)]
    pub input_tokens: u64,
    /// Output tokens, reasoning included.
    #[serde(default)]
    pub output_tokens: u64,
    /// Input tokens served from the prompt cache.
    #[serde(default, rename = "input_tokens_details", deserialize_with = "cached_tokens")]
    pub cached_tokens: u64,
}

fn cached_tokens<'de, D: serde::Deserializer<'de>>(d: D) -> Result<u64, D::Error> {
    #[derive(Deserialize)]
    struct Details {
        #[serde(default)]
        cached_tokens: Option<u64>,
    }
    Ok(Option::<Details>::deserialize(d)?.and_then(|d| d.cached_tokens).unwrap_or(0))
}

/// The `usage` of a `response` object (a non-streamed answer); `None` when it has none.
/// Unknown fields are skipped by the parser, not stored.
pub fn response_usage(body: &[u8]) -> Option<Usage> {
    #[derive(Deserialize)]
    struct Response {
        usage: Option<Usage>,
    }
    serde_json::from_slice::<Response>(body).ok()?.usage
}

/// The largest final event [`SseUsage`] keeps to read its usage; larger ones are skipped.
pub const MAX_FINAL_EVENT_BYTES: usize = 8 * 1024 * 1024;

/// Reads `usage` from a relayed Responses stream, fed the bytes as they pass in whatever
/// splits the network delivers. Only the `data:` line of a final event (`response.completed`,
/// `response.incomplete`, `response.failed`) is kept; every other line is skipped as it is
/// scanned, so memory stays bounded by the final event.
#[derive(Debug, Default)]
pub struct SseUsage {
    /// The current line, while it may still be (or is) a final event's data.
    line: Vec<u8>,
    /// The current line is known to be uninteresting: skip to its end.
    skipping: bool,
    /// The last `event:` line named a final event.
    final_event: bool,
    usage: Option<Usage>,
}

/// How much of a line is read to decide whether it matters: more than any prefix below.
const PREFIX_WINDOW: usize = 64;

/// The prefix of a final event's data in the order OpenAI writes it (`type` first), to find it
/// when no `event:` line precedes it.
const FINAL_PREFIXES: [&[u8]; 3] = [
    b"data: {\"type\":\"response.completed\"",
    b"data: {\"type\":\"response.incomplete\"",
    b"data: {\"type\":\"response.failed\"",
];

impl SseUsage {
    /// Scans more bytes.
    pub fn push(&mut self, mut chunk: &[u8]) {
        while !chunk.is_empty() {
            let end = chunk.iter().position(|&b| b == b'\n');
            let (part, rest) = match end {
                Some(i) => (&chunk[..i], &chunk[i + 1..]),
                None => (chunk, &[][..]),
            };
            chunk = rest;
            if !self.skipping {
                // Decide on the line's start before keeping the rest of it.
                let head = part.len().min(PREFIX_WINDOW.saturating_sub(self.line.len()));
                self.line.extend_from_slice(&part[..head]);
                if self.may_matter() {
                    self.line.extend_from_slice(&part[head..]);
                }
                if !self.may_matter() {
                    self.skipping = true;
                    self.line.clear();
                }
            }
            if end.is_some() {
                if !self.skipping {
                    let mut line = std::mem::take(&mut self.line);
                    if line.last() == Some(&b'\r') {
                        line.pop();
                    }
                    self.on_line(&line);
                    line.clear();
                    self.line = line;
                }
                self.skipping = false;
            }
        }
    }

    /// The usage of the final event, once it has passed.
    pub fn usage(&self) -> Option<Usage> {
        self.usage
    }

    /// Whether the line read so far may be an `event:` line or a final event's data.
    fn may_matter(&self) -> bool {
        let line = self.line.as_slice();
        if line.len() > MAX_FINAL_EVENT_BYTES {
            return false;
        }
        let prefix_of = |p: &[u8]| line.len() <= p.len() && p.starts_with(line) || line.starts_with(p);
        if prefix_of(b"event:") && line.len() < 64 {
            return true;
        }
        if self.final_event && prefix_of(b"data:") {
            return true;
        }
        FINAL_PREFIXES.iter().any(|p| prefix_of(p))
    }

    fn on_line(&mut self, line: &[u8]) {
        if let Some(name) = line.strip_prefix(b"event:") {
            let name = name.strip_prefix(b" ").unwrap_or(name);
            self.final_event = matches!(name, b"response.completed" | b"response.incomplete" | b"response.failed");
        } else if let Some(data) = line.strip_prefix(b"data:") {
            #[derive(Deserialize)]
            struct Event {
                response: Option<ResponseUsage>,
            }
            #[derive(Deserialize)]
            struct ResponseUsage {
                usage: Option<Usage>,
            }
            if let Some(usage) = serde_json::from_slice::<Event>(data).ok().and_then(|e| e.response?.usage) {
                self.usage = Some(usage);
            }
            self.final_event = false;
        } else if line.is_empty() {
            self.final_event = false;
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;

    const STREAM: &str = concat!(
        "event: response.created\ndata: {\"type\":\"response.created\",\"response\":{\"id\":\"resp_1\",\"usage\":null},\"sequence_number\":0}\n\n",
        "event: response.output_text.delta\ndata: {\"type\":\"response.output_text.delta\",\"delta\":\"Hi\",\"sequence_number\":1}\n\n",
        "event: response.completed\ndata: {\"type\":\"response.completed\",\"response\":{\"id\":\"resp_1\",\"output\":[{\"type\":\"message\"}],",
        "\"usage\":{\"input_tokens\":36,\"input_tokens_details\":{\"cached_tokens\":4},\"output_tokens\":87,",
        "\"output_tokens_details\":{\"reasoning_tokens\":0},\"total_tokens\":123}},\"sequence_number\":2}\n\n",
    );

    #[test]
    fn usage_is_read_from_a_response_object() {
        let body = br#"{"id":"resp_1","object":"response","output":[],"usage":{"input_tokens":5,"input_tokens_details":{"cached_tokens":2},"output_tokens":3,"total_tokens":8}}"#;
        assert_eq!(response_usage(body), Some(Usage { input_tokens: 5, output_tokens: 3, cached_tokens: 2 }));
        assert_eq!(response_usage(br#"{"id":"x","usage":null}"#), None);
        assert_eq!(response_usage(b"not json"), None);
        let no_details = br#"{"usage":{"input_tokens":1,"output_tokens":1}}"#;
        assert_eq!(response_usage(no_details).unwrap().cached_tokens, 0);
    }

    #[test]
    fn usage_is_read_from_the_completed_event_in_any_split() {
        let want = Some(Usage { input_tokens: 36, output_tokens: 87, cached_tokens: 4 });
        for size in [1, 3, 7, 64, STREAM.len()] {
            let mut scanner = SseUsage::default();
            for chunk in STREAM.as_bytes().chunks(size) {
                scanner.push(chunk);
            }
            assert_eq!(scanner.usage(), want, "chunks of {size}");
        }
        // Without `event:` lines, and with CRLF.
        let bare: String = STREAM.lines().filter(|l| !l.starts_with("event:")).map(|l| format!("{l}\r\n")).collect();
        let mut scanner = SseUsage::default();
        scanner.push(bare.as_bytes());
        assert_eq!(scanner.usage(), want);
    }

    #[test]
    fn other_events_are_not_kept() {
        let mut scanner = SseUsage::default();
        let delta =
            format!("data: {{\"type\":\"response.output_text.delta\",\"delta\":\"{}\"}}\n\n", "x".repeat(10_000));
        scanner.push(delta.as_bytes());
        assert!(scanner.line.capacity() < 1024);
        assert_eq!(scanner.usage(), None);
    }

    #[test]
    fn events_are_numbered_and_typed() {
        let mut events = Events::default();
        let envelope = Envelope { id: "resp_1".into(), model: "m".into(), created_at: 1, echo: echo_defaults() };
        let start = events.start(&envelope);
        let text = std::str::from_utf8(&start[1]).unwrap();
        assert!(text.starts_with("event: response.in_progress\ndata: {"), "{text}");
        let v: Value = serde_json::from_str(text.lines().nth(1).unwrap().strip_prefix("data: ").unwrap()).unwrap();
        assert_eq!(v["sequence_number"], 1);
        assert_eq!(v["response"]["status"], "in_progress");
        let end = events.end(&envelope, Status::Failed { code: "server_error", message: "boom" }, &[], None);
        assert_eq!(end.len(), 2);
        assert!(std::str::from_utf8(&end[0]).unwrap().starts_with("event: error\n"));
        assert!(std::str::from_utf8(&end[1]).unwrap().contains("\"sequence_number\":3"));
    }
}
