//! Where cached answers live: an in-memory, concurrent cache bounded by bytes (`moka`, with a
//! weigher), each entry expiring after its own time to live (the Service's or Policy's TTL when
//! it was stored). Entries are shared (`Arc`), so a hit copies nothing. Evictions are counted
//! by cause for the metrics.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use moka::Expiry;
use moka::notification::RemovalCause;
use uprox_crds::prices::Usage;

use super::key::CacheKey;

/// A cached answer, as the client that caused it received it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Answer {
    /// A JSON body.
    Json(Bytes),
    /// An event stream, `[DONE]` included.
    Events(Bytes),
}

impl Answer {
    /// Its bytes.
    pub fn bytes(&self) -> &Bytes {
        match self {
            Answer::Json(body) | Answer::Events(body) => body,
        }
    }

    /// Its size in bytes.
    pub fn len(&self) -> usize {
        self.bytes().len()
    }

    /// Whether it holds no bytes.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// One entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    /// The answer.
    pub answer: Answer,
    /// The provider that made it (`namespace/name`) and the model its answer names.
    pub provider: Arc<str>,
    /// The model.
    pub model: Box<str>,
    /// What it cost when it was made, pico-USD: what a hit saves.
    pub cost_pico_usd: u128,
    /// The tokens it took, as the provider reported them (default when unknown).
    pub usage: Usage,
    /// How long it lives.
    pub ttl: Duration,
    /// When it was stored.
    pub created: Instant,
}

/// Entries removed other than by being replaced or looked up expired, by cause.
#[derive(Debug, Default)]
pub struct Evictions {
    /// Removed to stay within the byte bound.
    pub size: AtomicU64,
    /// Removed because their TTL passed.
    pub expired: AtomicU64,
}

/// Bytes an entry is weighed at besides its answer (key, bookkeeping).
const OVERHEAD: usize = 128;

struct PerEntryTtl;

impl Expiry<CacheKey, Arc<Entry>> for PerEntryTtl {
    fn expire_after_create(&self, _key: &CacheKey, entry: &Arc<Entry>, _created: Instant) -> Option<Duration> {
        Some(entry.ttl)
    }
}

/// The cache.
#[derive(Clone)]
pub struct Store {
    inner: moka::sync::Cache<CacheKey, Arc<Entry>>,
    evictions: Arc<Evictions>,
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Store").field("entries", &self.inner.entry_count()).finish()
    }
}

impl Store {
    /// A cache holding at most `max_bytes` of answers.
    pub fn new(max_bytes: u64) -> Self {
        let evictions = Arc::new(Evictions::default());
        let counts = evictions.clone();
        let inner = moka::sync::Cache::builder()
            .max_capacity(max_bytes)
            .weigher(|_key: &CacheKey, entry: &Arc<Entry>| {
                u32::try_from(entry.answer.len() + OVERHEAD).unwrap_or(u32::MAX)
            })
            .expire_after(PerEntryTtl)
            .eviction_listener(move |_key, _entry, cause| {
                let counter = match cause {
                    RemovalCause::Size => &counts.size,
                    RemovalCause::Expired => &counts.expired,
                    RemovalCause::Explicit | RemovalCause::Replaced => return,
                };
                counter.fetch_add(1, Ordering::Relaxed);
            })
            .build();
        Self { inner, evictions }
    }

    /// Evictions so far.
    pub fn evictions(&self) -> &Evictions {
        &self.evictions
    }

    /// Entries held (approximate until pending maintenance runs).
    pub fn entries(&self) -> u64 {
        self.inner.entry_count()
    }

    /// The live entry of `key`.
    pub fn get(&self, key: &CacheKey) -> Option<Arc<Entry>> {
        self.inner.get(key)
    }

    /// Stores an entry (replacing an older one of the same key).
    pub fn insert(&self, key: CacheKey, entry: Entry) {
        self.inner.insert(key, Arc::new(entry));
    }

    /// Bytes held (after pending evictions are applied).
    pub fn weighted_bytes(&self) -> u64 {
        self.inner.run_pending_tasks();
        self.inner.weighted_size()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(bytes: usize, ttl: Duration) -> Entry {
        Entry {
            answer: Answer::Json(Bytes::from(vec![b'x'; bytes])),
            provider: Arc::from("team/p"),
            model: "m".into(),
            cost_pico_usd: 7,
            usage: Usage::default(),
            ttl,
            created: Instant::now(),
        }
    }

    #[test]
    fn entries_are_found_until_they_expire() {
        let store = Store::new(1 << 20);
        let (short, long) = (CacheKey([1; 32]), CacheKey([2; 32]));
        store.insert(short, entry(10, Duration::from_millis(200)));
        store.insert(long, entry(10, Duration::from_secs(3600)));
        assert_eq!(store.get(&short).map(|e| e.cost_pico_usd), Some(7));
        std::thread::sleep(Duration::from_millis(400));
        assert!(store.get(&short).is_none(), "expired after its own TTL");
        assert!(store.get(&long).is_some(), "the other keeps its own");
        assert!(store.get(&CacheKey([3; 32])).is_none());
    }

    #[test]
    fn memory_is_bounded_by_bytes() {
        let store = Store::new(100_000);
        for i in 0..200u8 {
            store.insert(CacheKey([i; 32]), entry(4_000, Duration::from_secs(3600)));
        }
        assert!(store.weighted_bytes() <= 100_000, "{} bytes held", store.weighted_bytes());
        assert!(store.evictions().size.load(Ordering::Relaxed) >= 175, "evictions to stay in bounds are counted");
    }
}
