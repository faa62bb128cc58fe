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

use std::fs;
use std::path::{Path, PathBuf};

use serde_json::Value;
use uprox_gateway::providers::anthropic::{self, StreamTranslator};

/// The model name the client asked for, echoed in responses.
const MODEL: &str = "claude-sonnet-4-5";

fn dir(kind: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/golden/anthropic").join(kind)
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

#[test]
fn requests() {
    let mut failures = Vec::new();
    for case in cases("request", ".openai.json", &[".openai.json", ".anthropic.json"]) {
        let input = fs::read(dir("request").join(format!("{case}.openai.json"))).unwrap();
        let translated = anthropic::translate_request(&input).unwrap_or_else(|e| panic!("case {case}: {e}"));
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
    for case in cases("response", ".anthropic.json", &[".anthropic.json", ".openai.json"]) {
        let input = fs::read(dir("response").join(format!("{case}.anthropic.json"))).unwrap();
        let out = anthropic::translate_response(&input, MODEL).unwrap_or_else(|e| panic!("case {case}: {e}"));
        let mut actual: Value = serde_json::from_slice(&out).unwrap();
        let created = actual.as_object_mut().unwrap().remove("created");
        assert!(
            created.as_ref().and_then(Value::as_u64).is_some_and(|c| c > 1_700_000_000),
            "case {case}: {created:?}"
        );
        let usage = anthropic::response_usage(&input).unwrap();
        assert_eq!(actual["usage"]["prompt_tokens"], usage.prompt_tokens, "case {case}");
        failures.extend(check(&case, &dir("response").join(format!("{case}.openai.json")), &actual, pretty));
    }
    report(failures);
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
    let chunks: Vec<&[u8]> = if size == 0 { vec![input] } else { input.chunks(size).collect() };
    for chunk in chunks {
        events.extend(t.push(chunk));
    }
    events.extend(t.finish());
    assert!(t.finish().is_empty(), "a second finish emits nothing");
    let mut all = Vec::new();
    for e in &events {
        assert!(e.starts_with(b"data: ") && e.ends_with(b"\n\n"), "not one whole event: {e:?}");
        assert_eq!(e.windows(2).filter(|w| w == b"\n\n").count(), 1, "more than one event: {e:?}");
        all.extend_from_slice(e);
    }
    (all, t.usage())
}

#[test]
fn streams() {
    let mut failures = Vec::new();
    let suffixes = [".anthropic.sse", ".openai.sse", ".options.json"];
    for case in cases("stream", ".anthropic.sse", &suffixes) {
        let input = fs::read(dir("stream").join(format!("{case}.anthropic.sse"))).unwrap();
        let options_path = dir("stream").join(format!("{case}.options.json"));
        let options = if options_path.exists() { read_json(&options_path) } else { Value::Null };
        let include_usage = options["include_usage"].as_bool().unwrap_or(false);

        let (whole, usage) = run_stream(&input, 0, include_usage);
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
            let (split, _) = run_stream(&input, size, include_usage);
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
        failures.extend(check(&case, &dir("stream").join(format!("{case}.openai.sse")), &actual, render_sse));
    }
    report(failures);
}
