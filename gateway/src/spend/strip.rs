//! [`StripUsage`]: removes from an OpenAI Chat Completions stream the usage-only chunk, for a
//! client that did not ask for it.
//!
//! The gateway sets `stream_options.include_usage` upstream to bill every stream; OpenAI then
//! sends one last chunk with `"choices":[]` and the usage object (every other chunk carries
//! `"usage":null`). A client that did not ask for it may not expect a chunk without choices, so
//! that one event is cut out; every other byte passes unchanged, `data: [DONE]` included. It does
//! not read the usage (see [`super::scan`]) nor rewrite any other event.
//!
//! Frames that end on an event boundary and hold no usage object pass as they are (the same
//! [`Bytes`], no copy). An incomplete last event is held back, as a slice of its frame, until
//! its end arrives; only joining it with that end, or cutting an event out, copies.

use std::sync::LazyLock;

use bytes::{Bytes, BytesMut};
use memchr::memmem::Finder;

use super::scan::{USAGE_KEY, value_start};

/// Largest incomplete event held back; a longer one is passed on unmodified, up to its end.
pub const MAX_HELD_BYTES: usize = 1024 * 1024;

static CHOICES_KEY: LazyLock<Finder<'static>> = LazyLock::new(|| Finder::new(b"\"choices\""));

/// Cuts the usage-only chunk out of an OpenAI chat SSE stream; see the module documentation.
/// Pass every frame through [`StripUsage::frame`], then call [`StripUsage::finish`] at the end.
#[derive(Debug, Default)]
pub struct StripUsage {
    /// The incomplete last event, waiting for its end: a slice of the frame it came in.
    held: Bytes,
    /// The incomplete last event once more of it arrived without its end: joined here, so an
    /// event split into many frames is copied once, not once per frame.
    growing: BytesMut,
    /// Passing on an event that outgrew [`MAX_HELD_BYTES`], up to its end.
    passing: bool,
    /// The last two bytes passed while `passing`: the boundary may straddle two frames.
    tail: [u8; 2],
}

impl StripUsage {
    /// The bytes to pass on now for the next frame of the stream; `None` when there are none.
    pub fn frame(&mut self, data: Bytes) -> Option<Bytes> {
        self.frame_hinted(data, true)
    }

    /// [`frame`](Self::frame), told by the [`UsageReader`](super::scan::UsageReader) that read
    /// the same frame whether it held part of a usage object. A frame without one that ends on
    /// an event boundary, with nothing held back, is passed on without being searched.
    pub fn frame_hinted(&mut self, data: Bytes, maybe_usage: bool) -> Option<Bytes> {
        if !maybe_usage
            && !self.passing
            && self.held.is_empty()
            && self.growing.is_empty()
            && (data.ends_with(b"\n\n") || data.ends_with(b"\r\n\r\n"))
        {
            return Some(data);
        }
        if self.held.is_empty() && self.growing.is_empty() {
            return non_empty(self.events(data));
        }
        let prev: &[u8] = if self.growing.is_empty() { &self.held } else { &self.growing };
        let complete = boundary_across(prev, &data);
        if self.growing.is_empty() {
            let held = std::mem::take(&mut self.held);
            self.growing.reserve(held.len() + data.len());
            self.growing.extend_from_slice(&held);
        }
        self.growing.extend_from_slice(&data);
        if !complete && self.growing.len() <= MAX_HELD_BYTES {
            return None;
        }
        let joined = std::mem::take(&mut self.growing).freeze();
        non_empty(self.events(joined))
    }

    /// What was held back when the stream ends: an event without its final blank line (unless
    /// it is the usage-only chunk).
    pub fn finish(&mut self) -> Option<Bytes> {
        let held = if self.growing.is_empty() {
            std::mem::take(&mut self.held)
        } else {
            std::mem::take(&mut self.growing).freeze()
        };
        if is_usage_only(&held) { None } else { non_empty(held) }
    }

    /// Walks the complete events of `buf`, cuts the usage-only ones and holds the incomplete
    /// last one back.
    fn events(&mut self, buf: Bytes) -> Bytes {
        let mut start = 0;
        if self.passing {
            match self.end_of_passed(&buf) {
                Some(end) => {
                    self.passing = false;
                    start = end;
                }
                None => {
                    self.remember_tail(&buf);
                    return buf;
                }
            }
        }
        let mut out: Option<BytesMut> = None;
        let mut kept_from = 0;
        let mut event = start;
        let mut hit = usage_object(&buf, start);
        while let Some(end) = next_boundary(&buf, event) {
            if hit.is_some_and(|at| at < end) {
                if has_empty_choices(&buf[event..end]) {
                    out.get_or_insert_with(|| BytesMut::with_capacity(buf.len()))
                        .extend_from_slice(&buf[kept_from..event]);
                    kept_from = end;
                }
                hit = usage_object(&buf, end);
            }
            event = end;
        }
        let upto = if buf.len() - event > MAX_HELD_BYTES {
            self.passing = true;
            self.remember_tail(&buf);
            buf.len()
        } else {
            self.held = buf.slice(event..);
            event
        };
        match out {
            None if upto == buf.len() => buf,
            None => buf.slice(..upto),
            Some(mut out) => {
                out.extend_from_slice(&buf[kept_from..upto]);
                out.freeze()
            }
        }
    }

    /// The end of the event being passed on, when `buf` holds it, including a blank line that
    /// began in the previous frame.
    fn end_of_passed(&self, buf: &[u8]) -> Option<usize> {
        match (self.tail, buf) {
            ([_, b'\n'], [b'\n', ..]) | ([b'\n', b'\r'], [b'\n', ..]) => Some(1),
            ([_, b'\n'], [b'\r', b'\n', ..]) => Some(2),
            _ => next_boundary(buf, 0),
        }
    }

    fn remember_tail(&mut self, buf: &[u8]) {
        match buf {
            [.., a, b] => self.tail = [*a, *b],
            [b] => self.tail = [self.tail[1], *b],
            [] => {}
        }
    }
}

fn non_empty(bytes: Bytes) -> Option<Bytes> {
    (!bytes.is_empty()).then_some(bytes)
}

/// A blank line ends in `data`, perhaps begun at the end of `prev` (which holds none).
fn boundary_across(prev: &[u8], data: &[u8]) -> bool {
    let mut seam = [0u8; 4];
    let (p, d) = (prev.len().min(2), data.len().min(2));
    seam[..p].copy_from_slice(&prev[prev.len() - p..]);
    seam[p..p + d].copy_from_slice(&data[..d]);
    next_boundary(&seam[..p + d], 0).is_some() || next_boundary(data, 0).is_some()
}

/// The end of the first event ending in `buf[from..]`: after a blank line (`\n\n`, `\r\n\r\n`).
fn next_boundary(buf: &[u8], from: usize) -> Option<usize> {
    let mut at = from;
    while let Some(i) = memchr::memchr(b'\n', &buf[at..]).map(|i| at + i) {
        match buf.get(i + 1) {
            Some(b'\n') => return Some(i + 2),
            Some(b'\r') if buf.get(i + 2) == Some(&b'\n') => return Some(i + 3),
            _ => at = i + 1,
        }
    }
    None
}

/// Where the next `"usage"` key whose value is an object starts in `buf[from..]`. Keys in JSON
/// strings are escaped and never match; `"usage":null` is skipped.
fn usage_object(buf: &[u8], from: usize) -> Option<usize> {
    USAGE_KEY
        .find_iter(&buf[from..])
        .map(|at| from + at)
        .find(|&at| !escaped(buf, at) && value_start(&buf[at + USAGE_KEY.needle().len()..]) == Some(b'{'))
}

/// The event has a `"choices"` key whose value is an empty array.
fn has_empty_choices(event: &[u8]) -> bool {
    CHOICES_KEY.find_iter(event).any(|at| {
        let rest = &event[at + CHOICES_KEY.needle().len()..];
        if escaped(event, at) || value_start(rest) != Some(b'[') {
            return false;
        }
        let open = rest.iter().position(|&b| b == b'[').map_or(rest.len(), |i| i + 1);
        rest[open..].iter().find(|b| !b.is_ascii_whitespace()) == Some(&b']')
    })
}

/// The usage-only chunk: a usage object and no choices.
fn is_usage_only(event: &[u8]) -> bool {
    usage_object(event, 0).is_some() && has_empty_choices(event)
}

/// The quote at `at` is escaped: text inside a JSON string.
fn escaped(buf: &[u8], at: usize) -> bool {
    at > 0 && buf[at - 1] == b'\\'
}

#[cfg(test)]
mod tests;
