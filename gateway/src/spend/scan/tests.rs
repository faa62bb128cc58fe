#![allow(clippy::unwrap_used, clippy::expect_used)]
use super::*;

/// Golden upstream answers, as the providers send them (ids and counts made up).
const CHAT_JSON: &str = include_str!("../testdata/openai_chat.json");
const CHAT_SSE: &str = include_str!("../testdata/openai_chat.sse");
const RESPONSES_JSON: &str = include_str!("../testdata/openai_responses.json");
const RESPONSES_SSE: &str = include_str!("../testdata/openai_responses.sse");
const EMBEDDINGS_JSON: &str = include_str!("../testdata/openai_embeddings.json");
const ANTHROPIC_JSON: &str = include_str!("../testdata/anthropic.json");
const ANTHROPIC_SSE: &str = include_str!("../testdata/anthropic.sse");

/// A small deterministic generator (xorshift): random splits without a dependency.
pub(crate) struct Splits(u64);

impl Splits {
    pub(crate) fn new(seed: u64) -> Self {
        Self(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1)
    }

    /// Cuts `len` bytes into pieces of 1 to `max` bytes.
    pub(crate) fn cuts(&mut self, len: usize, max: usize) -> Vec<std::ops::Range<usize>> {
        let mut ranges = Vec::new();
        let mut at = 0;
        while at < len {
            self.0 ^= self.0 << 13;
            self.0 ^= self.0 >> 7;
            self.0 ^= self.0 << 17;
            let n = 1 + (self.0 % max as u64) as usize;
            let end = (at + n).min(len);
            ranges.push(at..end);
            at = end;
        }
        ranges
    }
}

fn read(wire: Wire, sse: bool, frames: impl IntoIterator<Item = std::ops::Range<usize>>, body: &str) -> UsageReader {
    let mut reader = UsageReader::new(wire, sse);
    for range in frames {
        reader.feed(&body.as_bytes()[range]);
    }
    reader
}

fn whole(wire: Wire, sse: bool, body: &str) -> UsageReader {
    read(wire, sse, std::iter::once(0..body.len()), body)
}

/// Whole, byte by byte, and in random splits: always the same answer.
fn check(wire: Wire, sse: bool, body: &str, usage: Usage, model: &str) {
    let whole = whole(wire, sse, body);
    assert_eq!(whole.usage(), Some(usage), "whole");
    assert_eq!(whole.model(), Some(model), "whole");
    let bytes = read(wire, sse, (0..body.len()).map(|i| i..i + 1), body);
    assert_eq!(bytes.usage(), Some(usage), "byte by byte");
    assert_eq!(bytes.model(), Some(model), "byte by byte");
    for seed in 0..200 {
        let max = [3, 8, 17, 64, 300][seed as usize % 5];
        let split = read(wire, sse, Splits::new(seed).cuts(body.len(), max), body);
        assert_eq!(split.usage(), Some(usage), "seed {seed}");
        assert_eq!(split.model(), Some(model), "seed {seed}");
    }
}

#[test]
fn openai_chat_json_with_cached_and_reasoning_tokens() {
    let usage = Usage { input: 93, output: 246, cache_read: 1024, reasoning: 192, ..Usage::default() };
    check(Wire::OpenAiChat, false, CHAT_JSON, usage, "o3-mini-2025-01-31");
}

#[test]
fn openai_chat_stream_with_include_usage() {
    let usage = Usage { input: 160, output: 17, cache_read: 1792, ..Usage::default() };
    check(Wire::OpenAiChat, true, CHAT_SSE, usage, "gpt-4o-mini-2024-07-18");
}

#[test]
fn openai_responses_json() {
    let usage = Usage { input: 86, output: 300, cache_read: 1920, reasoning: 256, ..Usage::default() };
    check(Wire::OpenAiResponses, false, RESPONSES_JSON, usage, "gpt-4.1-2025-04-14");
}

#[test]
fn openai_responses_stream_reads_response_completed() {
    let usage = Usage { input: 86, output: 300, cache_read: 1920, reasoning: 256, ..Usage::default() };
    check(Wire::OpenAiResponses, true, RESPONSES_SSE, usage, "gpt-4.1-2025-04-14");
}

#[test]
fn openai_embeddings_json() {
    check(
        Wire::OpenAiEmbeddings,
        false,
        EMBEDDINGS_JSON,
        Usage { input: 8, ..Usage::default() },
        "text-embedding-3-small",
    );
}

#[test]
fn anthropic_json_top_level_usage_wins_over_a_tool_input() {
    let usage =
        Usage { input: 2095, output: 503, cache_read: 10000, cache_write: 1000, cache_write_1h: 500, reasoning: 0 };
    check(Wire::Anthropic, false, ANTHROPIC_JSON, usage, "claude-sonnet-4-5-20250929");
}

#[test]
fn anthropic_stream_merges_message_start_and_message_delta() {
    let usage = Usage { input: 472, output: 89, cache_read: 2048, ..Usage::default() };
    check(Wire::Anthropic, true, ANTHROPIC_SSE, usage, "claude-sonnet-4-5-20250929");
}

#[test]
fn no_usage_object_reads_none() {
    let body = CHAT_SSE.replace(r#""choices":[],"usage":{"#, r#""choices":[],"nousage":{"#);
    let reader = whole(Wire::OpenAiChat, true, &body);
    assert_eq!(reader.usage(), None);
    let nulls = whole(Wire::OpenAiChat, true, r#"{"usage" : null, "x":1}"#);
    assert_eq!(nulls.usage(), None);
}

#[test]
fn keys_in_strings_never_match() {
    let body = r#"{"text":"\"model\":\"fake\" \"usage\":{\"prompt_tokens\":5}","key\"usage":{"prompt_tokens":7}}"#;
    let value = r#"{"type":"usage","model":"m","usage":{"prompt_tokens":3}}"#;
    // Every split into two frames, then every split into three.
    let twos = (0..=body.len()).map(|i| vec![0..i, i..body.len()]);
    let threes = (0..body.len()).map(|i| vec![0..i, i..(i + 7).min(body.len()), (i + 7).min(body.len())..body.len()]);
    for frames in twos.chain(threes) {
        let reader = read(Wire::OpenAiChat, false, frames.clone(), body);
        assert_eq!(reader.usage(), None, "a key ending in an escaped \"usage\" is not the usage key: {frames:?}");
        assert_eq!(reader.model(), None, "{frames:?}");
        let frames = frames.into_iter().map(|r| r.start.min(value.len())..r.end.min(value.len()));
        let reader = read(Wire::OpenAiChat, false, frames, value);
        assert_eq!(reader.usage(), Some(Usage { input: 3, ..Usage::default() }), "a string value \"usage\" is no key");
        assert_eq!(reader.model(), Some("m"));
    }
}

#[test]
fn whitespace_around_the_colon() {
    let body = "{\"model\" :\n \"m-1\", \"usage\"\t:\r\n {\"prompt_tokens\": 4, \"completion_tokens\": 2}}";
    for (seed, max) in [(1, 1), (2, 2), (3, 5)] {
        let reader = read(Wire::OpenAiChat, false, Splits::new(seed).cuts(body.len(), max), body);
        assert_eq!(reader.usage(), Some(Usage { input: 4, output: 2, ..Usage::default() }));
        assert_eq!(reader.model(), Some("m-1"));
    }
}

#[test]
fn model_escapes() {
    let first_wins = r#"{"model":"acme\/llama-3","model":"other"}"#;
    assert_eq!(whole(Wire::OpenAiChat, false, first_wins).model(), Some("acme/llama-3"));
    let quoted = r#"{"model":"a\"b","x":"\"model\":\"c\""}"#;
    assert_eq!(whole(Wire::OpenAiChat, false, quoted).model(), Some("a\"b"));
    let unicode = r#"{"model":"a\u0041","model":"later"}"#;
    assert_eq!(whole(Wire::OpenAiChat, false, unicode).model(), None, "refused, and only the first");
    let not_a_string = r#"{"model":null,"model":"m"}"#;
    assert_eq!(whole(Wire::OpenAiChat, false, not_a_string).model(), Some("m"));
    let long = format!(r#"{{"model":"{}"}}"#, "x".repeat(MAX_MODEL_BYTES + 1));
    assert_eq!(whole(Wire::OpenAiChat, false, &long).model(), None);
    let fits = format!(r#"{{"model":"{}"}}"#, "x".repeat(MAX_MODEL_BYTES));
    assert_eq!(whole(Wire::OpenAiChat, false, &fits).model().map(str::len), Some(MAX_MODEL_BYTES));
}

#[test]
fn an_oversized_usage_object_is_ignored_and_the_scan_goes_on() {
    let filler = "x".repeat(MAX_USAGE_BYTES);
    let body = format!(
        r#"{{"usage":{{"prompt_tokens":1,"pad":"{filler}","inner":{{"usage":{{"prompt_tokens":2}}}}}},"usage":{{"prompt_tokens":3}}}}"#
    );
    let reader = read(Wire::OpenAiChat, false, Splits::new(9).cuts(body.len(), 700), &body);
    assert_eq!(reader.usage(), Some(Usage { input: 3, ..Usage::default() }));
    let alone = format!(r#"{{"usage":{{"prompt_tokens":1,"pad":"{filler}"}}}}"#);
    assert_eq!(whole(Wire::OpenAiChat, false, &alone).usage(), None);
}

#[test]
fn json_mode_last_wins_sse_mode_merges() {
    let body = r#"{"usage":{"input_tokens":10,"output_tokens":1}} {"usage":{"output_tokens":5}}"#;
    let json = whole(Wire::Anthropic, false, body);
    assert_eq!(json.usage(), Some(Usage { output: 5, ..Usage::default() }));
    let sse = whole(Wire::Anthropic, true, body);
    assert_eq!(sse.usage(), Some(Usage { input: 10, output: 5, ..Usage::default() }));
}

#[test]
fn an_unparsable_usage_object_changes_nothing() {
    let body = r#"{"usage":{"prompt_tokens":4}} {"usage":{"prompt_tokens":"many"}}"#;
    let reader = whole(Wire::OpenAiChat, false, body);
    assert_eq!(reader.usage(), Some(Usage { input: 4, ..Usage::default() }));
}

#[test]
fn braces_inside_strings_of_the_usage_object() {
    let body = r#"{"usage":{"note":"}{\"}","prompt_tokens":6},"model":"after"}"#;
    for (seed, max) in [(4, 1), (5, 3)] {
        let reader = read(Wire::OpenAiChat, false, Splits::new(seed).cuts(body.len(), max), body);
        assert_eq!(reader.usage(), Some(Usage { input: 6, ..Usage::default() }));
        assert_eq!(reader.model(), Some("after"));
    }
}

#[test]
fn frames_without_keys_leave_the_buffer_alone() {
    let mut reader = UsageReader::new(Wire::OpenAiChat, true);
    reader.feed(b"data: {\"model\":\"m\",\"choices\":[],\"usage\":null}\n\n");
    let capacity = reader.buf.capacity();
    for _ in 0..100 {
        reader.feed(b"data: {\"model\":\"m\",\"choices\":[{\"delta\":{\"content\":\"hi\"}}],\"usage\":null}\n\n");
    }
    assert_eq!(reader.buf.capacity(), capacity);
    assert_eq!(reader.state, State::Search);
    assert_eq!(reader.model(), Some("m"));
}
