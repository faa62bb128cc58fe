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

use std::num::NonZeroU32;
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use arc_swap::ArcSwap;
use governor::clock::{Clock as _, DefaultClock};
use governor::middleware::StateInformationMiddleware;
use governor::state::{InMemoryState, NotKeyed};
use governor::{Quota, RateLimiter};
use uprox_crds::common::ObjectId;
use uprox_crds::config::PolicyConfig;

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
    /// Whether an unmetered response body must hold the admission (a concurrency slot).
    wraps: bool,
}

impl LimitSet {
    /// A set of limiters; `None` when empty.
    pub fn new(limiters: Vec<Arc<Limiter>>) -> Option<Arc<Self>> {
        if limiters.is_empty() {
            return None;
        }
        let wraps = limiters.iter().any(|l| l.limits.max_concurrent.is_some());
        Some(Arc::new(Self { limiters: limiters.into(), wraps }))
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

impl Admission {
    /// Charges `tokens` to every tokens-per-minute limit of the admission.
    pub fn charge(&self, tokens: u64) {
        if tokens == 0 {
            return;
        }
        for limiter in self.set.limiters.iter() {
            limiter.charge(tokens);
        }
    }
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

mod body;
mod refusal;
mod registry;

pub use body::{hold, respond};
pub use refusal::{RateHeaders, Refusal, format_reset, retry_secs};
pub use registry::{Registry, Resolver};

#[cfg(test)]
mod tests;
