//! Golden tests for the Anthropic translation (`uprox_gateway::providers::anthropic`). Each case
//! under `tests/golden/anthropic/` is an input file and the expected output:
//!
//! - `request/<case>.openai.json` → `request/<case>.anthropic.json`
//! - `response/<case>.anthropic.json` → `response/<case>.openai.json` (`created` is ignored)
//! - `stream/<case>.anthropic.sse` → `stream/<case>.openai.sse`, with an optional
//!   `stream/<case>.options.json` `{"include_usage": bool, "usage": {…accounting usage…}}`.
//!   `created` is written as 0 in the expected events. Each stream is fed whole, one byte at a
//!   time and in 7-byte chunks, and must give the same events each time.
//!
//! Outputs are compared as JSON values. `UPROX_BLESS=1 cargo test --test anthropic_golden`
//! rewrites the expected files from the current output: review the diff before keeping it.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::golden::{self, Golden};
use serde_json::Value;
use uprox_gateway::providers::anthropic::{self, StreamTranslator};

/// The model name the client asked for, echoed in responses.
const MODEL: &str = "claude-sonnet-4-5";

const GOLDEN: Golden = Golden { suite: "anthropic", parse_sse };

#[test]
fn requests() {
    GOLDEN.run("request", (".openai.json", ".anthropic.json"), &[], golden::pretty, |case, input| {
        let translated = anthropic::translate_request(input).unwrap_or_else(|e| panic!("case {case}: {e}"));
        let actual: Value = serde_json::from_slice(&translated.body).unwrap();
        assert_eq!(translated.model, actual["model"], "case {case}");
        assert_eq!(translated.stream, actual.get("stream") == Some(&Value::Bool(true)), "case {case}");
        actual
    });
}

#[test]
fn responses() {
    GOLDEN.run("response", (".anthropic.json", ".openai.json"), &[], golden::pretty, |case, input| {
        let out = anthropic::translate_response(input, MODEL).unwrap_or_else(|e| panic!("case {case}: {e}"));
        let mut actual: Value = serde_json::from_slice(&out).unwrap();
        let created = actual.as_object_mut().unwrap().remove("created");
        assert!(
            created.as_ref().and_then(Value::as_u64).is_some_and(|c| c > 1_700_000_000),
            "case {case}: {created:?}"
        );
        let usage = anthropic::response_usage(input).unwrap();
        assert_eq!(actual["usage"]["prompt_tokens"], usage.prompt_tokens, "case {case}");
        actual
    });
}

/// Client SSE text → a JSON array of events: each chunk as its JSON, `[DONE]` as the string.
fn parse_sse(text: &str) -> Value {
    let events = text
        .split("\n\n")
        .filter(|e| !e.trim().is_empty())
        .map(|e| {
            let data = e.trim().strip_prefix("data: ").unwrap_or_else(|| panic!("not a data event: {e:?}"));
            if data == "[DONE]" { Value::String(data.into()) } else { serde_json::from_str(data).unwrap() }
        })
        .collect();
    Value::Array(events)
}

fn render_sse(events: &Value) -> String {
    events
        .as_array()
        .unwrap()
        .iter()
        .map(|e| match e {
            Value::String(s) => format!("data: {s}\n\n"),
            other => format!("data: {other}\n\n"),
        })
        .collect()
}

/// Feeds `input` in chunks of `size` bytes (all at once for 0); returns the events, checking
/// that each is one whole SSE event.
fn run_stream(input: &[u8], size: usize, include_usage: bool) -> (Vec<u8>, Option<anthropic::Usage>) {
    let mut t = StreamTranslator::new(MODEL, include_usage);
    let mut events = Vec::new();
    for chunk in golden::chunks(input, size) {
        events.extend(t.push(chunk));
    }
    events.extend(t.finish());
    assert!(t.finish().is_empty(), "a second finish emits nothing");
    (golden::join_events(&events, b"data: "), t.usage())
}

#[test]
fn streams() {
    GOLDEN.run("stream", (".anthropic.sse", ".openai.sse"), &[".options.json"], render_sse, |case, input| {
        let options_path = GOLDEN.dir("stream").join(format!("{case}.options.json"));
        let options = if options_path.exists() { golden::read_json(&options_path) } else { Value::Null };
        let include_usage = options["include_usage"].as_bool().unwrap_or(false);

        let (whole, usage) = run_stream(input, 0, include_usage);
        let mut actual = parse_sse(std::str::from_utf8(&whole).unwrap());
        let mut ids = Vec::new();
        let mut created = Vec::new();
        for event in actual.as_array_mut().unwrap() {
            if let Some(chunk) = event.as_object_mut().filter(|c| c.contains_key("choices")) {
                ids.push(chunk["id"].clone());
                created.push(chunk.insert("created".into(), Value::from(0)).unwrap());
                if include_usage {
                    assert!(chunk.contains_key("usage"), "case {case}: every chunk carries usage: {chunk:?}");
                }
            }
        }
        ids.dedup();
        created.dedup();
        assert!(
            ids.len() <= 1 && created.len() <= 1,
            "case {case}: chunks disagree on id/created: {ids:?} {created:?}"
        );
        // Each run is a new translator with its own `created` clock reading, which may fall in
        // the next second: compare with `created` zeroed.
        let without_created = |bytes: &[u8]| {
            let mut events = parse_sse(std::str::from_utf8(bytes).unwrap());
            for event in events.as_array_mut().unwrap() {
                if let Some(chunk) = event.as_object_mut().filter(|c| c.contains_key("created")) {
                    chunk.insert("created".into(), Value::from(0));
                }
            }
            events
        };
        for size in [1, 7] {
            let (split, _) = run_stream(input, size, include_usage);
            assert_eq!(
                without_created(&split),
                without_created(&whole),
                "case {case}: {size}-byte chunks give different output"
            );
        }
        let done = actual.as_array().unwrap().iter().filter(|e| *e == "[DONE]").count();
        assert!(done <= 1, "case {case}: [DONE] more than once");
        if let Some(expected) = options.get("usage") {
            let usage = usage.unwrap_or_else(|| panic!("case {case}: no usage recorded"));
            let got = serde_json::json!({
                "prompt_tokens": usage.prompt_tokens,
                "completion_tokens": usage.completion_tokens,
                "cached_tokens": usage.cached_tokens,
                "cache_creation_tokens": usage.cache_creation_tokens,
            });
            assert_eq!(&got, expected, "case {case}: accounting usage");
        }
        actual
    });
}
