//! [`UsageReader`]: the provider-reported token usage and the model name of one upstream answer,
//! read from its raw bytes as they are relayed, JSON or SSE, frames split anywhere.
//!
//! It finds keys, not structure: a `"usage"` key whose value is an object, and the first
//! `"model"` key whose value is a string. Inside a JSON string every quote is escaped (`\"`), so
//! keys quoted in generated text or in streamed tool arguments never match. Only the usage object
//! itself is buffered (bounded) and handed to the provider's parser in [`uprox_crds::prices`]:
//! the counting rules of each provider live there, not here. Frames that hold neither key cost
//! two `memmem` searches and no allocation.

use std::sync::LazyLock;

use memchr::memmem::Finder;
use uprox_crds::prices::Usage;

/// Which API the answer comes from: selects the parser of its usage object.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Wire {
    /// OpenAI Chat Completions (and the many upstreams that speak it).
    OpenAiChat,
    /// OpenAI Responses API (usage at `response.usage` in streams).
    OpenAiResponses,
    /// OpenAI embeddings.
    OpenAiEmbeddings,
    /// Anthropic Messages.
    Anthropic,
}

/// Largest usage object kept; a larger one is not a usage object any provider sends, and is
/// ignored.
pub const MAX_USAGE_BYTES: usize = 4 * 1024;

/// Longest model name kept; a longer value is ignored.
pub const MAX_MODEL_BYTES: usize = 200;

/// Both keys are 7 bytes long, quotes included.
const KEY_LEN: usize = 7;

/// Bytes kept from the end of a frame to find a key split across two frames: the key but its
/// last byte, and the byte before it (to tell an escaped quote).
const CARRY: usize = KEY_LEN;

/// The finders, built once: building one per frame would cost more than searching the frame.
pub(super) static USAGE_KEY: LazyLock<Finder<'static>> = LazyLock::new(|| Finder::new(b"\"usage\""));
static MODEL_KEY: LazyLock<Finder<'static>> = LazyLock::new(|| Finder::new(b"\"model\""));

/// The value a key found by the search leads to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Key {
    Usage,
    Model,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// Looking for the next key.
    Search,
    /// After a key: whitespace, then `:`.
    Colon(Key),
    /// After the colon: whitespace, then the value.
    Value(Key),
    /// Inside the usage object; `overflow` once it outgrew [`MAX_USAGE_BYTES`].
    Object { depth: u32, in_string: bool, escaped: bool, overflow: bool },
    /// Inside the model string; `refused` once it is too long or has an unsupported escape.
    Model { escaped: bool, refused: bool },
}

/// Reads the usage and the model of one upstream answer from its bytes; see the module
/// documentation. Feed it every frame, in order, with [`UsageReader::feed`].
#[derive(Debug, Clone)]
pub struct UsageReader {
    wire: Wire,
    sse: bool,
    state: State,
    /// The last bytes searched, for keys split across frames: only bytes searched since the
    /// last value ended, never bytes of a value.
    carry: [u8; CARRY],
    carried: usize,
    /// The value being captured (usage object or model string); reused, so a stream allocates
    /// it once.
    buf: Vec<u8>,
    usage: Option<Usage>,
    model: Option<String>,
    /// Still looking for the model: until the first `"model"` string value.
    want_model: bool,
}

impl UsageReader {
    /// A reader for an answer of `wire`, streamed as server-sent events when `sse`.
    ///
    /// In SSE mode successive usage objects merge field by field (largest wins): Anthropic
    /// splits usage between `message_start` and the cumulative `message_delta`. In JSON mode the
    /// last usage object wins: the top-level one comes after any usage-like object inside
    /// content (an Anthropic `tool_use` input is real JSON).
    pub fn new(wire: Wire, sse: bool) -> Self {
        Self {
            wire,
            sse,
            state: State::Search,
            carry: [0; CARRY],
            carried: 0,
            buf: Vec::new(),
            usage: None,
            model: None,
            want_model: true,
        }
    }

    /// Reads the next frame of the answer. Returns whether the frame held part of a usage
    /// object (`"usage": {…}`; not `"usage": null`), which lets [`super::strip`] pass the other
    /// frames without searching them again.
    pub fn feed(&mut self, data: &[u8]) -> bool {
        let mut at = 0;
        let mut usage = matches!(self.state, State::Object { .. });
        while at < data.len() {
            usage |= matches!(self.state, State::Object { .. });
            at = match self.state {
                State::Search => self.search(data, at),
                State::Colon(key) => self.colon(data, at, key),
                State::Value(key) => self.value(data, at, key),
                State::Object { .. } => self.object(data, at),
                State::Model { .. } => self.model_string(data, at),
            };
        }
        usage | matches!(self.state, State::Object { .. })
    }

    /// The usage the provider reported, `None` when the answer held no usage object.
    pub fn usage(&self) -> Option<Usage> {
        self.usage
    }

    /// The model the answer names (its first `"model"` string value).
    pub fn model(&self) -> Option<&str> {
        self.model.as_deref()
    }

    /// Searches `data[at..]` for the next key; returns where to go on.
    fn search(&mut self, data: &[u8], at: usize) -> usize {
        if at == 0
            && self.carried > 0
            && let Some((end, key)) = self.seam(data)
        {
            return self.found(key, end);
        }
        let mut from = at;
        loop {
            let hay = &data[from..];
            let usage = USAGE_KEY.find(hay);
            // A model key only counts before the usage key: so each byte is searched for it once.
            let model = if self.want_model { MODEL_KEY.find(usage.map_or(hay, |u| &hay[..u])) } else { None };
            let (pos, key) = match (model, usage) {
                (Some(m), _) => (from + m, Key::Model),
                (None, Some(u)) => (from + u, Key::Usage),
                (None, None) => break,
            };
            let before = if pos > at {
                Some(data[pos - 1])
            } else if at == 0 && self.carried > 0 {
                Some(self.carry[self.carried - 1])
            } else {
                None
            };
            if before == Some(b'\\') {
                // An escaped quote: text inside a string.
                from = pos + 1;
                continue;
            }
            return self.found(key, pos + KEY_LEN);
        }
        self.keep_tail(data, at);
        data.len()
    }

    /// A key that starts in the carried bytes and ends in `data`: returns its end in `data`.
    fn seam(&self, data: &[u8]) -> Option<(usize, Key)> {
        let mut seam = [0u8; CARRY + KEY_LEN - 1];
        let head = data.len().min(KEY_LEN - 1);
        seam[..self.carried].copy_from_slice(&self.carry[..self.carried]);
        seam[self.carried..self.carried + head].copy_from_slice(&data[..head]);
        let seam = &seam[..self.carried + head];
        let first = self.carried.saturating_sub(KEY_LEN - 1);
        (first..self.carried).find_map(|start| {
            let candidate = seam.get(start..start + KEY_LEN)?;
            let key = if candidate == USAGE_KEY.needle() {
                Key::Usage
            } else if self.want_model && candidate == MODEL_KEY.needle() {
                Key::Model
            } else {
                return None;
            };
            let escaped = start > 0 && seam[start - 1] == b'\\';
            (!escaped).then_some((start + KEY_LEN - self.carried, key))
        })
    }

    fn found(&mut self, key: Key, end: usize) -> usize {
        self.carried = 0;
        self.state = State::Colon(key);
        end
    }

    /// Keeps the last searched bytes: the carried ones (when this frame was searched from its
    /// start) followed by `data[at..]`.
    fn keep_tail(&mut self, data: &[u8], at: usize) {
        let fresh = &data[at..];
        if fresh.len() >= CARRY {
            self.carry.copy_from_slice(&fresh[fresh.len() - CARRY..]);
            self.carried = CARRY;
            return;
        }
        let old = if at == 0 { self.carried } else { 0 };
        let keep = old.min(CARRY - fresh.len());
        self.carry.copy_within(old - keep..old, 0);
        self.carry[keep..keep + fresh.len()].copy_from_slice(fresh);
        self.carried = keep + fresh.len();
    }

    fn colon(&mut self, data: &[u8], at: usize, key: Key) -> usize {
        let Some(i) = data[at..].iter().position(|b| !is_space(*b)).map(|i| at + i) else {
            return data.len();
        };
        if data[i] == b':' {
            self.state = State::Value(key);
            i + 1
        } else {
            // A string value that reads "usage" or "model", not a key.
            self.state = State::Search;
            i
        }
    }

    fn value(&mut self, data: &[u8], at: usize, key: Key) -> usize {
        let Some(i) = data[at..].iter().position(|b| !is_space(*b)).map(|i| at + i) else {
            return data.len();
        };
        self.buf.clear();
        // One allocation for a model name or a usage object, not one per doubling.
        self.buf.reserve(128);
        match (key, data[i]) {
            (Key::Usage, b'{') => {
                self.state = State::Object { depth: 0, in_string: false, escaped: false, overflow: false };
                i
            }
            (Key::Model, b'"') => {
                self.state = State::Model { escaped: false, refused: false };
                i + 1
            }
            // `null`, or a value of another type: search on from it.
            _ => {
                self.state = State::Search;
                i
            }
        }
    }

    /// Captures the usage object up to its closing brace.
    fn object(&mut self, data: &[u8], at: usize) -> usize {
        let State::Object { mut depth, mut in_string, mut escaped, mut overflow } = self.state else {
            return at;
        };
        let mut end = None;
        for (i, &b) in data.iter().enumerate().skip(at) {
            if in_string {
                match b {
                    _ if escaped => escaped = false,
                    b'\\' => escaped = true,
                    b'"' => in_string = false,
                    _ => {}
                }
                continue;
            }
            match b {
                b'"' => in_string = true,
                b'{' | b'[' => depth += 1,
                b'}' | b']' => {
                    depth = depth.saturating_sub(1);
                    if depth == 0 {
                        end = Some(i + 1);
                        break;
                    }
                }
                _ => {}
            }
        }
        let stop = end.unwrap_or(data.len());
        let part = &data[at..stop];
        if !overflow && self.buf.len() + part.len() <= MAX_USAGE_BYTES {
            self.buf.extend_from_slice(part);
        } else {
            overflow = true;
            self.buf.clear();
        }
        if end.is_some() {
            if !overflow {
                self.take_usage();
            }
            self.state = State::Search;
        } else {
            self.state = State::Object { depth, in_string, escaped, overflow };
        }
        stop
    }

    fn take_usage(&mut self) {
        // Straight from the bytes into the parser's fields: no intermediate JSON value.
        let mut json = serde_json::Deserializer::from_slice(&self.buf);
        let parsed = match self.wire {
            Wire::OpenAiChat => Usage::from_openai_chat(&mut json),
            Wire::OpenAiResponses => Usage::from_openai_responses(&mut json),
            Wire::OpenAiEmbeddings => Usage::from_openai_embeddings(&mut json),
            Wire::Anthropic => Usage::from_anthropic(&mut json),
        }
        .and_then(|usage| json.end().map(|()| usage));
        let Ok(new) = parsed else {
            return;
        };
        self.usage = Some(match self.usage {
            Some(old) if self.sse => largest(old, new),
            _ => new,
        });
    }

    /// Captures the model string up to its closing quote, unescaping `\"`, `\\` and `\/`.
    fn model_string(&mut self, data: &[u8], at: usize) -> usize {
        let State::Model { mut escaped, mut refused } = self.state else {
            return at;
        };
        for (i, &b) in data.iter().enumerate().skip(at) {
            let byte = if escaped {
                escaped = false;
                match b {
                    b'"' | b'\\' | b'/' => b,
                    // `\n`, `\u…`: not in any model name; the value is refused.
                    _ => {
                        refused = true;
                        continue;
                    }
                }
            } else if b == b'\\' {
                escaped = true;
                continue;
            } else if b == b'"' {
                self.want_model = false;
                if !refused {
                    // The captured bytes become the name: moved, not copied.
                    self.model = String::from_utf8(std::mem::take(&mut self.buf)).ok();
                }
                self.state = State::Search;
                return i + 1;
            } else {
                b
            };
            if !refused && self.buf.len() < MAX_MODEL_BYTES {
                self.buf.push(byte);
            } else {
                refused = true;
            }
        }
        self.state = State::Model { escaped, refused };
        data.len()
    }
}

/// JSON whitespace.
fn is_space(b: u8) -> bool {
    matches!(b, b' ' | b'\t' | b'\n' | b'\r')
}

/// Field by field, the larger count: what two partial reports of one stream add up to.
fn largest(a: Usage, b: Usage) -> Usage {
    Usage {
        input: a.input.max(b.input),
        output: a.output.max(b.output),
        cache_read: a.cache_read.max(b.cache_read),
        cache_write: a.cache_write.max(b.cache_write),
        cache_write_1h: a.cache_write_1h.max(b.cache_write_1h),
        reasoning: a.reasoning.max(b.reasoning),
    }
}

/// The first byte of the value after a key, when `rest` (what follows the key) holds
/// whitespace, `:`, whitespace and that byte; `None` when it does not (yet).
pub(super) fn value_start(rest: &[u8]) -> Option<u8> {
    let mut bytes = rest.iter().copied().skip_while(|b| is_space(*b));
    if bytes.next()? != b':' {
        return None;
    }
    bytes.find(|b| !is_space(*b))
}

#[cfg(test)]
pub(super) mod tests;
