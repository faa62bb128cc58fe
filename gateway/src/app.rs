//! The gateway's shared state: the current [`Snapshot`] behind an atomic swap, the upstream HTTP
//! clients (one per thread), the model-listing cache and the settings. Config sources call
//! [`Gateway::install`]; the router reads one `Arc<Snapshot>` per request. Nothing here takes a
//! lock on the request path.

use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwapOption;

use crate::limits::Registry;
use crate::models_cache::ModelsCache;
use crate::request_id::RequestIds;
use crate::snapshot::Snapshot;
use crate::spend::state::Spend;
use crate::upstream;

/// Tunables fixed at start-up.
#[derive(Debug, Clone)]
pub struct Settings {
    /// Largest request body accepted, in bytes.
    pub max_body_bytes: usize,
    /// Largest file upload accepted (`POST /v1/files`, streamed, not held in memory), in bytes.
    pub max_file_bytes: usize,
    /// How long to wait for an upstream connection.
    pub connect_timeout: Duration,
    /// How long an upstream may stay silent mid-response before the relay gives up.
    pub read_timeout: Duration,
    /// How long a provider listing may take before it is skipped.
    pub list_timeout: Duration,
    /// How long an upstream model listing is cached (see `models_cache`).
    pub models_ttl: Duration,
    /// Sizes of the response cache.
    pub cache: crate::cache::Limits,
    /// Where request spans are exported (see `trace`); none: tracing off.
    pub tracing: Option<crate::trace::Config>,
}

impl Default for Settings {
    fn default() -> Self {
        Self {
            max_body_bytes: 32 * 1024 * 1024,
            max_file_bytes: 512 * 1024 * 1024,
            connect_timeout: Duration::from_secs(10),
            read_timeout: Duration::from_secs(300),
            list_timeout: Duration::from_secs(5),
            models_ttl: Duration::from_secs(60),
            cache: crate::cache::Limits::default(),
            tracing: None,
        }
    }
}

/// The state every request shares.
#[derive(Debug)]
pub struct Gateway {
    snapshot: ArcSwapOption<Snapshot>,
    /// One upstream client per thread: with one runtime per thread (see `server::Workers`), a
    /// pooled connection is then always driven by the thread that uses it.
    clients: thread_local::ThreadLocal<upstream::Client>,
    /// Settings.
    pub settings: Settings,
    /// Request id source.
    pub request_ids: RequestIds,
    /// The Files API: who owns which file, the mock's files, upload clients.
    pub files: crate::files::FilesState,
    /// Upstream model listings, shared by every request and thread.
    pub models: ModelsCache,
    /// Rate-limit state, kept across snapshots (see `limits`).
    pub limits: Registry,
    /// Spend and budget reservations, kept across snapshots (see `spend`).
    pub spend: Arc<Spend>,
    /// The response cache, kept across snapshots (see `cache`).
    pub cache: crate::cache::Cache,
    /// Request metrics (see `metrics`): one per gateway, for the life of the process.
    pub metrics: &'static crate::metrics::Metrics,
    /// The request tracer, when tracing is on: one per gateway, for the life of the process.
    pub tracer: Option<&'static crate::trace::Tracer>,
}

impl Gateway {
    /// A gateway with no config yet: it answers 503 until the first [`Gateway::install`]. With
    /// tracing configured, call it on a Tokio runtime: the span exporter starts on it.
    pub fn new(settings: Settings) -> Arc<Self> {
        // Idempotent: a second install (tests build several gateways) is refused and harmless.
        let _ = rustls::crypto::ring::default_provider().install_default();
        Arc::new(Self {
            snapshot: ArcSwapOption::empty(),
            clients: thread_local::ThreadLocal::new(),
            models: ModelsCache::new(settings.models_ttl),
            cache: crate::cache::Cache::new(settings.cache),
            metrics: Box::leak(Box::default()),
            tracer: settings.tracing.clone().and_then(crate::trace::Tracer::start).map(|t| &*Box::leak(Box::new(t))),
            settings,
            request_ids: RequestIds::new(),
            files: crate::files::FilesState::new(),
            limits: Registry::default(),
            spend: Arc::default(),
        })
    }

    /// The upstream client of the current thread.
    pub fn client(&self) -> &upstream::Client {
        self.clients.get_or(|| upstream::client(self.settings.connect_timeout, Duration::from_secs(90)))
    }

    /// Swaps in a new snapshot. In-flight requests keep the one they started with. Rate limiters
    /// of unchanged limits and cool-downs of unchanged provider keys carry over from the
    /// previous snapshot.
    pub fn install(&self, mut snapshot: Snapshot) {
        snapshot.attach_limits(&self.limits);
        snapshot.attach_spend(&self.spend);
        if let Some(previous) = self.snapshot.load_full() {
            snapshot.carry_cooldowns(&previous);
        }
        self.snapshot.store(Some(Arc::new(snapshot)));
        self.metrics.installed();
    }

    /// The current snapshot, if one was installed.
    pub fn snapshot(&self) -> Option<Arc<Snapshot>> {
        self.snapshot.load_full()
    }

    /// Whether a config has been loaded.
    pub fn is_ready(&self) -> bool {
        self.snapshot.load().is_some()
    }
}
