//! Rate limits: requests per minute, tokens per minute and concurrent requests, per Policy and
//! subject (a token, or a Service shared by its tokens). Every attached Policy's limits apply;
//! the strictest refuses first.
//!
//! **Where the state lives.** A [`Limiter`] per `(Policy, subject)` is held by the [`Registry`]
//! in the [`Gateway`](crate::app::Gateway), outside the snapshot. When a snapshot is installed
//! each token entry gets one [`LimitSet`] (an `Arc` of the `Arc<Limiter>`s that apply to it), so
//! a request does no map lookup and takes no lock: it walks a short slice of atomics. A reload
//! keeps the limiter of every `(Policy, subject)` whose limits did not change, gives changed
//! ones fresh state and drops removed ones (in-flight requests keep theirs until they end).
//!
//! **Algorithms.** Requests per minute: GCRA from the `governor` crate (burst = the per-minute
//! share, refilled evenly). Tokens per minute: a token bucket on one atomic "full again at"
//! time, charged after the response from the usage it reports; it may go into debt (a large
//! answer costs what it cost) and refuses new requests while it is in debt. Concurrency: an
//! atomic counter; the [`Admission`] releases it when dropped, and it lives in the response
//! body, so a stream holds its slot until it ends or the client goes away.
//!
//! **Replicas.** Each replica enforces `ceil(limit / replicas)` (at least 1), where `replicas`
//! is the number of ready gateway replicas ([`Registry::set_replicas`]; 1 until known). A
//! change rescales every limiter in place: token buckets and concurrency counters keep their
//! state; a requests-per-minute limiter whose share changed restarts full.

use std::collections::HashMap;
use std::num::NonZeroU32;
use std::pin::Pin;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use arc_swap::ArcSwap;
use bytes::Bytes;
use governor::clock::{Clock as _, DefaultClock};
use governor::middleware::StateInformationMiddleware;
use governor::state::{InMemoryState, NotKeyed};
use governor::{Quota, RateLimiter};
use http::{HeaderMap, HeaderName, HeaderValue};
use http_body::{Body as HttpBody, Frame, SizeHint};
use uprox_crds::common::ObjectId;
use uprox_crds::config::PolicyConfig;

use crate::body::{Body, BoxError};

const MINUTE: Duration = Duration::from_secs(60);
const MINUTE_NS: u64 = 60_000_000_000;

/// The limits one Policy sets. Unset is unlimited.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Limits {
    /// Requests per minute.
    pub requests_per_minute: Option<u32>,
    /// Model tokens per minute.
    pub tokens_per_minute: Option<u32>,
    /// Requests in flight at once.
    pub max_concurrent: Option<u32>,
}

impl Limits {
    /// The limits of a compiled Policy (zeros read as unset).
    pub fn of(policy: &PolicyConfig) -> Self {
        let set = |v: Option<u32>| v.filter(|n| *n > 0);
        Self {
            requests_per_minute: set(policy.requests_per_minute),
            tokens_per_minute: set(policy.tokens_per_minute),
            max_concurrent: set(policy.max_concurrent_requests),
        }
    }

    /// Whether nothing is limited.
    pub fn is_empty(&self) -> bool {
        self.requests_per_minute.is_none() && self.tokens_per_minute.is_none() && self.max_concurrent.is_none()
    }
}

/// One replica's share of `limit` when `replicas` replicas serve: rounded up, at least 1.
pub fn share(limit: u32, replicas: u32) -> u32 {
    limit.div_ceil(replicas.max(1)).max(1)
}

/// Whom a Policy's limits count: one token, or one Service (all its tokens together).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Subject {
    /// A token, by digest.
    Token([u8; 32]),
    /// A Service.
    Service(ObjectId),
}

/// Which limit refused a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LimitKind {
    /// Requests per minute.
    Requests,
    /// Tokens per minute.
    Tokens,
    /// Concurrent requests.
    Concurrency,
}

impl LimitKind {
    fn describe(self) -> &'static str {
        match self {
            LimitKind::Requests => "requests per minute",
            LimitKind::Tokens => "tokens per minute",
            LimitKind::Concurrency => "concurrent requests",
        }
    }
}

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

type Gcra = RateLimiter<NotKeyed, InMemoryState, DefaultClock, StateInformationMiddleware>;

/// Requests per minute at one share.
struct Requests {
    gcra: Gcra,
}

impl Requests {
    fn new(per_replica: u32) -> Self {
        let n = NonZeroU32::new(per_replica).unwrap_or(NonZeroU32::MIN);
        Self { gcra: RateLimiter::direct(Quota::per_minute(n)).with_middleware::<StateInformationMiddleware>() }
    }
}

/// Tokens per minute: a bucket holding the per-replica share, refilled evenly over a minute,
/// stored as the time (ns since `epoch`) at which it is full again. More than a minute away
/// means in debt.
struct TokenBucket {
    epoch: Instant,
    per_replica: AtomicU32,
    full_at: AtomicU64,
}

impl TokenBucket {
    fn now(&self) -> u64 {
        self.epoch.elapsed().as_nanos() as u64
    }

    fn ns_per_token(&self) -> u64 {
        MINUTE_NS / u64::from(self.per_replica.load(Ordering::Relaxed).max(1))
    }

    /// How long until the bucket is out of debt (zero when it is not in debt).
    fn debt(&self, now: u64) -> Duration {
        Duration::from_nanos(self.full_at.load(Ordering::Relaxed).saturating_sub(now + MINUTE_NS))
    }

    /// Tokens left now, and the time until full.
    fn state(&self, now: u64) -> (u64, Duration) {
        let until_full = self.full_at.load(Ordering::Relaxed).saturating_sub(now);
        let used = until_full / self.ns_per_token();
        (u64::from(self.per_replica.load(Ordering::Relaxed)).saturating_sub(used), Duration::from_nanos(until_full))
    }

    fn charge(&self, tokens: u64) {
        let now = self.now();
        let cost = tokens.saturating_mul(self.ns_per_token());
        let _ = self
            .full_at
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |at| Some(at.max(now).saturating_add(cost)));
    }
}

/// The limits of one Policy for one subject, with their state.
pub struct Limiter {
    policy: ObjectId,
    limits: Limits,
    requests: Option<ArcSwap<Requests>>,
    requests_share: AtomicU32,
    tokens: Option<TokenBucket>,
    concurrent_share: AtomicU32,
    in_flight: AtomicU32,
}

impl std::fmt::Debug for Limiter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Limiter")
            .field("policy", &self.policy)
            .field("limits", &self.limits)
            .field("in_flight", &self.in_flight.load(Ordering::Relaxed))
            .finish_non_exhaustive()
    }
}

impl Limiter {
    /// Fresh state for `limits` of `policy`, at this replica's share.
    pub fn new(policy: ObjectId, limits: Limits, replicas: u32) -> Self {
        let rpm = limits.requests_per_minute.map(|l| share(l, replicas));
        Self {
            requests: rpm.map(|n| ArcSwap::from_pointee(Requests::new(n))),
            requests_share: AtomicU32::new(rpm.unwrap_or(0)),
            tokens: limits.tokens_per_minute.map(|l| TokenBucket {
                epoch: Instant::now(),
                per_replica: AtomicU32::new(share(l, replicas)),
                full_at: AtomicU64::new(0),
            }),
            concurrent_share: AtomicU32::new(limits.max_concurrent.map_or(0, |l| share(l, replicas))),
            in_flight: AtomicU32::new(0),
            policy,
            limits,
        }
    }

    /// The configured limits.
    pub fn limits(&self) -> Limits {
        self.limits
    }

    /// Requests in flight counted here.
    pub fn in_flight(&self) -> u32 {
        self.in_flight.load(Ordering::Relaxed)
    }

    /// Applies a new replica count: shares change, state is kept (a requests-per-minute
    /// limiter whose share changed restarts full).
    pub fn rescale(&self, replicas: u32) {
        if let (Some(requests), Some(l)) = (&self.requests, self.limits.requests_per_minute) {
            let n = share(l, replicas);
            if self.requests_share.swap(n, Ordering::Relaxed) != n {
                requests.store(Arc::new(Requests::new(n)));
            }
        }
        if let (Some(bucket), Some(l)) = (&self.tokens, self.limits.tokens_per_minute) {
            bucket.per_replica.store(share(l, replicas), Ordering::Relaxed);
        }
        if let Some(l) = self.limits.max_concurrent {
            self.concurrent_share.store(share(l, replicas), Ordering::Relaxed);
        }
    }

    fn refuse(&self, kind: LimitKind, limit: u32, retry_after: Duration) -> Refusal {
        Refusal { kind, policy: self.policy.clone(), limit, retry_after, headers: RateHeaders::default() }
    }

    fn acquire(&self) -> bool {
        let Some(_) = self.limits.max_concurrent else { return true };
        let limit = self.concurrent_share.load(Ordering::Relaxed);
        if self.in_flight.fetch_add(1, Ordering::AcqRel) >= limit {
            self.in_flight.fetch_sub(1, Ordering::AcqRel);
            return false;
        }
        true
    }

    fn release(&self) {
        if self.limits.max_concurrent.is_some() {
            self.in_flight.fetch_sub(1, Ordering::AcqRel);
        }
    }

    /// Charges `tokens` of real usage (tokens-per-minute limits only).
    pub fn charge(&self, tokens: u64) {
        if let Some(bucket) = &self.tokens {
            bucket.charge(tokens);
        }
    }
}

/// The limiters that apply to one token: its Service's Policies' (shared by the Service's
/// tokens), then its own.
#[derive(Debug)]
pub struct LimitSet {
    limiters: Box<[Arc<Limiter>]>,
    /// Whether the response body must be wrapped (a concurrency slot or a token charge).
    wraps: bool,
    /// Whether any tokens-per-minute limit applies.
    counts_tokens: bool,
}

impl LimitSet {
    /// A set of limiters; `None` when empty.
    pub fn new(limiters: Vec<Arc<Limiter>>) -> Option<Arc<Self>> {
        if limiters.is_empty() {
            return None;
        }
        let counts_tokens = limiters.iter().any(|l| l.tokens.is_some());
        let wraps = counts_tokens || limiters.iter().any(|l| l.limits.max_concurrent.is_some());
        Some(Arc::new(Self { limiters: limiters.into(), wraps, counts_tokens }))
    }

    /// The limiters.
    pub fn limiters(&self) -> &[Arc<Limiter>] {
        &self.limiters
    }
}

/// An admitted request: holds its concurrency slots until dropped.
#[derive(Debug)]
pub struct Admission {
    set: Arc<LimitSet>,
    /// What to tell the client.
    pub headers: RateHeaders,
}

impl Drop for Admission {
    fn drop(&mut self) {
        for limiter in self.set.limiters.iter() {
            limiter.release();
        }
    }
}

/// Decides whether a request may start: no tokens-per-minute bucket in debt, a concurrency slot
/// under every limit, a cell of every requests-per-minute limit. The first limit that refuses
/// names itself; nothing taken before it is kept (a requests-per-minute cell already taken from
/// an earlier Policy stays used).
pub fn admit(set: &Arc<LimitSet>) -> Result<Admission, Box<Refusal>> {
    let mut headers = RateHeaders::default();
    for limiter in set.limiters.iter() {
        if let (Some(bucket), Some(limit)) = (&limiter.tokens, limiter.limits.tokens_per_minute) {
            let now = bucket.now();
            let debt = bucket.debt(now);
            let (left, reset) = bucket.state(now);
            let replicas = u64::from(limit.div_ceil(bucket.per_replica.load(Ordering::Relaxed).max(1)));
            let entry = (limit, (left * replicas).min(u64::from(limit)), reset);
            if !debt.is_zero() {
                let mut refusal = limiter.refuse(LimitKind::Tokens, limit, debt);
                refusal.headers.tokens = Some((limit, 0, reset));
                return Err(Box::new(refusal));
            }
            if headers.tokens.is_none_or(|(_, r, _)| entry.1 < r) {
                headers.tokens = Some(entry);
            }
        }
    }
    for (i, limiter) in set.limiters.iter().enumerate() {
        if !limiter.acquire() {
            for earlier in &set.limiters[..i] {
                earlier.release();
            }
            let limit = limiter.limits.max_concurrent.unwrap_or(0);
            let mut refusal = limiter.refuse(LimitKind::Concurrency, limit, Duration::from_secs(1));
            refusal.headers = headers;
            return Err(Box::new(refusal));
        }
    }
    // From here on the slots are held by the admission: a refusal drops it and releases them.
    let mut admission = Admission { set: set.clone(), headers };
    for limiter in set.limiters.iter() {
        let (Some(requests), Some(limit)) = (&limiter.requests, limiter.limits.requests_per_minute) else {
            continue;
        };
        let requests = requests.load();
        let share = limiter.requests_share.load(Ordering::Relaxed).max(1);
        let replicas = u64::from(limit.div_ceil(share));
        let interval = MINUTE / share;
        match requests.gcra.check() {
            Ok(state) => {
                let left = u64::from(state.remaining_burst_capacity());
                let reset = interval * (share - state.remaining_burst_capacity().min(share));
                let entry = (limit, (left * replicas).min(u64::from(limit)), reset);
                if admission.headers.requests.is_none_or(|(_, r, _)| entry.1 < r) {
                    admission.headers.requests = Some(entry);
                }
            }
            Err(not_until) => {
                let wait = not_until.wait_time_from(DefaultClock::default().now());
                let mut refusal = limiter.refuse(LimitKind::Requests, limit, wait);
                refusal.headers = admission.headers;
                refusal.headers.requests = Some((limit, 0, interval * share));
                return Err(Box::new(refusal));
            }
        }
    }
    Ok(admission)
}

/// The response with its `x-ratelimit-*` headers, holding the admission (see [`hold`]).
pub fn respond(response: http::Response<Body>, admission: Admission, metered: bool) -> http::Response<Body> {
    let (mut parts, body) = response.into_parts();
    admission.headers.write(&mut parts.headers);
    http::Response::from_parts(parts, hold(body, admission, metered))
}

/// Holds the admission for the whole response: concurrency slots are released and the usage
/// read from the body is charged when the body ends or is dropped. Without a concurrency or
/// tokens-per-minute limit the body is returned as is.
pub fn hold(body: Body, admission: Admission, metered: bool) -> Body {
    use http_body_util::BodyExt as _;
    if !admission.set.wraps {
        return body;
    }
    let usage = (metered && admission.set.counts_tokens).then(Usage::default);
    Held { inner: body, admission: Some(admission), usage }.boxed_unsync()
}

struct Held {
    inner: Body,
    admission: Option<Admission>,
    usage: Option<Usage>,
}

impl Held {
    fn finish(&mut self) {
        if let Some(admission) = self.admission.take()
            && let Some(tokens) = self.usage.as_ref().map(Usage::tokens).filter(|t| *t > 0)
        {
            for limiter in admission.set.limiters.iter() {
                limiter.charge(tokens);
            }
        }
    }
}

impl Drop for Held {
    fn drop(&mut self) {
        self.finish();
    }
}

impl HttpBody for Held {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = &mut *self;
        let polled = Pin::new(&mut this.inner).poll_frame(cx);
        match &polled {
            Poll::Ready(Some(Ok(frame))) => {
                if let (Some(usage), Some(data)) = (this.usage.as_mut(), frame.data_ref()) {
                    usage.scan(data);
                }
            }
            Poll::Ready(None) | Poll::Ready(Some(Err(_))) => this.finish(),
            Poll::Pending => {}
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

/// Every live limiter by `(Policy, subject)`, and the replica count. Locked only when a
/// snapshot is installed or the replica count changes, never by a request.
#[derive(Debug)]
pub struct Registry {
    limiters: Mutex<HashMap<(ObjectId, Subject), Arc<Limiter>>>,
    replicas: AtomicU32,
}

impl Default for Registry {
    fn default() -> Self {
        Self { limiters: Mutex::new(HashMap::new()), replicas: AtomicU32::new(1) }
    }
}

/// Resolves limiters for one snapshot install: reuses the registry's limiter of a
/// `(Policy, subject)` whose limits did not change, creates the others.
pub struct Resolver<'r> {
    old: HashMap<(ObjectId, Subject), Arc<Limiter>>,
    next: HashMap<(ObjectId, Subject), Arc<Limiter>>,
    replicas: u32,
    registry: &'r Registry,
}

impl Resolver<'_> {
    /// The limiter of `policy` for `subject`, or `None` when the Policy sets no limit.
    pub fn get(&mut self, policy: &PolicyConfig, subject: &Subject) -> Option<Arc<Limiter>> {
        let limits = Limits::of(policy);
        if limits.is_empty() {
            return None;
        }
        let key = (policy.id.clone(), subject.clone());
        if let Some(found) = self.next.get(&key) {
            return Some(found.clone());
        }
        let limiter = match self.old.remove(&key) {
            Some(kept) if kept.limits == limits => kept,
            _ => Arc::new(Limiter::new(policy.id.clone(), limits, self.replicas)),
        };
        self.next.insert(key, limiter.clone());
        Some(limiter)
    }

    /// Makes the resolved limiters the live set; the others are dropped.
    pub fn finish(self) {
        let mut live = self.registry.limiters.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        *live = self.next;
        // The replica count may have changed while resolving.
        let replicas = self.registry.replicas();
        if replicas != self.replicas {
            for limiter in live.values() {
                limiter.rescale(replicas);
            }
        }
    }
}

impl Registry {
    /// Starts resolving the limiters of a new snapshot.
    pub fn resolver(&self) -> Resolver<'_> {
        let old = std::mem::take(&mut *self.limiters.lock().unwrap_or_else(std::sync::PoisonError::into_inner));
        Resolver { old, next: HashMap::new(), replicas: self.replicas(), registry: self }
    }

    /// Ready replicas sharing the limits.
    pub fn replicas(&self) -> u32 {
        self.replicas.load(Ordering::Relaxed)
    }

    /// Sets the number of ready replicas (at least 1) and rescales every limiter.
    pub fn set_replicas(&self, replicas: u32) {
        let replicas = replicas.max(1);
        let live = self.limiters.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        if self.replicas.swap(replicas, Ordering::Relaxed) == replicas {
            return;
        }
        for limiter in live.values() {
            limiter.rescale(replicas);
        }
    }

    /// How many limiters are live.
    pub fn len(&self) -> usize {
        self.limiters.lock().unwrap_or_else(std::sync::PoisonError::into_inner).len()
    }

    /// Whether no limiter is live.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

mod usage;

pub use usage::Usage;

#[cfg(test)]
mod tests;
