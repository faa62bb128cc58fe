//! Anthropic's SSE framing, read incrementally: [`SseReader`] takes upstream bytes in whatever
//! splits the network delivers, keeps only the current unfinished line and event (bounded by
//! [`MAX_EVENT_BYTES`]), and hands back each complete event's `data` as JSON. [`push`] and
//! [`finish`] drive a [`SseTranslator`] with them: they stop at the client stream's end, and end
//! it with an error when the upstream's events cannot be read or stop too early. It is shared
//! by the chat (`super::stream`) and Responses (`super::responses::stream`) translators, which
//! own what the events mean and how an error is told to the client.
//!
//! `event:` lines repeat the data's `type`, which is what the translators read; comments and
//! other fields carry nothing for them and are skipped.

use bytes::Bytes;
use serde_json::Value;

/// The largest upstream event (or line) held while waiting for its end.
pub const MAX_EVENT_BYTES: usize = 1024 * 1024;

/// Why the upstream's stream cannot be read on; the translator ends the client stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum SseError {
    /// An event's data is not JSON.
    Unreadable,
    /// A line or event grew past [`MAX_EVENT_BYTES`] without ending.
    Oversized,
}

impl SseError {
    /// The message the client is told.
    pub(super) fn message(self) -> &'static str {
        match self {
            Self::Unreadable => "The upstream provider sent an unreadable stream event",
            Self::Oversized => "The upstream provider sent an oversized stream event",
        }
    }
}

/// What a stream translator gives [`push`] and [`finish`].
pub(super) trait SseTranslator {
    /// Its reader.
    fn sse(&mut self) -> &mut SseReader;
    /// Whether the client stream has ended: nothing is read after that.
    fn is_ended(&self) -> bool;
    /// Translates one upstream event into client events.
    fn translate(&mut self, event: &Value, out: &mut Vec<Bytes>);
    /// Ends the client stream with an error of the gateway's own.
    fn end_with_error(&mut self, message: &str, out: &mut Vec<Bytes>);
}

/// Feeds upstream bytes to `t`; returns the complete client events they finish, possibly none.
pub(super) fn push(t: &mut impl SseTranslator, chunk: &[u8]) -> Vec<Bytes> {
    let mut out = Vec::new();
    let mut rest = chunk;
    while !t.is_ended() {
        match t.sse().next_event(&mut rest) {
            Some(Ok(event)) => t.translate(&event, &mut out),
            Some(Err(e)) => t.end_with_error(e.message(), &mut out),
            None => break,
        }
    }
    out
}

/// The upstream ended: flushes a last event left without its blank line and returns the
/// remaining client events, ending the client stream if it has not ended yet (a client must
/// not mistake a cut-off answer for a complete one).
pub(super) fn finish(t: &mut impl SseTranslator) -> Vec<Bytes> {
    let mut out = Vec::new();
    if !t.is_ended() {
        match t.sse().finish() {
            Some(Ok(event)) => t.translate(&event, &mut out),
            Some(Err(e)) => t.end_with_error(e.message(), &mut out),
            None => {}
        }
    }
    if !t.is_ended() {
        t.end_with_error("The upstream provider ended the stream before the response was complete", &mut out);
    }
    out
}

/// The unfinished line and event of one upstream stream.
#[derive(Debug, Default)]
pub(super) struct SseReader {
    /// Bytes of the current, unfinished line.
    line: Vec<u8>,
    /// `data:` lines of the current, unfinished event.
    data: Vec<u8>,
}

impl SseReader {
    /// Reads from `input` up to the end of the next event and returns it, advancing `input`
    /// past what was read; `None` once `input` is used up without finishing one (its partial
    /// line and event are kept for the next call). After an error, stop reading.
    pub(super) fn next_event(&mut self, input: &mut &[u8]) -> Option<Result<Value, SseError>> {
        while !input.is_empty() {
            match input.iter().position(|&b| b == b'\n') {
                Some(end) => {
                    self.line.extend_from_slice(&input[..end]);
                    *input = &input[end + 1..];
                    let mut line = std::mem::take(&mut self.line);
                    if line.last() == Some(&b'\r') {
                        line.pop();
                    }
                    let event = self.on_line(&line);
                    // Keep the allocation for the next line.
                    line.clear();
                    self.line = line;
                    if event.is_some() {
                        return event;
                    }
                }
                None => {
                    self.line.extend_from_slice(input);
                    *input = &[];
                }
            }
            if self.line.len() + self.data.len() > MAX_EVENT_BYTES {
                return Some(Err(SseError::Oversized));
            }
        }
        None
    }

    /// The upstream ended: the last event, left without its blank line, if there is one.
    pub(super) fn finish(&mut self) -> Option<Result<Value, SseError>> {
        if !self.line.is_empty() {
            let mut line = std::mem::take(&mut self.line);
            if line.last() == Some(&b'\r') {
                line.pop();
            }
            // A non-empty line never ends an event.
            let _ = self.on_line(&line);
        }
        self.dispatch()
    }

    /// Frees what is held, once the client stream has ended.
    pub(super) fn clear(&mut self) {
        *self = Self::default();
    }

    fn on_line(&mut self, line: &[u8]) -> Option<Result<Value, SseError>> {
        if line.is_empty() {
            return self.dispatch();
        }
        if let Some(value) = line.strip_prefix(b"data:") {
            if !self.data.is_empty() {
                self.data.push(b'\n');
            }
            self.data.extend_from_slice(value.strip_prefix(b" ").unwrap_or(value));
        }
        None
    }

    /// The blank line ending an event: the accumulated data, if any.
    fn dispatch(&mut self) -> Option<Result<Value, SseError>> {
        if self.data.is_empty() {
            return None;
        }
        let data = std::mem::take(&mut self.data);
        Some(serde_json::from_slice::<Value>(&data).map_err(|_| SseError::Unreadable))
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;

    fn all(reader: &mut SseReader, mut input: &[u8]) -> Vec<Result<Value, SseError>> {
        std::iter::from_fn(|| reader.next_event(&mut input)).collect()
    }

    #[test]
    fn events_split_anywhere_are_read_whole() {
        let text = b"event: a\r\ndata: {\"type\":\r\ndata: \"a\"}\r\n\r\n: comment\n\ndata:{\"type\":\"b\"}\n\n";
        let mut whole = SseReader::default();
        let expected = all(&mut whole, text);
        assert_eq!(expected.len(), 2);
        assert_eq!(expected[0].as_ref().unwrap()["type"], "a");
        let mut split = SseReader::default();
        let events: Vec<_> = text.chunks(3).flat_map(|c| all(&mut split, c)).collect();
        assert_eq!(events, expected);
    }

    #[test]
    fn a_last_event_without_its_blank_line_is_flushed() {
        let mut reader = SseReader::default();
        assert!(all(&mut reader, b"data: {\"type\":\"x\"}").is_empty());
        assert_eq!(reader.finish().unwrap().unwrap()["type"], "x");
        assert!(reader.finish().is_none());
    }

    #[test]
    fn unreadable_and_oversized_events_are_errors() {
        assert_eq!(all(&mut SseReader::default(), b"data: {not json\n\n"), [Err(SseError::Unreadable)]);
        let big = vec![b'x'; MAX_EVENT_BYTES + 1];
        assert_eq!(SseReader::default().next_event(&mut big.as_slice()), Some(Err(SseError::Oversized)));
    }
}
