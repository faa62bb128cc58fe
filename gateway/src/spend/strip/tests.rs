#![allow(clippy::unwrap_used, clippy::expect_used)]
use super::*;
use crate::spend::scan::tests::Splits;

/// The golden OpenAI chat stream with `stream_options.include_usage`.
const CHAT_SSE: &str = include_str!("../testdata/openai_chat.sse");

/// The same stream without its usage-only chunk: what a client that did not ask must get.
fn expected(stream: &str, boundary: &str) -> String {
    let events: Vec<&str> = stream.split_inclusive(boundary).collect();
    let usage_only: Vec<&&str> = events.iter().filter(|e| e.contains(r#""choices":[],"usage":{"#)).collect();
    assert_eq!(usage_only.len(), 1, "the fixture has exactly one usage-only chunk");
    events.iter().filter(|e| !e.contains(r#""choices":[],"usage":{"#)).copied().collect()
}

/// The stream through [`StripUsage::frame`], and through [`StripUsage::frame_hinted`] told by
/// a [`UsageReader`](crate::spend::scan::UsageReader) as the relay does: both must agree.
fn strip(frames: impl IntoIterator<Item = Bytes>) -> Vec<u8> {
    let frames: Vec<Bytes> = frames.into_iter().collect();
    let run = |hinted: bool| {
        let mut strip = StripUsage::default();
        let mut reader = crate::spend::scan::UsageReader::new(crate::spend::scan::Wire::OpenAiChat, true);
        let mut out = Vec::new();
        for frame in &frames {
            let maybe_usage = reader.feed(frame);
            let passed =
                if hinted { strip.frame_hinted(frame.clone(), maybe_usage) } else { strip.frame(frame.clone()) };
            if let Some(passed) = passed {
                assert!(!passed.is_empty(), "None, not an empty frame");
                out.extend_from_slice(&passed);
            }
        }
        out.extend_from_slice(&strip.finish().unwrap_or_default());
        out
    };
    let plain = run(false);
    assert_eq!(run(true), plain, "the reader's hint changes nothing");
    plain
}

/// Whole, byte by byte, event by event and in random splits.
fn check(stream: &str, want: &str) {
    let bytes = Bytes::copy_from_slice(stream.as_bytes());
    assert_eq!(String::from_utf8(strip([bytes.clone()])).unwrap(), want, "whole");
    let singles = (0..bytes.len()).map(|i| bytes.slice(i..i + 1));
    assert_eq!(String::from_utf8(strip(singles)).unwrap(), want, "byte by byte");
    for seed in 0..300 {
        let max = [2, 7, 40, 150, 600][seed as usize % 5];
        let frames = Splits::new(seed).cuts(bytes.len(), max).into_iter().map(|r| bytes.slice(r));
        assert_eq!(String::from_utf8(strip(frames)).unwrap(), want, "seed {seed}");
    }
}

#[test]
fn the_usage_only_chunk_is_cut_out() {
    let want = expected(CHAT_SSE, "\n\n");
    assert!(want.ends_with("data: [DONE]\n\n"));
    assert!(want.contains(r#""usage":null"#), "chunks with choices and a null usage stay");
    assert!(want.contains(r#"\"usage\":{\"prompt_tokens\":999999}"#), "content quoting usage stays");
    check(CHAT_SSE, &want);
}

#[test]
fn crlf_line_endings() {
    let stream = CHAT_SSE.replace('\n', "\r\n");
    check(&stream, &expected(&stream, "\r\n\r\n"));
}

#[test]
fn a_stream_without_usage_passes_unchanged_and_uncopied() {
    let stream = expected(CHAT_SSE, "\n\n");
    check(&stream, &stream);
    let mut strip = StripUsage::default();
    for event in stream.split_inclusive("\n\n") {
        let frame = Bytes::copy_from_slice(event.as_bytes());
        let passed = strip.frame(frame.clone()).unwrap();
        assert_eq!(passed.as_ptr(), frame.as_ptr(), "the same bytes, not a copy");
        assert_eq!(passed.len(), frame.len());
    }
    let whole = Bytes::copy_from_slice(stream.as_bytes());
    let passed = StripUsage::default().frame(whole.clone()).unwrap();
    assert_eq!((passed.as_ptr(), passed.len()), (whole.as_ptr(), whole.len()));
}

#[test]
fn an_incomplete_event_is_held_as_a_slice_until_its_end() {
    let mut strip = StripUsage::default();
    let frame = Bytes::from_static(b"data: {\"choices\":[{}],\"usage\":null}\n\ndata: {\"cho");
    let passed = strip.frame(frame.clone()).unwrap();
    assert_eq!(passed.as_ptr(), frame.as_ptr());
    assert_eq!(&passed[..], b"data: {\"choices\":[{}],\"usage\":null}\n\n");
    assert_eq!(strip.held.as_ptr(), frame[passed.len()..].as_ptr(), "held without a copy");
    assert_eq!(strip.frame(Bytes::from_static(b"ices\":[],\"usage\":{\"prompt_tokens\":1}}\n")), None);
    assert_eq!(strip.frame(Bytes::from_static(b"\ndata: [DONE]\n\n")).unwrap(), "data: [DONE]\n\n");
    assert_eq!(strip.finish(), None);
}

#[test]
fn events_with_choices_or_a_null_usage_are_kept() {
    let stream = concat!(
        "data: {\"choices\":[{\"delta\":{\"content\":\"x\"}}],\"usage\":null}\n\n",
        "data: {\"choices\":[{\"delta\":{}}],\"usage\":{\"prompt_tokens\":3}}\n\n",
        "data: {\"choices\":[],\"usage\":null}\n\n",
        "data: {\"choices\":[{\"delta\":{\"content\":\"\\\"choices\\\":[],\\\"usage\\\":{}\"}}]}\n\n",
        "data: [DONE]\n\n",
    );
    check(stream, stream);
}

#[test]
fn whitespace_in_the_usage_only_chunk() {
    let stream = "data: {\"x\":1}\n\ndata: {\"choices\" : [ ] , \"usage\" : {\"prompt_tokens\":3}}\n\ndata: [DONE]\n\n";
    check(stream, "data: {\"x\":1}\n\ndata: [DONE]\n\n");
}

#[test]
fn a_usage_only_chunk_without_its_blank_line_at_the_end_is_dropped() {
    let stream = "data: {\"x\":1}\n\ndata: {\"choices\":[],\"usage\":{\"prompt_tokens\":3}}\n";
    check(stream, "data: {\"x\":1}\n\n");
    check("data: {\"x\":1}\n\ndata: [DONE]", "data: {\"x\":1}\n\ndata: [DONE]");
}

#[test]
fn an_oversized_event_passes_on_unmodified() {
    let content = "x".repeat(MAX_HELD_BYTES + 10);
    let big = format!("data: {{\"choices\":[{{\"delta\":{{\"content\":\"{content}\"}}}}],\"usage\":null}}\n\n");
    let usage_only = "data: {\"choices\":[],\"usage\":{\"prompt_tokens\":3}}\n\n";
    let stream = format!("{big}{usage_only}data: [DONE]\n\n");
    let bytes = Bytes::from(stream.clone());
    let want = format!("{big}data: [DONE]\n\n");
    for max in [4096, 65536, 300_000] {
        let frames = Splits::new(max as u64).cuts(bytes.len(), max).into_iter().map(|r| bytes.slice(r));
        assert!(strip(frames) == want.as_bytes(), "frames of up to {max} bytes");
    }
    // The boundary after the oversized event split across two frames, in both line endings.
    for (end, split) in [("\n\n", 1), ("\r\n\r\n", 1), ("\r\n\r\n", 2), ("\r\n\r\n", 3)] {
        let head = format!("data: {}{end}", "y".repeat(MAX_HELD_BYTES + 1));
        let stream = format!("{head}{}", usage_only.replace("\n\n", end));
        let at = head.len() - end.len() + split;
        let frames = [Bytes::from(stream[..at].to_owned()), Bytes::from(stream[at..].to_owned())];
        assert!(strip(frames) == head.as_bytes(), "{end:?} split after {split}");
    }
}

#[test]
fn a_frame_the_reader_found_no_usage_in_is_passed_without_a_search() {
    let mut strip = StripUsage::default();
    let frame = Bytes::from_static(b"data: {\"choices\":[],\"usage\":{\"total_tokens\":1}}\n\n");
    // Told wrongly that there is none, it trusts the hint: proof that nothing was searched.
    let passed = strip.frame_hinted(frame.clone(), false).unwrap();
    assert_eq!(passed.as_ptr(), frame.as_ptr());
    assert!(strip.frame_hinted(frame.clone(), true).is_none(), "with the hint, it is cut");
}
