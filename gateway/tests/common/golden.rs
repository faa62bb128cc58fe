//! Golden-file harness shared by the wire-format golden tests (`anthropic_golden`,
//! `responses_golden`): finding the cases of a suite under `tests/golden/<suite>/<kind>/`,
//! comparing an output with its expected file as JSON values (one line per difference, with its
//! path), rewriting the expected files under `UPROX_BLESS=1`, and the checks on a translator's
//! stream output that do not depend on its event format. Each test file keeps what is specific
//! to its format: how SSE text is parsed and rendered, and what is normalised before comparing.

use std::fs;
use std::path::{Path, PathBuf};

use bytes::Bytes;
use serde_json::Value;

/// One suite of golden cases: its folder under `tests/golden/` and how it parses the client SSE
/// text of its expected `.sse` files into a JSON array of events.
pub struct Golden {
    pub suite: &'static str,
    pub parse_sse: fn(&str) -> Value,
}

impl Golden {
    pub fn dir(&self, kind: &str) -> PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/golden").join(self.suite).join(kind)
    }

    /// The case names of `kind` (files ending in `input_suffix`), sorted; fails on files that
    /// belong to no case.
    fn cases(&self, kind: &str, input_suffix: &str, suffixes: &[&str]) -> Vec<String> {
        let mut names: Vec<String> = fs::read_dir(self.dir(kind))
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .filter_map(|f| f.strip_suffix(input_suffix).map(str::to_owned))
            .collect();
        names.sort();
        for entry in fs::read_dir(self.dir(kind)).unwrap() {
            let file = entry.unwrap().file_name().into_string().unwrap();
            let known =
                suffixes.iter().any(|s| file.strip_suffix(s).is_some_and(|case| names.iter().any(|n| n == case)));
            assert!(known, "{kind}/{file} belongs to no case (inputs end in {input_suffix})");
        }
        assert!(!names.is_empty(), "no {kind} cases");
        names
    }

    /// Runs every case of `kind`: `translate(case, input)` turns the case's `<case><input>` file
    /// into the output compared with its `<case><expected>` file (or, with `UPROX_BLESS`,
    /// written to it, as `render` writes it). `optional` are the suffixes of a case's other
    /// files. Fails with every differing case at once.
    pub fn run(
        &self,
        kind: &str,
        (input, expected): (&str, &str),
        optional: &[&str],
        render: impl Fn(&Value) -> String,
        mut translate: impl FnMut(&str, &[u8]) -> Value,
    ) {
        let mut failures = Vec::new();
        let suffixes: Vec<&str> = [input, expected].iter().chain(optional).copied().collect();
        for case in self.cases(kind, input, &suffixes) {
            let bytes = fs::read(self.dir(kind).join(format!("{case}{input}"))).unwrap();
            let actual = translate(&case, &bytes);
            failures.extend(self.check(&case, &self.dir(kind).join(format!("{case}{expected}")), &actual, &render));
        }
        report(failures);
    }

    /// Compares, or with `UPROX_BLESS` writes `expected_path`; returns a failure description.
    fn check(
        &self,
        case: &str,
        expected_path: &Path,
        actual: &Value,
        render: impl Fn(&Value) -> String,
    ) -> Option<String> {
        if bless() {
            fs::write(expected_path, render(actual)).unwrap();
            return None;
        }
        let expected = if expected_path.extension().is_some_and(|e| e == "sse") {
            (self.parse_sse)(
                &fs::read_to_string(expected_path).unwrap_or_else(|e| panic!("{}: {e}", expected_path.display())),
            )
        } else {
            read_json(expected_path)
        };
        let mut lines = Vec::new();
        diff("$", &expected, actual, &mut lines);
        (!lines.is_empty()).then(|| {
            format!(
                "case {case} ({}):\n  {}\n  actual:\n{}",
                expected_path.display(),
                lines.join("\n  "),
                render(actual)
            )
        })
    }
}

fn bless() -> bool {
    std::env::var_os("UPROX_BLESS").is_some()
}

pub fn read_json(path: &Path) -> Value {
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

/// A JSON file's text as the expected files are written.
pub fn pretty(v: &Value) -> String {
    serde_json::to_string_pretty(v).unwrap() + "\n"
}

/// Fails with every differing case at once.
fn report(failures: Vec<String>) {
    assert!(failures.is_empty(), "{} golden case(s) differ:\n\n{}", failures.len(), failures.join("\n\n"));
}

/// `input` cut into chunks of `size` bytes, or whole for 0: how a stream case is fed.
pub fn chunks(input: &[u8], size: usize) -> Vec<&[u8]> {
    if size == 0 { vec![input] } else { input.chunks(size).collect() }
}

/// The translator's output events joined, after checking that each is one whole SSE event
/// starting with `prefix`.
pub fn join_events(events: &[Bytes], prefix: &[u8]) -> Vec<u8> {
    let mut all = Vec::new();
    for e in events {
        assert!(e.starts_with(prefix) && e.ends_with(b"\n\n"), "not one whole event: {e:?}");
        assert_eq!(e.windows(2).filter(|w| w == b"\n\n").count(), 1, "more than one event: {e:?}");
        all.extend_from_slice(e);
    }
    all
}
