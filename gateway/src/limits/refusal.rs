//! What a rate-limited answer says: the `x-ratelimit-*` headers and the refusal.

use std::time::Duration;

use http::{HeaderMap, HeaderName, HeaderValue};
use uprox_crds::common::ObjectId;

use super::LimitKind;

/// What the `x-ratelimit-*` headers report: the tightest applicable limits.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RateHeaders {
    /// `(limit, remaining, reset)` of requests per minute.
    pub requests: Option<(u32, u64, Duration)>,
    /// `(limit, remaining, reset)` of tokens per minute.
    pub tokens: Option<(u32, u64, Duration)>,
}

static LIMIT_REQUESTS: HeaderName = HeaderName::from_static("x-ratelimit-limit-requests");
static REMAINING_REQUESTS: HeaderName = HeaderName::from_static("x-ratelimit-remaining-requests");
static RESET_REQUESTS: HeaderName = HeaderName::from_static("x-ratelimit-reset-requests");
static LIMIT_TOKENS: HeaderName = HeaderName::from_static("x-ratelimit-limit-tokens");
static REMAINING_TOKENS: HeaderName = HeaderName::from_static("x-ratelimit-remaining-tokens");
static RESET_TOKENS: HeaderName = HeaderName::from_static("x-ratelimit-reset-tokens");

impl RateHeaders {
    /// Writes the headers OpenAI sends (`x-ratelimit-limit-requests`, …), replacing any the
    /// upstream sent: the caller's limits here are uprox's.
    pub fn write(&self, headers: &mut HeaderMap) {
        let pairs = [
            (self.requests, &LIMIT_REQUESTS, &REMAINING_REQUESTS, &RESET_REQUESTS),
            (self.tokens, &LIMIT_TOKENS, &REMAINING_TOKENS, &RESET_TOKENS),
        ];
        for (values, limit, remaining, reset) in pairs {
            if let Some((l, r, d)) = values {
                headers.insert(limit, HeaderValue::from(l));
                headers.insert(remaining, HeaderValue::from(r));
                if let Ok(v) = HeaderValue::from_str(&format_reset(d)) {
                    headers.insert(reset, v);
                }
            }
        }
    }
}

/// A duration the way OpenAI writes resets: `20ms`, `1s`, `6m0s`.
pub fn format_reset(d: Duration) -> String {
    if d < Duration::from_secs(1) {
        return format!("{}ms", d.as_millis());
    }
    let secs = d.as_secs() + u64::from(d.subsec_nanos() > 0);
    if secs < 60 { format!("{secs}s") } else { format!("{}m{}s", secs / 60, secs % 60) }
}

/// A refused request: which limit of which Policy, and when to retry.
#[derive(Debug)]
pub struct Refusal {
    /// The limit.
    pub kind: LimitKind,
    /// The Policy that set it (in the caller's own namespace).
    pub policy: ObjectId,
    /// The limit as configured.
    pub limit: u32,
    /// When a retry may succeed.
    pub retry_after: Duration,
    /// The headers to send with the refusal.
    pub headers: RateHeaders,
}

impl std::fmt::Display for Refusal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let per = if self.kind == LimitKind::Concurrency { "" } else { " per minute" };
        write!(
            f,
            "Rate limit reached for {} set by Policy {} (limit {}{per}); retry after {}s",
            self.kind.describe(),
            self.policy,
            self.limit,
            retry_secs(self.retry_after)
        )
    }
}

/// Whole seconds to wait, at least 1.
pub fn retry_secs(d: Duration) -> u64 {
    (d.as_secs() + u64::from(d.subsec_nanos() > 0)).max(1)
}
