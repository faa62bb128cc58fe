//! Trace and span ids: W3C Trace Context (`traceparent`) parsing and formatting, and random ids
//! from a per-thread generator (seeded once from the OS; no syscall per request).

use std::cell::Cell;

use http::HeaderValue;

/// The ids of one traced request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Ids {
    /// The trace: the caller's, or a new one.
    pub trace: [u8; 16],
    /// The request's own (SERVER) span.
    pub span: [u8; 8],
    /// The caller's span, when the request came with a `traceparent`.
    pub parent: Option<[u8; 8]>,
    /// The span of the upstream call (CLIENT), the parent the provider sees.
    pub upstream: [u8; 8],
    /// Whether the spans are recorded and exported.
    pub sampled: bool,
}

impl Ids {
    /// Ids for a request that came with `traceparent` (when it is well-formed: a child of the
    /// caller's span, sampled as the caller says), else for a new trace, sampled by
    /// `sample(trace id)`.
    pub fn for_request(traceparent: Option<&HeaderValue>, sample: impl FnOnce(&[u8; 16]) -> bool) -> Ids {
        let span = span_id();
        let upstream = span_id();
        match traceparent.and_then(|v| parse(v.as_bytes())) {
            Some(parent) => {
                Ids { trace: parent.trace, span, parent: Some(parent.span), upstream, sampled: parent.sampled }
            }
            None => {
                let trace = trace_id();
                Ids { trace, span, parent: None, upstream, sampled: sample(&trace) }
            }
        }
    }

    /// The `traceparent` the upstream gets: this trace, the upstream call's span as parent.
    pub fn upstream_traceparent(&self) -> HeaderValue {
        let mut text = [0u8; 55];
        format(&mut text, &self.trace, &self.upstream, self.sampled);
        // Hex digits and dashes only.
        HeaderValue::from_bytes(&text).unwrap_or_else(|_| HeaderValue::from_static(""))
    }
}

/// A parsed `traceparent`.
#[derive(Debug, PartialEq, Eq)]
struct Parent {
    trace: [u8; 16],
    span: [u8; 8],
    sampled: bool,
}

/// Parses a `traceparent` header (`{version}-{trace id}-{parent id}-{flags}`, lower-case hex).
/// Version `ff`, all-zero ids and malformed values are refused; versions after `00` are read
/// by their first four fields, as the specification asks.
fn parse(value: &[u8]) -> Option<Parent> {
    if value.len() < 55 || (value.len() > 55 && value[55] != b'-') {
        return None;
    }
    let version = hex::<1>(&value[0..2])?;
    if version[0] == 0xff || (version[0] == 0 && value.len() != 55) {
        return None;
    }
    if value[2] != b'-' || value[35] != b'-' || value[52] != b'-' {
        return None;
    }
    let trace = hex::<16>(&value[3..35])?;
    let span = hex::<8>(&value[36..52])?;
    let flags = hex::<1>(&value[53..55])?;
    if trace == [0; 16] || span == [0; 8] {
        return None;
    }
    Some(Parent { trace, span, sampled: flags[0] & 1 == 1 })
}

/// `N` bytes from `2N` lower-case hex digits.
fn hex<const N: usize>(digits: &[u8]) -> Option<[u8; N]> {
    let nibble = |c: u8| match c {
        b'0'..=b'9' => Some(c - b'0'),
        b'a'..=b'f' => Some(c - b'a' + 10),
        _ => None,
    };
    let mut out = [0u8; N];
    for (i, pair) in digits.chunks_exact(2).enumerate() {
        *out.get_mut(i)? = nibble(pair[0])? << 4 | nibble(pair[1])?;
    }
    Some(out)
}

/// Writes `00-{trace}-{span}-{flags}` into `out`.
fn format(out: &mut [u8; 55], trace: &[u8; 16], span: &[u8; 8], sampled: bool) {
    out[..3].copy_from_slice(b"00-");
    write_hex(&mut out[3..35], trace);
    out[35] = b'-';
    write_hex(&mut out[36..52], span);
    out[52..].copy_from_slice(if sampled { b"-01" } else { b"-00" });
}

/// Lower-case hex of `bytes` into `out` (twice as long).
pub fn write_hex(out: &mut [u8], bytes: &[u8]) {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    for (pair, b) in out.chunks_exact_mut(2).zip(bytes) {
        pair[0] = DIGITS[usize::from(b >> 4)];
        pair[1] = DIGITS[usize::from(b & 0xf)];
    }
}

/// Lower-case hex of `bytes`.
pub fn to_hex(bytes: &[u8]) -> String {
    let mut out = vec![0u8; bytes.len() * 2];
    write_hex(&mut out, bytes);
    String::from_utf8(out).unwrap_or_default()
}

thread_local! {
    /// splitmix64 state, seeded from the OS once per thread.
    static STATE: Cell<u64> = Cell::new({
        let mut seed = [0u8; 8];
        // Without OS randomness, std's per-thread hash keys and the clock still make ids
        // distinct enough.
        if getrandom::fill(&mut seed).is_err() {
            let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_nanos());
            seed = std::hash::BuildHasher::hash_one(&std::hash::RandomState::new(), nanos).to_le_bytes();
        }
        u64::from_le_bytes(seed)
    });
}

/// The next random, non-zero `u64` of this thread (splitmix64).
fn next() -> u64 {
    STATE.with(|state| {
        loop {
            let s = state.get().wrapping_add(0x9e37_79b9_7f4a_7c15);
            state.set(s);
            let mut z = s;
            z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
            z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
            z ^= z >> 31;
            if z != 0 {
                return z;
            }
        }
    })
}

fn trace_id() -> [u8; 16] {
    let mut id = [0u8; 16];
    id[..8].copy_from_slice(&next().to_be_bytes());
    id[8..].copy_from_slice(&next().to_be_bytes());
    id
}

fn span_id() -> [u8; 8] {
    next().to_be_bytes()
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use super::*;

    const SAMPLE: &str = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";

    #[test]
    fn a_well_formed_traceparent_is_read() {
        let parent = parse(SAMPLE.as_bytes()).unwrap();
        assert_eq!(to_hex(&parent.trace), "4bf92f3577b34da6a3ce929d0e0e4736");
        assert_eq!(to_hex(&parent.span), "00f067aa0ba902b7");
        assert!(parent.sampled);
        assert!(!parse(b"00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-00").unwrap().sampled);
        // A later version may add fields after a dash.
        assert!(parse(format!("01{}-extra", &SAMPLE[2..]).as_bytes()).is_some());
    }

    #[test]
    fn malformed_traceparents_are_refused() {
        for bad in [
            "",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7",
            "ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            "00-00000000000000000000000000000000-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01",
            "00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-extra",
            "00_4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e473g-00f067aa0ba902b7-01",
        ] {
            assert_eq!(parse(bad.as_bytes()), None, "{bad:?}");
        }
    }

    #[test]
    fn a_request_joins_its_callers_trace_and_follows_its_decision() {
        let header = HeaderValue::from_static(SAMPLE);
        let ids = Ids::for_request(Some(&header), |_| false);
        assert_eq!(to_hex(&ids.trace), "4bf92f3577b34da6a3ce929d0e0e4736");
        assert_eq!(ids.parent.map(|p| to_hex(&p)).as_deref(), Some("00f067aa0ba902b7"));
        assert!(ids.sampled, "the caller's flag wins over the ratio");
        assert_ne!(ids.span, ids.upstream);
        let upstream = ids.upstream_traceparent();
        let sent = parse(upstream.as_bytes()).unwrap();
        assert_eq!((sent.trace, sent.span, sent.sampled), (ids.trace, ids.upstream, true));
    }

    #[test]
    fn without_a_caller_a_new_trace_is_sampled_by_its_id() {
        let header = HeaderValue::from_static("garbage");
        let ids = Ids::for_request(Some(&header), |_| true);
        assert_eq!(ids.parent, None);
        assert!(ids.sampled);
        let other = Ids::for_request(None, |_| false);
        assert!(!other.sampled);
        assert_ne!(ids.trace, other.trace, "ids are random");
        assert!(!parse(other.upstream_traceparent().as_bytes()).unwrap().sampled);
    }
}
