//! The upstream model listings behind `GET /v1/models`, cached per Provider and shared by every
//! request and every worker thread. It owns the cache entries, the coalescing of fetches and the
//! failure counter; what is fetched, and how, is the caller's (see `handlers::models`).
//!
//! - **Hits take no lock**: the map of slots is an `ArcSwap` (copy-on-write, rewritten only when
//!   a Provider is seen for the first time) and each slot's entry another `ArcSwapOption`; a hit
//!   is two atomic loads, a clock read and an `Arc` clone.
//! - **Entries live `Settings::models_ttl`** (60 s by default). An entry belongs to the Provider
//!   id and to a fingerprint of what was asked (the listing URL and the key sent): a reload that
//!   changes either makes the entry a miss, so a new key never serves an old key's listing.
//! - **Misses are coalesced**: one request per Provider fetches (an atomic flag elects it);
//!   concurrent requests serve the expired entry while it refreshes, or, when there is none yet,
//!   wait for that fetch (a `tokio::sync::Notify`, so only requests that wait register, never a
//!   hit) up to the listing timeout. If the fetching request goes away, a waiter takes over; each
//!   request tries to fetch at most twice. So a Provider is asked at most once at a time.
//! - **Failures are counted and cached briefly**: a failed fetch (error status, bad body,
//!   timeout) bumps [`ModelsCache::list_failures`], and is retried after [`RETRY_AFTER_FAILURE`]
//!   rather than by every request. Meanwhile the last good listing keeps serving when it is at
//!   most [`MAX_STALE`] old; otherwise the Provider is skipped.

use std::collections::HashMap;
use std::future::Future;
use std::hash::{DefaultHasher, Hash as _, Hasher as _};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use arc_swap::{ArcSwap, ArcSwapOption};
use tokio::sync::Notify;
use tokio::time::Instant;
use uprox_crds::common::ObjectId;

/// How soon a failed listing is tried again.
pub const RETRY_AFTER_FAILURE: Duration = Duration::from_secs(10);
/// How old a good listing may get while its Provider keeps failing to list.
pub const MAX_STALE: Duration = Duration::from_secs(300);

/// One model of an upstream listing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Listed {
    /// The model id.
    pub id: Box<str>,
    /// Unix seconds, 0 when the upstream does not say.
    pub created: u64,
    /// The upstream's `owned_by`, when it sends one.
    pub owned_by: Option<Box<str>>,
}

/// A cached listing.
#[derive(Debug)]
struct Entry {
    /// What was fetched: see [`fingerprint`].
    fingerprint: u64,
    /// The models; `None` when the last fetch failed and no recent good listing is left.
    models: Option<Arc<[Listed]>>,
    /// When `models` was fetched successfully.
    good_at: Instant,
    /// Until when the entry is served without asking again.
    fresh_until: Instant,
}

/// The cache state of one Provider.
#[derive(Debug, Default)]
struct Slot {
    entry: ArcSwapOption<Entry>,
    /// Whether a request is fetching this Provider's listing.
    fetching: AtomicBool,
    /// Woken when a fetch ends (or its request goes away).
    done: Notify,
}

/// Resets the slot's `fetching` flag and wakes the waiters, also when the fetching request is
/// dropped mid-fetch.
struct FetchGuard<'a>(&'a Slot);

impl Drop for FetchGuard<'_> {
    fn drop(&mut self) {
        self.0.fetching.store(false, Ordering::Release);
        self.0.done.notify_waiters();
    }
}

/// Every Provider's cached listing.
#[derive(Debug)]
pub struct ModelsCache {
    slots: ArcSwap<HashMap<ObjectId, Arc<Slot>>>,
    ttl: Duration,
    fetches: AtomicU64,
    failures: AtomicU64,
}

/// The fingerprint of a listing request: its URL and the key value sent.
pub fn fingerprint(url: &http::Uri, key: &[u8]) -> u64 {
    // SipHash with fixed keys: stable within the process, which is all an entry needs.
    let mut h = DefaultHasher::new();
    url.hash(&mut h);
    key.hash(&mut h);
    h.finish()
}

impl ModelsCache {
    /// An empty cache whose good entries live `ttl`.
    pub fn new(ttl: Duration) -> Self {
        Self { slots: ArcSwap::default(), ttl, fetches: AtomicU64::new(0), failures: AtomicU64::new(0) }
    }

    /// How many upstream listings were fetched (started), successful or not.
    pub fn fetches(&self) -> u64 {
        self.fetches.load(Ordering::Relaxed)
    }

    /// How many upstream listings failed.
    pub fn list_failures(&self) -> u64 {
        self.failures.load(Ordering::Relaxed)
    }

    /// The slot of a Provider, created on first sight.
    fn slot(&self, provider: &ObjectId) -> Arc<Slot> {
        if let Some(slot) = self.slots.load().get(provider) {
            return slot.clone();
        }
        let mut found = None;
        self.slots.rcu(|map| {
            if let Some(slot) = map.get(provider) {
                found = Some(slot.clone());
                return map.clone();
            }
            let slot = Arc::new(Slot::default());
            found = Some(slot.clone());
            let mut next = HashMap::clone(map);
            next.insert(provider.clone(), slot);
            Arc::new(next)
        });
        found.unwrap_or_default()
    }

    /// The listing of `provider` for `fingerprint`: cached, or fetched by awaiting `fetch`, which
    /// must bound its own time and is dropped unpolled on a hit (`wait` bounds the wait for
    /// another request's fetch). `None` when the listing failed and nothing recent is left to
    /// serve: the caller skips the Provider.
    pub async fn get(
        &self,
        provider: &ObjectId,
        fingerprint: u64,
        wait: Duration,
        fetch: impl Future<Output = Result<Vec<Listed>, String>>,
    ) -> Option<Arc<[Listed]>> {
        let slot = self.slot(provider);
        let ours = |e: &Entry| e.fingerprint == fingerprint;
        if let Some(entry) = slot.entry.load().as_deref().filter(|e| ours(e))
            && entry.fresh_until > Instant::now()
        {
            return entry.models.clone();
        }
        let deadline = Instant::now() + wait;
        let mut fetch = Some(fetch);
        for _ in 0..2 {
            if slot.fetching.compare_exchange(false, true, Ordering::AcqRel, Ordering::Acquire).is_ok() {
                let _guard = FetchGuard(&slot);
                let fetch = fetch.take()?;
                return self.refresh(&slot, provider, fingerprint, fetch).await;
            }
            // Another request is fetching: serve what there is, else wait for it.
            if let Some(models) = slot.entry.load().as_deref().filter(|e| ours(e)).and_then(|e| e.models.clone()) {
                return Some(models);
            }
            let done = slot.done.notified();
            tokio::pin!(done);
            done.as_mut().enable();
            if slot.fetching.load(Ordering::Acquire) && tokio::time::timeout_at(deadline, done).await.is_err() {
                return None;
            }
            if let Some(entry) = slot.entry.load().as_deref().filter(|e| ours(e) && e.fresh_until > Instant::now()) {
                return entry.models.clone();
            }
            // The fetching request went away before it finished: take over.
        }
        None
    }

    /// Fetches and stores a listing. Runs with the slot's `fetching` flag held.
    async fn refresh(
        &self,
        slot: &Slot,
        provider: &ObjectId,
        fingerprint: u64,
        fetch: impl Future<Output = Result<Vec<Listed>, String>>,
    ) -> Option<Arc<[Listed]>> {
        self.fetches.fetch_add(1, Ordering::Relaxed);
        let result = fetch.await;
        let now = Instant::now();
        let entry = match result {
            Ok(models) => Entry { fingerprint, models: Some(models.into()), good_at: now, fresh_until: now + self.ttl },
            Err(why) => {
                self.failures.fetch_add(1, Ordering::Relaxed);
                let previous = slot.entry.load_full().filter(|e| {
                    e.fingerprint == fingerprint && e.models.is_some() && now.duration_since(e.good_at) <= MAX_STALE
                });
                tracing::warn!(
                    provider = %provider,
                    %why,
                    serving_previous = previous.is_some(),
                    "provider model listing failed; it is skipped in model listings until it answers"
                );
                Entry {
                    fingerprint,
                    models: previous.as_ref().and_then(|e| e.models.clone()),
                    good_at: previous.as_ref().map_or(now, |e| e.good_at),
                    fresh_until: now + RETRY_AFTER_FAILURE.min(self.ttl),
                }
            }
        };
        let models = entry.models.clone();
        slot.entry.store(Some(Arc::new(entry)));
        models
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use futures_util::FutureExt as _;

    fn listed(ids: &[&str]) -> Vec<Listed> {
        ids.iter().map(|id| Listed { id: (*id).into(), created: 1, owned_by: None }).collect()
    }

    fn ids(models: Option<Arc<[Listed]>>) -> Vec<String> {
        models.map(|m| m.iter().map(|l| l.id.to_string()).collect()).unwrap_or_default()
    }

    const WAIT: Duration = Duration::from_secs(1);

    #[tokio::test(start_paused = true)]
    async fn hits_within_the_ttl_do_not_fetch_and_expiry_refetches() {
        let cache = ModelsCache::new(Duration::from_secs(60));
        let p = ObjectId::new("ns", "openai");
        let got = cache.get(&p, 1, WAIT, async { Ok(listed(&["a"])) }).await;
        assert_eq!(ids(got), ["a"]);
        let got = cache.get(&p, 1, WAIT, async { Ok(listed(&["b"])) }).await;
        assert_eq!(ids(got), ["a"], "served from the cache");
        assert_eq!(cache.fetches(), 1);

        tokio::time::advance(Duration::from_secs(61)).await;
        let got = cache.get(&p, 1, WAIT, async { Ok(listed(&["b"])) }).await;
        assert_eq!(ids(got), ["b"]);
        assert_eq!(cache.fetches(), 2);

        let got = cache.get(&p, 2, WAIT, async { Ok(listed(&["c"])) }).await;
        assert_eq!(ids(got), ["c"], "another key or URL is another listing");
        let other = ObjectId::new("ns", "other");
        assert_eq!(ids(cache.get(&other, 2, WAIT, async { Ok(listed(&["d"])) }).await), ["d"]);
        assert_eq!(cache.fetches(), 4);
    }

    #[tokio::test(start_paused = true)]
    async fn failures_are_counted_retried_later_and_keep_a_recent_listing() {
        let cache = ModelsCache::new(Duration::from_secs(60));
        let p = ObjectId::new("ns", "openai");
        let fail = || async { Err::<Vec<Listed>, _>("HTTP 500".to_owned()) };
        assert!(cache.get(&p, 1, WAIT, fail()).await.is_none());
        assert_eq!(cache.list_failures(), 1);
        assert!(cache.get(&p, 1, WAIT, fail()).await.is_none());
        assert_eq!(cache.fetches(), 1, "a failure is not retried by every request");

        tokio::time::advance(RETRY_AFTER_FAILURE + Duration::from_secs(1)).await;
        assert_eq!(ids(cache.get(&p, 1, WAIT, async { Ok(listed(&["a"])) }).await), ["a"]);

        tokio::time::advance(Duration::from_secs(61)).await;
        assert_eq!(ids(cache.get(&p, 1, WAIT, fail()).await), ["a"], "the last good listing keeps serving");
        assert_eq!(cache.list_failures(), 2);

        tokio::time::advance(MAX_STALE).await;
        assert!(cache.get(&p, 1, WAIT, fail()).await.is_none(), "but not for ever");
        assert_eq!(cache.list_failures(), 3);
    }

    #[tokio::test(start_paused = true)]
    async fn concurrent_misses_fetch_once() {
        let cache = Arc::new(ModelsCache::new(Duration::from_secs(60)));
        let p = ObjectId::new("ns", "openai");
        let slow = || async {
            tokio::time::sleep(Duration::from_millis(200)).await;
            Ok(listed(&["a", "b"]))
        };
        let all = futures_util::future::join_all((0..16).map(|_| cache.get(&p, 1, WAIT, slow()))).await;
        assert!(all.into_iter().all(|got| ids(got) == ["a", "b"]));
        assert_eq!(cache.fetches(), 1);
    }

    #[tokio::test(start_paused = true)]
    async fn a_waiter_takes_over_when_the_fetching_request_goes_away() {
        let cache = ModelsCache::new(Duration::from_secs(60));
        let p = ObjectId::new("ns", "openai");
        let never = async {
            tokio::time::sleep(Duration::from_secs(3600)).await;
            Ok(listed(&["never"]))
        };
        let mut abandoned = Box::pin(cache.get(&p, 1, WAIT, never));
        let mut waiter = Box::pin(cache.get(&p, 1, WAIT, async { Ok(listed(&["a"])) }));
        // Start the first fetch, then the waiter, then drop the fetch.
        assert!(abandoned.as_mut().now_or_never().is_none());
        assert!(waiter.as_mut().now_or_never().is_none());
        drop(abandoned);
        assert_eq!(ids(waiter.await), ["a"]);
        assert_eq!(cache.fetches(), 2);
    }

    #[tokio::test(start_paused = true)]
    async fn a_waiter_gives_up_at_its_deadline() {
        let cache = ModelsCache::new(Duration::from_secs(60));
        let p = ObjectId::new("ns", "openai");
        let slow = || async {
            tokio::time::sleep(Duration::from_secs(30)).await;
            Ok(listed(&["late"]))
        };
        let mut fetching = Box::pin(cache.get(&p, 1, Duration::from_secs(60), slow()));
        assert!(fetching.as_mut().now_or_never().is_none());
        let started = Instant::now();
        assert!(cache.get(&p, 1, WAIT, slow()).await.is_none());
        assert_eq!(started.elapsed(), WAIT);
        assert_eq!(ids(fetching.await), ["late"]);
    }
}
