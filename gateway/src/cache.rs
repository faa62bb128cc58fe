//! The response cache: exact-match answers for chat completions, Responses and embeddings, per
//! tenant, in memory, bounded by bytes.
//!
//! - [`key`] decides which requests are eligible under a [`Rule`] and names their answers.
//! - [`store`] holds the answers, each for the TTL it was stored with.
//! - A request's [`Plan`] is made after routing and before the budget check: a hit is answered
//!   at once ([`replay`]), costs nothing, records what it saved, and skips the budget check
//!   (spent budgets still get free answers; rate limits still count the request); a miss goes
//!   upstream, and its successful answer is recorded as it is relayed ([`record`]).
//! - Identical non-streamed misses are coalesced ([`flight`]): one goes upstream, the others
//!   wait for its answer and are served from the cache.
//! - A streamed and a non-streamed request share an entry: [`shape`] converts one into the
//!   other on a hit.
//! - Clients may bypass it: `Cache-Control: no-cache` does not read, `no-store` does not write.
//!   Eligible requests carry `x-uprox-cache: HIT` or `MISS`.
//!
//! A Service's `cacheTtlSeconds` and its Policies' `cache` rules decide the [`Rule`] of each
//! token when a snapshot is built; nothing is resolved per request.

pub mod flight;
pub mod key;
pub mod record;
pub mod replay;
pub mod shape;
pub mod store;

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use http::{HeaderMap, HeaderName, HeaderValue};
use uprox_crds::config::PolicyConfig;
use uprox_crds::policy::CacheMode;

use crate::body::Body;
use crate::handlers::routing::Head;
use crate::router::Context;
use crate::snapshot::ProviderEntry;

pub use key::Endpoint;
use key::{CacheKey, Tenant};
use store::Store;

/// `x-uprox-cache`: `HIT` or `MISS` on every eligible request.
pub static CACHE_HEADER: HeaderName = HeaderName::from_static("x-uprox-cache");
static HIT: HeaderValue = HeaderValue::from_static("HIT");
static MISS: HeaderValue = HeaderValue::from_static("MISS");

/// How the cache treats the requests of one token: resolved from its Service's
/// `cacheTtlSeconds` and the `cache` rules of its Policies when the snapshot is built.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rule {
    /// How long an answer is kept.
    pub ttl: Duration,
    /// Which requests are eligible.
    pub mode: CacheMode,
}

impl Rule {
    /// The rule of a token whose Service sets `service_ttl` seconds (0: none) and whose
    /// Policies are `policies`: the shortest TTL set by any of them and the most restrictive
    /// mode any Policy sets (`Deterministic` when none does). `None` when the cache is off: no
    /// TTL set, a TTL of 0, or mode `Off`.
    pub fn resolve<'a>(service_ttl: u32, policies: impl Iterator<Item = &'a PolicyConfig>) -> Option<Rule> {
        let mut ttl = (service_ttl > 0).then_some(service_ttl);
        let mut mode: Option<CacheMode> = None;
        for policy in policies {
            if let Some(t) = policy.cache_ttl_seconds {
                ttl = Some(ttl.map_or(t, |current| current.min(t)));
            }
            if let Some(m) = policy.cache_mode {
                mode = Some(mode.map_or(m, |current| current.min(m)));
            }
        }
        let mode = mode.unwrap_or_default();
        match ttl {
            Some(seconds) if seconds > 0 && mode != CacheMode::Off => {
                Some(Rule { ttl: Duration::from_secs(u64::from(seconds)), mode })
            }
            _ => None,
        }
    }
}

/// Sizes of the cache.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Bytes of answers held at most.
    pub max_bytes: u64,
    /// The largest answer stored; a larger one is relayed and not stored.
    pub max_entry_bytes: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Self { max_bytes: 256 * 1024 * 1024, max_entry_bytes: 4 * 1024 * 1024 }
    }
}

/// The response cache of a gateway process, shared by every serving thread.
#[derive(Debug, Clone)]
pub struct Cache {
    store: Store,
    flights: flight::Flights,
    limits: Limits,
}

impl Cache {
    /// An empty cache.
    pub fn new(limits: Limits) -> Self {
        Self { store: Store::new(limits.max_bytes), flights: flight::Flights::default(), limits }
    }

    /// The requests being fetched upstream that others may wait for.
    pub fn flights(&self) -> &flight::Flights {
        &self.flights
    }

    /// The entries.
    pub fn store(&self) -> &Store {
        &self.store
    }

    /// Looks the request up: on a hit, the answer in the shape the client asked for; on a
    /// miss, `None`, after waiting for an identical request already fetching the answer (see
    /// [`flight`]) when there is one and this request is not streamed. Hits and misses are
    /// counted on the Service's meter.
    pub async fn look_up(
        &self,
        ctx: &Context<'_>,
        plan: &mut Plan,
        wait_limit: Duration,
    ) -> Option<http::Response<Body>> {
        if let Some(hit) = self.hit(ctx, plan) {
            return Some(hit);
        }
        ctx.audit.cache(crate::audit::CacheOutcome::Miss);
        if plan.read && plan.write {
            match self.flights.join(plan.key) {
                flight::Part::Leader(leader) => plan.leader = Some(leader),
                flight::Part::Follower(follower) if !plan.stream => {
                    follower.wait(wait_limit).await;
                    if let Some(hit) = self.hit(ctx, plan) {
                        return Some(hit);
                    }
                }
                flight::Part::Follower(_) => {}
            }
        }
        ctx.caller.service.meter.cache_outcome(&plan.provider, &plan.model, None);
        None
    }

    /// The stored answer to `plan`, recorded as a hit, if there is one this request can be
    /// answered from: not older than the request's own TTL (tokens of one Service may have
    /// Policies with different TTLs), in a shape that converts (otherwise it is treated as a
    /// miss, and replaced by the answer the upstream gives).
    fn hit(&self, ctx: &Context<'_>, plan: &Plan) -> Option<http::Response<Body>> {
        if !plan.read {
            return None;
        }
        let entry = self.store.get(&plan.key).filter(|entry| entry.created.elapsed() <= plan.ttl)?;
        let mut response = replay::respond(plan, &entry)?;
        ctx.caller.service.meter.cache_outcome(&entry.provider, &entry.model, Some(entry.cost_pico_usd));
        ctx.audit
            .cache(crate::audit::CacheOutcome::Hit { saved_pico_usd: entry.cost_pico_usd, model: entry.model.clone() });
        response.headers_mut().insert(CACHE_HEADER.clone(), HIT.clone());
        Some(response)
    }

    /// The metric families: bytes, entries and evictions. (Hits, misses and savings are counted
    /// per Service; see [`crate::spend::metrics`].)
    pub fn families(&self) -> Vec<prometheus::proto::MetricFamily> {
        use crate::metrics::expose::{counters_by, gauge};
        let evictions = self.store.evictions();
        vec![
            gauge(
                "uprox_cache_bytes",
                "Bytes of answers held by the response cache (bounded by --cache-max-bytes).",
                self.store.weighted_bytes() as f64,
            ),
            gauge("uprox_cache_max_bytes", "The response cache's byte bound.", self.limits.max_bytes as f64),
            gauge("uprox_cache_entries", "Answers held by the response cache.", self.store.entries() as f64),
            counters_by(
                "uprox_cache_evictions_total",
                "Answers removed from the response cache, by cause.",
                "cause",
                &[
                    ("size", evictions.size.load(Ordering::Relaxed) as f64),
                    ("expired", evictions.expired.load(Ordering::Relaxed) as f64),
                ],
            ),
        ]
    }
}

/// What the cache does for one eligible request.
#[derive(Debug)]
pub struct Plan {
    key: CacheKey,
    ttl: Duration,
    endpoint: Endpoint,
    /// The client asked for a stream.
    stream: bool,
    /// The client asked for the usage chunk of a streamed chat completion.
    include_usage: bool,
    /// The client allows an answer from the cache (no `Cache-Control: no-cache`).
    read: bool,
    /// The client allows its answer to be stored (no `Cache-Control: no-store`).
    write: bool,
    provider: Arc<str>,
    model: Box<str>,
    max_entry_bytes: usize,
    /// Set when this request fetches the answer identical requests wait for; dropped (waking
    /// them) once its answer is stored or abandoned.
    leader: Option<flight::Leader>,
}

/// The cache's plan for a routed request, or `None` when the cache does not apply: off for the
/// caller, not eligible under its rule's mode, or a body that is not a JSON object.
pub(crate) fn plan(
    ctx: &Context<'_>,
    endpoint: Endpoint,
    provider: &ProviderEntry,
    model: &str,
    head: &Head<'_>,
    body: &[u8],
    headers: &HeaderMap,
) -> Option<Plan> {
    let rule = ctx.caller.token.cache?;
    if !key::eligible(rule.mode, endpoint, head.deterministic()) {
        return None;
    }
    let service = &ctx.caller.service.id;
    let tenant = Tenant { namespace: &service.namespace, service: &service.name };
    let key = key::key(tenant, endpoint, &provider.name, model, body)?;
    let (no_cache, no_store) = directives(headers);
    Some(Plan {
        key,
        ttl: rule.ttl,
        endpoint,
        stream: endpoint != Endpoint::Embeddings && head.stream == Some(true),
        include_usage: head.stream_options.flatten() == Some(true),
        read: !no_cache,
        write: !no_store,
        provider: provider.name.clone(),
        model: model.into(),
        max_entry_bytes: ctx.gateway.cache.limits.max_entry_bytes,
        leader: None,
    })
}

impl Plan {
    /// Whether the answer may be stored (no `Cache-Control: no-store`).
    pub fn writes(&self) -> bool {
        self.write
    }

    /// The upstream's answer to a miss: marked `MISS`, and recorded as it is relayed when it
    /// is a success the client allows to be stored.
    pub fn miss(
        self,
        cache: &Cache,
        report: Option<crate::spend::meter::Report>,
        mut response: http::Response<Body>,
    ) -> http::Response<Body> {
        response.headers_mut().insert(CACHE_HEADER.clone(), MISS.clone());
        match report {
            Some(report) if response.status().is_success() => {
                record::recording(cache.store.clone(), self, report, response)
            }
            _ => response,
        }
    }
}

/// Whether `Cache-Control` says `no-cache` and `no-store`.
fn directives(headers: &HeaderMap) -> (bool, bool) {
    let (mut no_cache, mut no_store) = (false, false);
    for value in headers.get_all(http::header::CACHE_CONTROL) {
        let Ok(value) = value.to_str() else { continue };
        for directive in value.split(',').map(str::trim) {
            no_cache |= directive.eq_ignore_ascii_case("no-cache");
            no_store |= directive.eq_ignore_ascii_case("no-store");
        }
    }
    (no_cache, no_store)
}

#[cfg(test)]
mod tests {
    use uprox_crds::common::ObjectId;

    use super::*;

    fn policy(mode: Option<CacheMode>, ttl: Option<u32>) -> PolicyConfig {
        PolicyConfig {
            id: ObjectId::new("team", "p"),
            cache_mode: mode,
            cache_ttl_seconds: ttl,
            ..PolicyConfig::default()
        }
    }

    #[test]
    fn the_shortest_ttl_and_the_most_restrictive_mode_win() {
        let minutes = |m: u64| Duration::from_secs(60 * m);
        assert_eq!(Rule::resolve(0, [].iter()), None, "off unless something sets a TTL");
        assert_eq!(Rule::resolve(600, [].iter()), Some(Rule { ttl: minutes(10), mode: CacheMode::Deterministic }));
        let capped = [policy(None, Some(60))];
        assert_eq!(Rule::resolve(600, capped.iter()).map(|r| r.ttl), Some(minutes(1)));
        let enabling = [policy(Some(CacheMode::All), Some(120))];
        assert_eq!(Rule::resolve(0, enabling.iter()), Some(Rule { ttl: minutes(2), mode: CacheMode::All }));
        let mixed = [policy(Some(CacheMode::All), None), policy(Some(CacheMode::Deterministic), None)];
        assert_eq!(Rule::resolve(60, mixed.iter()).map(|r| r.mode), Some(CacheMode::Deterministic));
        assert_eq!(Rule::resolve(60, [policy(Some(CacheMode::Off), None)].iter()), None);
        assert_eq!(Rule::resolve(60, [policy(None, Some(0))].iter()), None, "a TTL of 0 turns it off");
    }

    #[test]
    fn cache_control_directives_are_read_case_insensitively() {
        let mut headers = HeaderMap::new();
        assert_eq!(directives(&headers), (false, false));
        headers.insert(http::header::CACHE_CONTROL, HeaderValue::from_static("max-age=0, No-Cache"));
        assert_eq!(directives(&headers), (true, false));
        headers.append(http::header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
        assert_eq!(directives(&headers), (true, true));
        headers.insert(http::header::CACHE_CONTROL, HeaderValue::from_static("no-cachex"));
        assert_eq!(directives(&headers), (false, false));
    }
}
