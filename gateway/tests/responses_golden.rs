//! Golden tests for the Responses API ↔ Anthropic translation
//! (`uprox_gateway::providers::anthropic::responses`). Each case under
//! `tests/golden/responses/` is an input file and the expected output:
//!
//! - `request/<case>.responses.json` → `request/<case>.anthropic.json`
//! - `response/<case>.anthropic.json` → `response/<case>.responses.json`
//! - `stream/<case>.anthropic.sse` → `stream/<case>.responses.sse`
//!
//! A response or stream case may have a `<case>.request.json`: the client's request, whose
//! settings the `response` object echoes (otherwise OpenAI's defaults are echoed). `created_at`
//! is written as 0 in the expected files. Each stream is fed whole, one byte at a time and in
//! 7-byte chunks, and must give the same events each time; every event's `event:` line must
//! name its `type`, and `sequence_number`s must count from 0.
//!
//! Outputs are compared as JSON values. `UPROX_BLESS=1 cargo test --test responses_golden`
//! rewrites the expected files from the current output: review the diff before keeping it.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::fs;

use common::golden::{self, Golden};
use serde_json::{Map, Value};
use uprox_gateway::providers::anthropic::responses::{self, StreamTranslator};
use uprox_gateway::providers::responses::echo_defaults;

/// The model name the client asked for, echoed in responses.
const MODEL: &str = "claude-sonnet-4-5";

const GOLDEN: Golden = Golden { suite: "responses", parse_sse };

/// The echoed settings of `<case>.request.json` when there is one, OpenAI's defaults otherwise.
fn echo(kind: &str, case: &str) -> Map<String, Value> {
    let path = GOLDEN.dir(kind).join(format!("{case}.request.json"));
    if !path.exists() {
        return echo_defaults();
    }
    responses::translate_request(&fs::read(&path).unwrap()).unwrap_or_else(|e| panic!("case {case}: {e}")).echo
}

/// Checks a recent `created_at` and writes 0 in its place.
fn zero_created_at(response: &mut Value, case: &str) {
    let created = response.as_object_mut().unwrap().insert("created_at".into(), Value::from(0));
    assert!(created.as_ref().and_then(Value::as_u64).is_some_and(|c| c > 1_700_000_000), "case {case}: {created:?}");
}

#[test]
fn requests() {
    GOLDEN.run("request", (".responses.json", ".anthropic.json"), &[], golden::pretty, |case, input| {
        let translated = responses::translate_request(input).unwrap_or_else(|e| panic!("case {case}: {e}"));
        let actual: Value = serde_json::from_slice(&translated.body).unwrap();
        assert_eq!(translated.model, actual["model"], "case {case}");
        assert_eq!(translated.stream, actual.get("stream") == Some(&Value::Bool(true)), "case {case}");
        actual
    });
}

#[test]
fn responses() {
    GOLDEN.run(
        "response",
        (".anthropic.json", ".responses.json"),
        &[".request.json"],
        golden::pretty,
        |case, input| {
            let out = responses::translate_response(input, MODEL, echo("response", case))
                .unwrap_or_else(|e| panic!("case {case}: {e}"));
            let mut actual: Value = serde_json::from_slice(&out).unwrap();
            zero_created_at(&mut actual, case);
            let usage = &actual["usage"];
            assert_eq!(
                usage["total_tokens"].as_u64(),
                Some(usage["input_tokens"].as_u64().unwrap() + usage["output_tokens"].as_u64().unwrap()),
                "case {case}"
            );
            actual
        },
    );
}

/// Client SSE text → a JSON array of the events' data, after checking that each `event:` line
/// names its event's `type`.
fn parse_sse(text: &str) -> Value {
    let events = text
        .split("\n\n")
        .filter(|e| !e.trim().is_empty())
        .map(|e| {
            let (event_line, data_line) = e.trim().split_once('\n').unwrap_or_else(|| panic!("not one event: {e:?}"));
            let name = event_line.strip_prefix("event: ").unwrap_or_else(|| panic!("no event line: {e:?}"));
            let data = data_line.strip_prefix("data: ").unwrap_or_else(|| panic!("no data line: {e:?}"));
            let data: Value = serde_json::from_str(data).unwrap();
            assert_eq!(data["type"], name, "the event line names the type");
            data
        })
        .collect();
    Value::Array(events)
}

fn render_sse(events: &Value) -> String {
    events
        .as_array()
        .unwrap()
        .iter()
        .map(|e| format!("event: {}\ndata: {e}\n\n", e["type"].as_str().unwrap()))
        .collect()
}

/// Feeds `input` in chunks of `size` bytes (all at once for 0); returns the events, checking
/// that each is one whole SSE event.
fn run_stream(input: &[u8], size: usize, echo: &Map<String, Value>) -> Vec<u8> {
    let mut t = StreamTranslator::new(MODEL.to_owned(), echo.clone());
    let mut events = Vec::new();
    for chunk in golden::chunks(input, size) {
        events.extend(t.push(chunk));
    }
    events.extend(t.finish());
    assert!(t.finish().is_empty(), "a second finish emits nothing");
    golden::join_events(&events, b"event: ")
}

/// The events with every `response.created_at` zeroed.
fn normalised(bytes: &[u8], case: &str) -> Value {
    let mut events = parse_sse(std::str::from_utf8(bytes).unwrap());
    for event in events.as_array_mut().unwrap() {
        if let Some(response) = event.get_mut("response") {
            zero_created_at(response, case);
        }
    }
    events
}

#[test]
fn streams() {
    GOLDEN.run("stream", (".anthropic.sse", ".responses.sse"), &[".request.json"], render_sse, |case, input| {
        let echo = echo("stream", case);
        let actual = normalised(&run_stream(input, 0, &echo), case);
        for size in [1, 7] {
            assert_eq!(
                normalised(&run_stream(input, size, &echo), case),
                actual,
                "case {case}: {size}-byte chunks give different output"
            );
        }
        let events = actual.as_array().unwrap();
        for (i, event) in events.iter().enumerate() {
            assert_eq!(event["sequence_number"], i, "case {case}: sequence numbers count from 0");
        }
        let ids: Vec<&Value> = events.iter().filter_map(|e| e.get("response")).map(|r| &r["id"]).collect();
        assert!(ids.windows(2).all(|w| w[0] == w[1]), "case {case}: one response id");
        let last = events.last().unwrap()["type"].as_str().unwrap();
        assert!(
            ["response.completed", "response.incomplete", "response.failed"].contains(&last),
            "case {case}: ends with {last}"
        );
        actual
    });
}

/// What a stream spells out is what the non-streamed translation of the same message says.
#[test]
fn a_stream_and_its_final_response_agree() {
    let input = fs::read(GOLDEN.dir("stream").join("thinking_text_and_tools.anthropic.sse")).unwrap();
    let echo = echo("stream", "thinking_text_and_tools");
    let events = normalised(&run_stream(&input, 0, &echo), "thinking_text_and_tools");
    let events = events.as_array().unwrap();
    let final_response = &events.last().unwrap()["response"];
    let done_items: Vec<&Value> =
        events.iter().filter(|e| e["type"] == "response.output_item.done").map(|e| &e["item"]).collect();
    let output: Vec<&Value> = final_response["output"].as_array().unwrap().iter().collect();
    assert_eq!(done_items, output, "the final output is the items as they were done");
    let text: String = events
        .iter()
        .filter(|e| e["type"] == "response.output_text.delta")
        .map(|e| e["delta"].as_str().unwrap())
        .collect();
    assert_eq!(text, output[0]["content"][0]["text"].as_str().unwrap());
    let arguments: String = events
        .iter()
        .filter(|e| e["type"] == "response.function_call_arguments.delta" && e["output_index"] == 1)
        .map(|e| e["delta"].as_str().unwrap())
        .collect();
    assert_eq!(arguments, output[1]["arguments"].as_str().unwrap());
    assert_eq!(final_response["tools"], echo["tools"]);
}
