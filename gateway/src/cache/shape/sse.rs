//! The server-sent events of a stream, read as the SSE specification says: `\n`, `\r\n` or `\r`
//! line ends, `:` comments, `event:`/`id:`/`retry:` fields, `data:` lines joined with `\n`, an
//! event ending at a blank line; an unterminated last event is dropped (the stream was cut).

use std::ops::Range;

/// One server-sent event.
#[derive(Debug)]
pub(super) struct Event {
    /// Its `event:` field.
    pub(super) name: Option<String>,
    /// Its `data:` lines, joined with `\n`.
    pub(super) data: String,
    /// Where it lies in the stream, from its first line to the end of the blank line after it.
    pub(super) span: Range<usize>,
}

/// The events of a stream (see the module documentation); None when it is not UTF-8.
pub(super) fn parse_events(bytes: &[u8]) -> Option<Vec<Event>> {
    let text = std::str::from_utf8(bytes).ok()?;
    let mut events = Vec::new();
    let (mut name, mut data, mut has_data) = (None, String::new(), false);
    let mut start = if text.starts_with('\u{feff}') { '\u{feff}'.len_utf8() } else { 0 };
    let mut event_start = start;
    while start < text.len() {
        let rest = text.get(start..)?;
        let (line, next) = match rest.find(['\r', '\n']) {
            None => break, // an unterminated line: the stream was cut
            Some(end) if rest[end..].starts_with("\r\n") => (&rest[..end], start + end + 2),
            Some(end) => (&rest[..end], start + end + 1),
        };
        if line.is_empty() {
            if has_data || name.is_some() {
                let data = std::mem::take(&mut data);
                events.push(Event { name: name.take(), data, span: event_start..next });
            }
            has_data = false;
            event_start = next;
        } else if !line.starts_with(':') {
            let (field, value) = line.split_once(':').unwrap_or((line, ""));
            let value = value.strip_prefix(' ').unwrap_or(value);
            match field {
                "data" => {
                    if has_data {
                        data.push('\n');
                    }
                    data.push_str(value);
                    has_data = true;
                }
                "event" => name = Some(value.to_owned()),
                _ => {} // id, retry and unknown fields change nothing here
            }
        }
        start = next;
    }
    Some(events)
}
