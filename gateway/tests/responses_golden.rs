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

use std::fs;
use std::path::{Path, PathBuf};

use serde_json::{Map, Value};
use uprox_gateway::providers::anthropic::responses::{self, StreamTranslator};
use uprox_gateway::providers::responses::echo_defaults;

/// The model name the client asked for, echoed in responses.
const MODEL: &str = "claude-sonnet-4-5";

fn dir(kind: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/golden/responses").join(kind)
}

fn bless() -> bool {
    std::env::var_os("UPROX_BLESS").is_some()
}

/// The case names of `kind` (files ending in `input_suffix`), sorted; fails on files that belong
/// to no case.
fn cases(kind: &str, input_suffix: &str, suffixes: &[&str]) -> Vec<String> {
    let mut names: Vec<String> = fs::read_dir(dir(kind))
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .filter_map(|f| f.strip_suffix(input_suffix).map(str::to_owned))
        .collect();
    names.sort();
    for entry in fs::read_dir(dir(kind)).unwrap() {
        let file = entry.unwrap().file_name().into_string().unwrap();
        let known = suffixes.iter().any(|s| file.strip_suffix(s).is_some_and(|case| names.iter().any(|n| n == case)));
        assert!(known, "{kind}/{file} belongs to no case (inputs end in {input_suffix})");
    }
    assert!(!names.is_empty(), "no {kind} cases");
    names
}

fn read_json(path: &Path) -> Value {
    let text = fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// Every difference between two JSON values, one line each, with its path.
fn diff(path: &str, expected: &Value, actual: &Value, out: &mut Vec<String>) {
    match (expected, actual) {
        (Value::Object(e), Value::Object(a)) => {
            for (k, ev) in e {
                match a.get(k) {
                    Some(av) => diff(&format!("{path}.{k}"), ev, av, out),
                    None => out.push(format!("{path}.{k}: missing (expected {ev})")),
                }
            }
            for (k, av) in a.iter().filter(|(k, _)| !e.contains_key(*k)) {
                out.push(format!("{path}.{k}: unexpected {av}"));
            }
        }
        (Value::Array(e), Value::Array(a)) => {
            for (i, (ev, av)) in e.iter().zip(a).enumerate() {
                diff(&format!("{path}[{i}]"), ev, av, out);
            }
            if e.len() != a.len() {
                out.push(format!("{path}: expected {} items, got {}", e.len(), a.len()));
            }
        }
        _ if expected != actual => out.push(format!("{path}: expected {expected}, got {actual}")),
        _ => {}
    }
}

/// Compares, or with `UPROX_BLESS` writes `expected_path`; returns a failure description.
fn check(case: &str, expected_path: &Path, actual: &Value, render: impl Fn(&Value) -> String) -> Option<String> {
    if bless() {
        fs::write(expected_path, render(actual)).unwrap();
        return None;
    }
    let expected = if expected_path.extension().is_some_and(|e| e == "sse") {
        parse_sse(&fs::read_to_string(expected_path).unwrap_or_else(|e| panic!("{}: {e}", expected_path.display())))
    } else {
        read_json(expected_path)
    };
    let mut lines = Vec::new();
    diff("$", &expected, actual, &mut lines);
    (!lines.is_empty()).then(|| {
        format!("case {case} ({}):\n  {}\n  actual:\n{}", expected_path.display(), lines.join("\n  "), render(actual))
    })
}

fn pretty(v: &Value) -> String {
    serde_json::to_string_pretty(v).unwrap() + "\n"
}

fn report(failures: Vec<String>) {
    assert!(failures.is_empty(), "{} golden case(s) differ:\n\n{}", failures.len(), failures.join("\n\n"));
}

/// The echoed settings of `<case>.request.json` when there is one, OpenAI's defaults otherwise.
fn echo(kind: &str, case: &str) -> Map<String, Value> {
    let path = dir(kind).join(format!("{case}.request.json"));
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
    let mut failures = Vec::new();
    for case in cases("request", ".responses.json", &[".responses.json", ".anthropic.json"]) {
        let input = fs::read(dir("request").join(format!("{case}.responses.json"))).unwrap();
        let translated = responses::translate_request(&input).unwrap_or_else(|e| panic!("case {case}: {e}"));
        let actual: Value = serde_json::from_slice(&translated.body).unwrap();
        assert_eq!(translated.model, actual["model"], "case {case}");
        assert_eq!(translated.stream, actual.get("stream") == Some(&Value::Bool(true)), "case {case}");
        failures.extend(check(&case, &dir("request").join(format!("{case}.anthropic.json")), &actual, pretty));
    }
    report(failures);
}

#[test]
fn responses() {
    let mut failures = Vec::new();
    let suffixes = [".anthropic.json", ".responses.json", ".request.json"];
    for case in cases("response", ".anthropic.json", &suffixes) {
        let input = fs::read(dir("response").join(format!("{case}.anthropic.json"))).unwrap();
        let out = responses::translate_response(&input, MODEL, echo("response", &case))
            .unwrap_or_else(|e| panic!("case {case}: {e}"));
        let mut actual: Value = serde_json::from_slice(&out).unwrap();
        zero_created_at(&mut actual, &case);
        let usage = &actual["usage"];
        assert_eq!(
            usage["total_tokens"].as_u64(),
            Some(usage["input_tokens"].as_u64().unwrap() + usage["output_tokens"].as_u64().unwrap()),
            "case {case}"
        );
        failures.extend(check(&case, &dir("response").join(format!("{case}.responses.json")), &actual, pretty));
    }
    report(failures);
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
    let chunks: Vec<&[u8]> = if size == 0 { vec![input] } else { input.chunks(size).collect() };
    for chunk in chunks {
        events.extend(t.push(chunk));
    }
    events.extend(t.finish());
    assert!(t.finish().is_empty(), "a second finish emits nothing");
    let mut all = Vec::new();
    for e in &events {
        assert!(e.starts_with(b"event: ") && e.ends_with(b"\n\n"), "not one whole event: {e:?}");
        assert_eq!(e.windows(2).filter(|w| w == b"\n\n").count(), 1, "more than one event: {e:?}");
        all.extend_from_slice(e);
    }
    all
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
    let mut failures = Vec::new();
    let suffixes = [".anthropic.sse", ".responses.sse", ".request.json"];
    for case in cases("stream", ".anthropic.sse", &suffixes) {
        let input = fs::read(dir("stream").join(format!("{case}.anthropic.sse"))).unwrap();
        let echo = echo("stream", &case);
        let actual = normalised(&run_stream(&input, 0, &echo), &case);
        for size in [1, 7] {
            assert_eq!(
                normalised(&run_stream(&input, size, &echo), &case),
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
        failures.extend(check(&case, &dir("stream").join(format!("{case}.responses.sse")), &actual, render_sse));
    }
    report(failures);
}

/// What a stream spells out is what the non-streamed translation of the same message says.
#[test]
fn a_stream_and_its_final_response_agree() {
    let input = fs::read(dir("stream").join("thinking_text_and_tools.anthropic.sse")).unwrap();
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
