//! Converts cached answers between the two shapes of the OpenAI APIs — a JSON body and a
//! `text/event-stream` — so one cache entry answers a request whether it streams or not (the
//! key ignores `stream`, see [`super::key`]). Pure functions over bytes; bad input gives `None`.
//!
//! **Chat Completions.** Events → JSON merges the `chat.completion.chunk`s per choice (by
//! `index`): content, refusal and tool-call arguments concatenated, tool calls merged by their
//! `index`, the last `finish_reason`, content/refusal logprobs appended, annotations appended.
//! JSON → events writes, per choice, one chunk with the whole message and then one with its
//! `finish_reason`. Not carried either way: `message.audio`, the legacy `function_call`, and
//! per-chunk extras (`obfuscation`, the `usage: null` of every chunk). An empty `annotations`
//! list is not streamed, and a merged message always has one (as non-streamed answers do). A
//! choice's logprobs ride on its first chunk. A stream with an `error` chunk is no answer (None).
//!
//! **Responses.** Events → JSON is the `response` of the terminal `response.completed` (or
//! `response.incomplete`) event, as sent. JSON → events replays the response item by item
//! (created, in progress, each item added with its parts and deltas and done, then the terminal
//! event carrying the response as given), so the round trip is exact. A `response.failed` stream
//! is no answer (None).
//!
//! Event streams are read as the SSE specification says (see the private `sse` module).

use std::collections::BTreeMap;

use bytes::Bytes;
use serde_json::{Map, Value, json};
use uprox_crds::prices::Usage;

mod sse;
#[cfg(test)]
mod tests;

use sse::parse_events;

/// Chat Completions: a `text/event-stream` answer (`data: {chat.completion.chunk}\n\n` …
/// `data: [DONE]\n\n`; events may also carry `event:`/`id:` lines, `\r\n` line ends, comments)
/// as the `chat.completion` JSON body a non-streamed request would have got. `usage` fills
/// `"usage"` when the stream carried no usage chunk. None when the bytes are not a complete chat
/// stream (no `[DONE]`, unparsable chunk, no chunk at all).
pub fn chat_events_to_json(events: &[u8], usage: Option<&Usage>) -> Option<Bytes> {
    let stream = ChatStream::parse(events)?;
    let mut body = Map::new();
    body.insert("id".into(), stream.first_field("id"));
    body.insert("object".into(), "chat.completion".into());
    body.insert("created".into(), stream.first_field("created"));
    body.insert("model".into(), stream.first_field("model"));
    for field in ["system_fingerprint", "service_tier"] {
        if let Some(value) = stream.field(field) {
            body.insert(field.into(), value.clone());
        }
    }
    let mut choices: BTreeMap<u64, ChoiceAcc> = BTreeMap::new();
    for chunk in &stream.chunks {
        for choice in chunk.get("choices").and_then(Value::as_array).into_iter().flatten() {
            let index = choice.get("index").and_then(Value::as_u64).unwrap_or(0);
            choices.entry(index).or_default().add(choice);
        }
    }
    let choices: Vec<Value> = choices.into_iter().map(|(index, choice)| choice.into_json(index)).collect();
    body.insert("choices".into(), Value::Array(choices));
    if let Some(usage) = stream.usage().cloned().or_else(|| usage.map(chat_usage)) {
        body.insert("usage".into(), usage);
    }
    to_bytes(&Value::Object(body))
}

/// Chat Completions: a `chat.completion` JSON body as the event stream a streamed request would
/// have got, `data: [DONE]\n\n` last. With `include_usage`, a final usage chunk
/// (`"choices":[]`, the body's `usage`) precedes `[DONE]`, as OpenAI sends for
/// `stream_options.include_usage` (none when the body has no usage).
pub fn chat_json_to_events(json: &[u8], include_usage: bool) -> Option<Bytes> {
    let body: Value = serde_json::from_slice(json).ok()?;
    let body = body.as_object()?;
    let choices = body.get("choices")?.as_array()?;
    let base = chunk_base(body);
    let mut out = Vec::new();
    for choice in choices {
        let index = choice.get("index").cloned().unwrap_or(Value::from(0));
        let message = choice.get("message").and_then(Value::as_object).cloned().unwrap_or_default();
        let mut delta = Map::new();
        delta.insert("role".into(), message.get("role").cloned().unwrap_or_else(|| "assistant".into()));
        delta.insert("content".into(), message.get("content").cloned().unwrap_or(Value::Null));
        if let Some(refusal) = message.get("refusal").filter(|r| !r.is_null()) {
            delta.insert("refusal".into(), refusal.clone());
        }
        if let Some(calls) = message.get("tool_calls").and_then(Value::as_array).filter(|c| !c.is_empty()) {
            let calls = calls.iter().enumerate().map(|(i, call)| tool_call_delta(i, call)).collect();
            delta.insert("tool_calls".into(), Value::Array(calls));
        }
        if let Some(annotations) = message.get("annotations").and_then(Value::as_array).filter(|a| !a.is_empty()) {
            delta.insert("annotations".into(), Value::Array(annotations.clone()));
        }
        let logprobs = choice.get("logprobs").cloned().unwrap_or(Value::Null);
        let choice = json!({"index": index, "delta": delta, "logprobs": logprobs, "finish_reason": null});
        write_data(&mut out, &chunk(&base, vec![choice], None))?;
    }
    for choice in choices {
        let index = choice.get("index").cloned().unwrap_or(Value::from(0));
        let finish_reason = choice.get("finish_reason").cloned().unwrap_or(Value::Null);
        let choice = json!({"index": index, "delta": {}, "logprobs": null, "finish_reason": finish_reason});
        write_data(&mut out, &chunk(&base, vec![choice], None))?;
    }
    if let Some(usage) = body.get("usage").filter(|u| include_usage && u.is_object()) {
        write_data(&mut out, &chunk(&base, Vec::new(), Some(usage.clone())))?;
    }
    out.extend_from_slice(b"data: [DONE]\n\n");
    Some(out.into())
}

/// Chat Completions: an event stream with its usage chunk added (before `[DONE]`, built from
/// `usage`, with the id/created/model/system_fingerprint of the stream's first chunk) when it has
/// none; the stream unchanged (same bytes) when it already has one. None when the bytes are not a
/// complete chat stream.
pub fn chat_events_with_usage(events: &[u8], usage: &Usage) -> Option<Bytes> {
    let stream = ChatStream::parse(events)?;
    if stream.usage().is_some() {
        return Some(Bytes::copy_from_slice(events));
    }
    let first = stream.chunks.first()?.as_object()?;
    let mut out = Vec::with_capacity(events.len() + 512);
    out.extend_from_slice(events.get(..stream.done.start)?);
    write_data(&mut out, &chunk(&chunk_base(first), Vec::new(), Some(chat_usage(usage))))?;
    out.extend_from_slice(events.get(stream.done.start..)?);
    Some(out.into())
}

/// Responses API: a streamed answer as the JSON a non-streamed request would have got: the
/// `response` object of its `response.completed` event (also accepted: `response.incomplete`).
/// None without one, or when an event's data is not JSON.
pub fn responses_events_to_json(events: &[u8]) -> Option<Bytes> {
    let mut terminal = None;
    for event in parse_events(events)? {
        if event.data.is_empty() || event.data == "[DONE]" {
            continue;
        }
        let data: Value = serde_json::from_str(&event.data).ok()?;
        let kind = data.get("type").and_then(Value::as_str).or(event.name.as_deref());
        if matches!(kind, Some("response.completed" | "response.incomplete")) {
            terminal = data.get("response").filter(|r| r.is_object()).cloned();
        }
    }
    to_bytes(&terminal?)
}

/// Responses API: a response JSON object as the event stream a streamed request would have got:
/// `response.created`, `response.in_progress`, each output item added, its content streamed
/// (one delta per part or per function call) and done, then `response.completed` (or
/// `response.incomplete` / `response.failed`, after the response's `status`) with the response
/// as given.
pub fn responses_json_to_events(json: &[u8]) -> Option<Bytes> {
    let response: Value = serde_json::from_slice(json).ok()?;
    let object = response.as_object()?;
    let output = match object.get("output") {
        Some(Value::Array(items)) => items.as_slice(),
        None | Some(Value::Null) => &[],
        Some(_) => return None,
    };
    let mut snapshot = object.clone();
    snapshot.insert("status".into(), "in_progress".into());
    snapshot.insert("output".into(), Value::Array(Vec::new()));
    snapshot.insert("usage".into(), Value::Null);
    for field in ["error", "incomplete_details", "completed_at"] {
        if let Some(value) = snapshot.get_mut(field) {
            *value = Value::Null;
        }
    }
    let mut events = ResponsesEvents::default();
    events.push("response.created", json!({"response": snapshot}))?;
    events.push("response.in_progress", json!({"response": snapshot}))?;
    for (output_index, item) in output.iter().enumerate() {
        events.item(output_index, item)?;
    }
    let terminal = match object.get("status").and_then(Value::as_str) {
        Some("incomplete") => "response.incomplete",
        Some("failed") => "response.failed",
        _ => "response.completed",
    };
    events.push(terminal, json!({"response": response}))?;
    Some(events.out.into())
}

/// A complete Chat Completions stream: its chunks up to `[DONE]`.
struct ChatStream {
    chunks: Vec<Value>,
    /// The `[DONE]` event.
    done: std::ops::Range<usize>,
}

impl ChatStream {
    /// None unless every event before `[DONE]` is a chunk object (no `error`), there is at least
    /// one, and `[DONE]` comes.
    fn parse(bytes: &[u8]) -> Option<ChatStream> {
        let mut chunks = Vec::new();
        for event in parse_events(bytes)? {
            if event.data == "[DONE]" {
                return (!chunks.is_empty()).then_some(ChatStream { chunks, done: event.span });
            }
            if event.data.is_empty() {
                continue;
            }
            let chunk: Value = serde_json::from_str(&event.data).ok()?;
            if !chunk.is_object() || chunk.get("error").is_some_and(|e| !e.is_null()) {
                return None;
            }
            chunks.push(chunk);
        }
        None
    }

    /// The first non-null value of a top-level field.
    fn field(&self, name: &str) -> Option<&Value> {
        self.chunks.iter().filter_map(|c| c.get(name)).find(|v| !v.is_null())
    }

    /// [`ChatStream::field`], null when no chunk has it.
    fn first_field(&self, name: &str) -> Value {
        self.field(name).cloned().unwrap_or(Value::Null)
    }

    /// The usage of its usage chunk (the last, should there be several).
    fn usage(&self) -> Option<&Value> {
        self.chunks.iter().rev().filter_map(|c| c.get("usage")).find(|u| u.is_object())
    }
}

/// One choice of a chat stream, merged.
#[derive(Default)]
struct ChoiceAcc {
    role: Option<Value>,
    content: Option<String>,
    refusal: Option<String>,
    tool_calls: BTreeMap<u64, ToolCallAcc>,
    annotations: Vec<Value>,
    logprobs: Option<LogprobsAcc>,
    finish_reason: Value,
}

/// The logprobs of one choice, merged: its content's and its refusal's tokens.
#[derive(Default)]
struct LogprobsAcc {
    content: Option<Vec<Value>>,
    refusal: Option<Vec<Value>>,
}

/// One tool call of a chat stream, merged.
#[derive(Default)]
struct ToolCallAcc {
    id: Option<Value>,
    kind: Option<Value>,
    name: String,
    arguments: String,
}

impl ChoiceAcc {
    /// Adds one chunk's choice.
    fn add(&mut self, choice: &Value) {
        if let Some(delta) = choice.get("delta") {
            if let Some(role) = delta.get("role").filter(|r| !r.is_null()) {
                self.role = Some(role.clone());
            }
            append(&mut self.content, delta.get("content"));
            append(&mut self.refusal, delta.get("refusal"));
            for call in delta.get("tool_calls").and_then(Value::as_array).into_iter().flatten() {
                let index = call.get("index").and_then(Value::as_u64).unwrap_or(0);
                let acc = self.tool_calls.entry(index).or_default();
                if let Some(id) = call.get("id").filter(|v| !v.is_null()) {
                    acc.id = Some(id.clone());
                }
                if let Some(kind) = call.get("type").filter(|v| !v.is_null()) {
                    acc.kind = Some(kind.clone());
                }
                let function = call.get("function");
                acc.name.push_str(function.and_then(|f| f.get("name")).and_then(Value::as_str).unwrap_or(""));
                acc.arguments.push_str(function.and_then(|f| f.get("arguments")).and_then(Value::as_str).unwrap_or(""));
            }
            if let Some(annotations) = delta.get("annotations").and_then(Value::as_array) {
                self.annotations.extend(annotations.iter().cloned());
            }
        }
        if let Some(logprobs) = choice.get("logprobs").and_then(Value::as_object) {
            let merged = self.logprobs.get_or_insert_default();
            for (list, key) in [(&mut merged.content, "content"), (&mut merged.refusal, "refusal")] {
                if let Some(items) = logprobs.get(key).and_then(Value::as_array) {
                    list.get_or_insert_default().extend(items.iter().cloned());
                }
            }
        }
        if let Some(reason) = choice.get("finish_reason").filter(|r| !r.is_null()) {
            self.finish_reason = reason.clone();
        }
    }

    /// The merged choice, as a non-streamed answer has it.
    fn into_json(self, index: u64) -> Value {
        let mut message = Map::new();
        message.insert("role".into(), self.role.unwrap_or_else(|| "assistant".into()));
        message.insert("content".into(), self.content.map_or(Value::Null, Value::String));
        message.insert("refusal".into(), self.refusal.map_or(Value::Null, Value::String));
        if !self.tool_calls.is_empty() {
            let calls = self.tool_calls.into_values().map(|call| {
                json!({
                    "id": call.id.unwrap_or(Value::Null),
                    "type": call.kind.unwrap_or_else(|| "function".into()),
                    "function": {"name": call.name, "arguments": call.arguments},
                })
            });
            message.insert("tool_calls".into(), Value::Array(calls.collect()));
        }
        message.insert("annotations".into(), Value::Array(self.annotations));
        let logprobs = self.logprobs.map_or(Value::Null, |l| json!({"content": l.content, "refusal": l.refusal}));
        json!({"index": index, "message": message, "logprobs": logprobs, "finish_reason": self.finish_reason})
    }
}

/// Appends a delta's string to what was merged so far (a null or absent delta changes nothing).
fn append(merged: &mut Option<String>, delta: Option<&Value>) {
    if let Some(text) = delta.and_then(Value::as_str) {
        merged.get_or_insert_default().push_str(text);
    }
}

/// A tool call of a message as the delta that streams it whole.
fn tool_call_delta(index: usize, call: &Value) -> Value {
    let function = call.get("function");
    let field = |v: Option<&Value>| v.cloned().unwrap_or(Value::Null);
    json!({
        "index": index,
        "id": field(call.get("id")),
        "type": call.get("type").cloned().unwrap_or_else(|| "function".into()),
        "function": {
            "name": field(function.and_then(|f| f.get("name"))),
            "arguments": field(function.and_then(|f| f.get("arguments"))),
        },
    })
}

/// The fields every chunk of an answer repeats, from its body or its first chunk.
fn chunk_base(source: &Map<String, Value>) -> Map<String, Value> {
    let mut base = Map::new();
    for field in ["id", "created", "model"] {
        base.insert(field.into(), source.get(field).cloned().unwrap_or(Value::Null));
    }
    base.insert("object".into(), "chat.completion.chunk".into());
    for field in ["system_fingerprint", "service_tier"] {
        if let Some(value) = source.get(field).filter(|v| !v.is_null()) {
            base.insert(field.into(), value.clone());
        }
    }
    base
}

/// A chunk: the base fields, the choices, and the usage when given.
fn chunk(base: &Map<String, Value>, choices: Vec<Value>, usage: Option<Value>) -> Value {
    let mut chunk = base.clone();
    chunk.insert("choices".into(), Value::Array(choices));
    if let Some(usage) = usage {
        chunk.insert("usage".into(), usage);
    }
    Value::Object(chunk)
}

/// A Chat Completions `usage` object for `usage` (a cache write, when any, as
/// `prompt_tokens_details.cache_write_tokens`).
fn chat_usage(usage: &Usage) -> Value {
    let mut prompt_details = json!({"cached_tokens": usage.cache_read});
    let written = usage.cache_write.saturating_add(usage.cache_write_1h);
    if written > 0 {
        prompt_details["cache_write_tokens"] = written.into();
    }
    json!({
        "prompt_tokens": usage.prompt_tokens(),
        "completion_tokens": usage.output,
        "total_tokens": usage.total_tokens(),
        "prompt_tokens_details": prompt_details,
        "completion_tokens_details": {"reasoning_tokens": usage.reasoning},
    })
}

/// Writes `data: <compact json>\n\n`.
fn write_data(out: &mut Vec<u8>, value: &Value) -> Option<()> {
    out.extend_from_slice(b"data: ");
    serde_json::to_writer(&mut *out, value).ok()?;
    out.extend_from_slice(b"\n\n");
    Some(())
}

/// Compact JSON.
fn to_bytes(value: &Value) -> Option<Bytes> {
    serde_json::to_vec(value).ok().map(Bytes::from)
}

/// The events of a Responses stream being written, numbered.
#[derive(Default)]
struct ResponsesEvents {
    out: Vec<u8>,
    sequence: u64,
}

impl ResponsesEvents {
    /// Writes `event: <kind>\ndata: <json>\n\n`, the JSON being `fields` with its type and
    /// sequence number.
    fn push(&mut self, kind: &str, mut fields: Value) -> Option<()> {
        let object = fields.as_object_mut()?;
        object.insert("type".into(), kind.into());
        object.insert("sequence_number".into(), self.sequence.into());
        self.sequence += 1;
        self.out.extend_from_slice(b"event: ");
        self.out.extend_from_slice(kind.as_bytes());
        self.out.push(b'\n');
        write_data(&mut self.out, &fields)
    }

    /// The events of one output item.
    fn item(&mut self, output_index: usize, item: &Value) -> Option<()> {
        let object = item.as_object()?;
        let item_id = object.get("id").cloned().unwrap_or(Value::Null);
        let kind = object.get("type").and_then(Value::as_str).unwrap_or("");
        let mut added = object.clone();
        if added.contains_key("status") {
            added.insert("status".into(), "in_progress".into());
        }
        match kind {
            "message" => {
                added.insert("content".into(), Value::Array(Vec::new()));
            }
            "function_call" => {
                added.insert("arguments".into(), "".into());
            }
            _ => {}
        }
        self.push("response.output_item.added", json!({"output_index": output_index, "item": added}))?;
        let at = json!({"item_id": item_id, "output_index": output_index});
        match kind {
            "message" => {
                let parts = object.get("content").and_then(Value::as_array).map_or(&[][..], Vec::as_slice);
                for (content_index, part) in parts.iter().enumerate() {
                    self.part(&at, content_index, part)?;
                }
            }
            "function_call" => {
                let arguments = object.get("arguments").cloned().unwrap_or_else(|| "".into());
                self.push("response.function_call_arguments.delta", with(&at, [("delta", arguments.clone())]))?;
                self.push("response.function_call_arguments.done", with(&at, [("arguments", arguments)]))?;
            }
            _ => {}
        }
        self.push("response.output_item.done", json!({"output_index": output_index, "item": item}))
    }

    /// The events of one content part of a message (`at`: its item id and output index).
    fn part(&mut self, at: &Value, content_index: usize, part: &Value) -> Option<()> {
        let at = with(at, [("content_index", content_index.into())]);
        let object = part.as_object()?;
        let (text_key, prefix) = match object.get("type").and_then(Value::as_str) {
            Some("output_text") => ("text", "response.output_text"),
            Some("refusal") => ("refusal", "response.refusal"),
            _ => ("", ""),
        };
        let mut added = object.clone();
        if !text_key.is_empty() {
            added.insert(text_key.into(), "".into());
            for list in ["annotations", "logprobs"] {
                if added.contains_key(list) {
                    added.insert(list.into(), Value::Array(Vec::new()));
                }
            }
        }
        self.push("response.content_part.added", with(&at, [("part", Value::Object(added))]))?;
        if !text_key.is_empty() {
            let text = object.get(text_key).cloned().unwrap_or_else(|| "".into());
            let mut delta = with(&at, [("delta", text.clone())]);
            let mut done = with(&at, [(text_key, text)]);
            if text_key == "text" {
                let logprobs = object.get("logprobs").cloned().unwrap_or_else(|| Value::Array(Vec::new()));
                delta["logprobs"] = logprobs.clone();
                done["logprobs"] = logprobs;
            }
            self.push(&format!("{prefix}.delta"), delta)?;
            let annotations = object.get("annotations").and_then(Value::as_array).map_or(&[][..], Vec::as_slice);
            for (annotation_index, annotation) in annotations.iter().enumerate() {
                let fields = [("annotation_index", annotation_index.into()), ("annotation", annotation.clone())];
                self.push("response.output_text.annotation.added", with(&at, fields))?;
            }
            self.push(&format!("{prefix}.done"), done)?;
        }
        self.push("response.content_part.done", with(&at, [("part", part.clone())]))
    }
}

/// `object` (a JSON object) with more fields.
fn with<const N: usize>(object: &Value, fields: [(&str, Value); N]) -> Value {
    let mut object = object.clone();
    if let Some(map) = object.as_object_mut() {
        for (key, value) in fields {
            map.insert(key.into(), value);
        }
    }
    object
}
