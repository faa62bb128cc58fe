//! Request ids: every response carries `x-request-id`. A well-formed id sent by the client is
//! kept (so a trace can cross services); otherwise one is made from a per-process random prefix
//! and a counter — unique, lock-free and without a system call per request.

use std::sync::atomic::{AtomicU64, Ordering};

use http::{HeaderMap, HeaderName, HeaderValue};

/// The header name.
pub static HEADER: HeaderName = HeaderName::from_static("x-request-id");

/// A source of fresh ids.
#[derive(Debug)]
pub struct RequestIds {
    prefix: u64,
    counter: AtomicU64,
}

impl RequestIds {
    /// A new source with a random prefix.
    pub fn new() -> Self {
        let mut seed = [0u8; 8];
        // A failed OS RNG only makes ids less unique across processes, never unsafe: the id
        // is not a secret. Fall back to the process id and clock.
        if getrandom::fill(&mut seed).is_err() {
            let nanos = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_nanos() as u64)
                .unwrap_or(0);
            seed = (nanos ^ u64::from(std::process::id())).to_le_bytes();
        }
        Self { prefix: u64::from_le_bytes(seed), counter: AtomicU64::new(0) }
    }

    /// The client's id when it is acceptable, else a fresh one.
    pub fn for_request(&self, headers: &HeaderMap) -> HeaderValue {
        if let Some(given) = headers.get(&HEADER)
            && is_acceptable(given.as_bytes())
        {
            return given.clone();
        }
        let n = self.counter.fetch_add(1, Ordering::Relaxed);
        // Hex-encode into a stack buffer: one allocation (the header value) per request.
        const HEX: &[u8; 16] = b"0123456789abcdef";
        let mut buf = *b"req_00000000000000000000000000000000";
        for (i, word) in [self.prefix, n].into_iter().enumerate() {
            for j in 0..16 {
                buf[4 + i * 16 + j] = HEX[((word >> (60 - 4 * j)) & 0xf) as usize];
            }
        }
        HeaderValue::from_bytes(&buf).unwrap_or_else(|_| HeaderValue::from_static("req_unknown"))
    }
}

impl Default for RequestIds {
    fn default() -> Self {
        Self::new()
    }
}

fn is_acceptable(id: &[u8]) -> bool {
    (1..=128).contains(&id.len())
        && id.iter().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b':'))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fresh_ids_are_unique() {
        let ids = RequestIds::new();
        let a = ids.for_request(&HeaderMap::new());
        let b = ids.for_request(&HeaderMap::new());
        assert_ne!(a, b);
        assert!(a.to_str().is_ok_and(|s| s.starts_with("req_") && s.len() == 36));
        let prefix = format!("req_{:016x}", ids.prefix);
        assert_eq!(b.to_str().unwrap_or_default(), format!("{prefix}{:016x}", 1));
    }

    #[test]
    fn client_ids_are_kept_when_well_formed() {
        let ids = RequestIds::new();
        let mut headers = HeaderMap::new();
        headers.insert(HEADER.clone(), HeaderValue::from_static("trace-123:abc"));
        assert_eq!(ids.for_request(&headers), "trace-123:abc");
        headers.insert(HEADER.clone(), HeaderValue::from_static("has space"));
        assert_ne!(ids.for_request(&headers), "has space");
    }
}
