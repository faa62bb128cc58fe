//! The audit log: exactly one JSON line per gateway request, on its own tracing target
//! ([`TARGET`]), written to stdout — successes, denials, cache hits, upstream failures and
//! clients that went away alike. The fields are documented in `docs/audit-log.md` (a test
//! checks the two agree). Request and response bodies never appear, and neither do tokens or
//! provider keys: a token is named by its MachineToken, a key by its label.
//!
//! How it is gathered: the request path writes what it learns into the request's [`Notes`]
//! (lock-free cells, set once each: the caller after authentication, the route, the meter's
//! report, the cache outcome, retries); when the handler has answered, the response body is
//! wrapped ([`audited`]) so the line is written when the body is done — after the last byte
//! was sent or the client went away — with the total latency, the time to the first byte and,
//! from the meter (which settles as the inner body ends), tokens, cost and the model served.

use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicU32, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{HeaderValue, Method, StatusCode};
use http_body::{Frame, SizeHint};
use http_body_util::BodyExt as _;
use text::{Rfc3339, Shown, Usd};

pub mod sink;
mod text;

use crate::body::{Body, BoxError};
use crate::snapshot::{ProviderEntry, Route, Snapshot};
use crate::spend::meter::{Made, Report};

/// The tracing target of audit lines.
pub const TARGET: &str = "uprox::audit";

/// The layer that writes audit lines, and nothing else, to `writer`: each event of [`TARGET`]
/// carries its whole JSON line (serialised by [`write`], without tracing's field formatting,
/// which cost a third of the gateway's throughput) in its `line` field.
pub fn layer<S, W>(writer: W) -> impl tracing_subscriber::Layer<S>
where
    S: tracing::Subscriber + for<'a> tracing_subscriber::registry::LookupSpan<'a>,
    W: for<'w> tracing_subscriber::fmt::MakeWriter<'w> + Send + Sync + 'static,
{
    use tracing_subscriber::Layer as _;
    Lines { writer }.with_filter(tracing_subscriber::filter::Targets::new().with_target(TARGET, tracing::Level::INFO))
}

/// See [`layer`].
struct Lines<W> {
    writer: W,
}

impl<S, W> tracing_subscriber::Layer<S> for Lines<W>
where
    S: tracing::Subscriber,
    W: for<'w> tracing_subscriber::fmt::MakeWriter<'w> + 'static,
{
    fn on_event(&self, event: &tracing::Event<'_>, _ctx: tracing_subscriber::layer::Context<'_, S>) {
        struct Line<T>(T);
        impl<T: std::io::Write> tracing::field::Visit for Line<T> {
            fn record_str(&mut self, field: &tracing::field::Field, value: &str) {
                if field.name() == "line" {
                    let _ = self.0.write_all(value.as_bytes());
                    let _ = self.0.write_all(b"\n");
                }
            }
            fn record_debug(&mut self, _field: &tracing::field::Field, _value: &dyn std::fmt::Debug) {}
        }
        event.record(&mut Line(self.writer.make_writer()));
    }
}

/// One audit line, in the field order of `docs/audit-log.md`.
#[derive(serde::Serialize)]
struct Line<'a> {
    timestamp: Shown<Rfc3339>,
    level: &'static str,
    message: &'static str,
    target: &'static str,
    time: Shown<Rfc3339>,
    request_id: &'a str,
    method: &'a str,
    endpoint: &'static str,
    namespace: &'a str,
    service: &'a str,
    token: &'a str,
    provider: &'a str,
    key: &'a str,
    requested_model: &'a str,
    model: &'a str,
    status: u16,
    error_type: &'a str,
    completed: bool,
    latency_ms: f64,
    ttfb_ms: f64,
    prompt_tokens: u64,
    completion_tokens: u64,
    cached_tokens: u64,
    usage_estimated: bool,
    cost_usd: Shown<Usd>,
    saved_usd: Shown<Usd>,
    cache: &'a str,
    retries: u32,
    client_ip: Shown<ClientIp>,
    user_agent: &'a str,
}

/// The client's IP address, or nothing.
struct ClientIp(Option<std::net::IpAddr>);

impl std::fmt::Display for ClientIp {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.0 {
            Some(ip) => ip.fmt(f),
            None => Ok(()),
        }
    }
}

/// What the request path learned about one request, for its audit line. Every cell is set at
/// most once, without a lock.
#[derive(Debug, Default)]
pub struct Notes {
    /// The snapshot the request was served with, and the caller's token digest and Service.
    caller: OnceLock<(Arc<Snapshot>, [u8; 32], usize)>,
    /// The routed provider and key, and the requested model.
    route: OnceLock<(Route, Box<str>)>,
    /// The key the answer came from when failover moved to another (index + 1; 0: the route's).
    key_used: AtomicUsize,
    /// Upstream attempts beyond the first.
    retries: AtomicU32,
    /// The meter's report.
    report: OnceLock<Report>,
    /// The response cache's outcome.
    cache: OnceLock<CacheOutcome>,
    /// Why the gateway refused the request, when the error's code does not say (`scope`).
    denial: OnceLock<&'static str>,
    /// Microseconds to the upstream's response headers, plus one (0: no upstream answer).
    upstream_us: AtomicU64,
    /// The request's trace ids, when tracing is on (see [`crate::trace`]).
    trace: Option<crate::trace::Ids>,
    /// Unix nanoseconds: the first upstream attempt's start, the last one's end (0: none);
    /// kept for sampled traces only.
    upstream_start_ns: AtomicU64,
    upstream_end_ns: AtomicU64,
    /// Where the request is counted (failed upstream attempts that failover moved on from as
    /// they happen, the request itself when it is done); `None` only in notes made by `Default`.
    metrics: Option<&'static crate::metrics::Metrics>,
}

/// What the response cache did for a request.
#[derive(Debug)]
pub enum CacheOutcome {
    /// Answered from the cache; what it would have cost, pico-USD, and the model of the entry.
    Hit {
        /// Pico-USD saved.
        saved_pico_usd: u128,
        /// The model the cached answer names.
        model: Box<str>,
    },
    /// Eligible, not answered from the cache.
    Miss,
}

impl Notes {
    /// Notes for a request counted in `metrics`, with these trace ids (`None`: tracing is off).
    pub fn new(metrics: &'static crate::metrics::Metrics, trace: Option<crate::trace::Ids>) -> Notes {
        Notes { trace, metrics: Some(metrics), ..Notes::default() }
    }

    /// The request's trace ids, when tracing is on.
    pub fn trace(&self) -> Option<&crate::trace::Ids> {
        self.trace.as_ref()
    }

    /// The authenticated caller.
    pub fn caller(&self, snapshot: &Arc<Snapshot>, digest: [u8; 32], service: usize) {
        let _ = self.caller.set((snapshot.clone(), digest, service));
    }

    /// The routed provider and key, and the requested model.
    pub fn route(&self, route: Route, model: &str) {
        let _ = self.route.set((route, model.into()));
    }

    /// The meter's report (tokens, cost and the model served, when it settles).
    pub fn report(&self, report: &Report) {
        let _ = self.report.set(report.clone());
    }

    /// The report set by [`Notes::report`], if any.
    pub fn the_report(&self) -> Option<&Report> {
        self.report.get()
    }

    /// The cache's outcome.
    pub fn cache(&self, outcome: CacheOutcome) {
        let _ = self.cache.set(outcome);
    }

    /// The request was refused for `reason` (see [`crate::metrics::Observation::denial`]).
    pub fn deny(&self, reason: &'static str) {
        let _ = self.denial.set(reason);
    }

    /// The upstream answered (its headers) after `took`.
    pub fn upstream_took(&self, took: Duration) {
        let micros = u64::try_from(took.as_micros()).unwrap_or(u64::MAX - 1);
        self.upstream_us.store(micros + 1, Ordering::Relaxed);
    }

    /// Whether the upstream call's times are wanted (the request's trace is recorded).
    pub fn timed(&self) -> bool {
        self.trace.is_some_and(|t| t.sampled)
    }

    /// An upstream attempt started (Unix nanoseconds); only the first counts.
    pub fn upstream_started(&self, at_ns: u64) {
        let _ = self.upstream_start_ns.compare_exchange(0, at_ns, Ordering::Relaxed, Ordering::Relaxed);
    }

    /// An upstream attempt ended, with an answer or without (Unix nanoseconds).
    pub fn upstream_ended(&self, at_ns: u64) {
        self.upstream_end_ns.store(at_ns, Ordering::Relaxed);
    }

    /// An upstream attempt with key `label` of `provider` failed (`class`, as in
    /// `uprox_upstream_errors_total`) and failover moves on to another key. (The request's last
    /// attempt is counted with the request.)
    pub fn attempt_failed(&self, provider: &str, label: &str, class: &'static str) {
        if let Some(metrics) = self.metrics {
            metrics.upstream_failed(provider, label, class);
        }
    }

    /// One more upstream attempt, with key `key` of the routed provider.
    pub fn retried(&self, key: usize) {
        self.retries.fetch_add(1, Ordering::Relaxed);
        self.key_used.store(key + 1, Ordering::Relaxed);
    }
}

/// What the router knows of a request before and after its handler.
#[derive(Debug)]
pub struct Request {
    /// Its id.
    pub request_id: HeaderValue,
    /// When it arrived.
    pub started: Instant,
    /// When it arrived, Unix milliseconds.
    pub started_ms: u64,
    /// Method.
    pub method: Method,
    /// The endpoint's name (`chat.completions`, …; `unknown` for unrouted paths).
    pub endpoint: &'static str,
    /// The client's address.
    pub client: Option<SocketAddr>,
    /// The client's `user-agent`.
    pub user_agent: Option<HeaderValue>,
    /// The answer's status.
    pub status: StatusCode,
    /// The error's type (`code` of the OpenAI-shaped error, e.g. `rate_limit_exceeded`), for
    /// answers the gateway refused or failed itself.
    pub error: Option<&'static str>,
    /// The answer is an event stream (its first byte is its first token).
    pub streamed: bool,
    /// What the request path learned.
    pub notes: Notes,
    /// Where its spans go, when tracing is on.
    pub tracer: Option<&'static crate::trace::Tracer>,
}

/// `response` with its body wrapped to write the audit line of `request` when it is done.
pub fn audited(request: Request, response: http::Response<Body>) -> http::Response<Body> {
    let (parts, inner) = response.into_parts();
    let body = Audited { inner, request, first_byte: None, ended: false };
    http::Response::from_parts(parts, body.boxed_unsync())
}

struct Audited {
    inner: Body,
    request: Request,
    first_byte: Option<Duration>,
    ended: bool,
}

impl http_body::Body for Audited {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = &mut *self;
        let polled = Pin::new(&mut this.inner).poll_frame(cx);
        match &polled {
            Poll::Ready(Some(Ok(_))) => {
                if this.first_byte.is_none() {
                    this.first_byte = Some(this.request.started.elapsed());
                }
                this.ended = this.inner.is_end_stream();
            }
            Poll::Ready(None) => this.ended = true,
            Poll::Ready(Some(Err(_))) | Poll::Pending => {}
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

impl Drop for Audited {
    fn drop(&mut self) {
        let completed = self.ended || http_body::Body::is_end_stream(&self.inner);
        // The inner body first: its meter settles and reports.
        self.inner = crate::body::full(Bytes::new());
        write(&self.request, self.first_byte, completed);
    }
}

/// What is known of a request when it is done: for its audit line, its metrics and its spans.
pub struct Facts<'a> {
    /// The request.
    pub request: &'a Request,
    /// The Service's namespace and name, and the MachineToken's name (empty before
    /// authentication).
    pub namespace: &'a str,
    /// See `namespace`.
    pub service: &'a str,
    /// See `namespace`.
    pub token: &'a str,
    /// The routed provider.
    pub provider: Option<&'a ProviderEntry>,
    /// The label of the key that answered.
    pub key: &'a str,
    /// The model asked for.
    pub requested_model: &'a str,
    /// The model the answer names.
    pub served_model: &'a str,
    /// Tokens and cost, once the meter settled.
    pub made: Option<&'a Made>,
    /// `hit`, `miss` or empty.
    pub cache: &'static str,
    /// What a cache hit saved, pico-USD.
    pub saved_pico_usd: u128,
    /// The whole answer was sent.
    pub completed: bool,
    /// Arrival to the end of the answer.
    pub latency: Duration,
    /// Arrival to the first byte of the answer.
    pub first_byte: Option<Duration>,
    /// Upstream attempts beyond the first.
    pub retries: u32,
}

impl<'a> Facts<'a> {
    fn of(request: &'a Request, first_byte: Option<Duration>, completed: bool) -> Facts<'a> {
        let notes = &request.notes;
        let mut facts = Facts {
            request,
            namespace: "",
            service: "",
            token: "",
            provider: None,
            key: "",
            requested_model: "",
            served_model: "",
            made: notes.report.get().and_then(Report::get),
            cache: "",
            saved_pico_usd: 0,
            completed,
            latency: request.started.elapsed(),
            first_byte,
            retries: notes.retries.load(Ordering::Relaxed),
        };
        if let Some((snapshot, digest, s)) = notes.caller.get() {
            let entry = &snapshot.services[*s];
            (facts.namespace, facts.service) = (&entry.id.namespace, &entry.id.name);
            facts.token = snapshot.token(digest).map_or("", |t| t.id.name.as_str());
            if let Some((route, model)) = notes.route.get() {
                facts.requested_model = model;
                let p = &snapshot.providers[route.provider];
                facts.provider = Some(p);
                let used = match notes.key_used.load(Ordering::Relaxed) {
                    0 => route.key,
                    k => Some(k - 1),
                };
                facts.key = used.and_then(|k| p.keys.get(k)).map_or("", |k| k.label.as_str());
            }
        }
        if let Some(made) = facts.made {
            facts.served_model = &made.model;
        }
        match notes.cache.get() {
            Some(CacheOutcome::Hit { saved_pico_usd, model }) => {
                facts.served_model = model;
                (facts.cache, facts.saved_pico_usd) = ("hit", *saved_pico_usd);
            }
            Some(CacheOutcome::Miss) => facts.cache = "miss",
            None => {}
        }
        facts
    }
}

/// Writes the line, counts the request and hands its spans to the tracer.
fn write(request: &Request, first_byte: Option<Duration>, completed: bool) {
    let facts = Facts::of(request, first_byte, completed);
    let notes = &request.notes;
    // The line's own formatting only when somebody writes it (the metrics need none of it).
    if tracing::enabled!(target: TARGET, tracing::Level::INFO) {
        line(&facts);
    }
    let upstream = match notes.upstream_us.load(Ordering::Relaxed) {
        0 => None,
        us => Some(Duration::from_micros(us - 1)),
    };
    let provider = facts.provider.map_or("", |p| &*p.name);
    let observation = crate::metrics::Observation {
        namespace: facts.namespace,
        service: facts.service,
        provider,
        model: if facts.served_model.is_empty() { facts.requested_model } else { facts.served_model },
        endpoint: request.endpoint,
        status: request.status.as_u16(),
        duration: facts.latency,
        time_to_first_token: first_byte.filter(|_| request.streamed && request.status.is_success()),
        upstream,
        tokens: facts.made.map(|m| (m.usage.prompt_tokens(), m.usage.output, m.usage.cache_read)),
        denial: notes.denial.get().copied().or_else(|| request.error.and_then(denial)),
        upstream_error: request.error.and_then(|e| upstream_class(e, request.status)).map(|class| (facts.key, class)),
    };
    if let Some(metrics) = notes.metrics {
        metrics.finished(&observation);
    }
    if let (Some(tracer), Some(ids)) = (request.tracer, &notes.trace) {
        let window =
            match (notes.upstream_start_ns.load(Ordering::Relaxed), notes.upstream_end_ns.load(Ordering::Relaxed)) {
                (0, _) | (_, 0) => None,
                (start, end) => Some((start, end)),
            };
        tracer.finish(ids, &facts, window);
    }
}

/// Serialises and logs the audit line, in a buffer each thread reuses.
fn line(facts: &Facts<'_>) {
    thread_local! {
        static BUFFER: std::cell::RefCell<Vec<u8>> = std::cell::RefCell::new(Vec::with_capacity(1024));
    }
    let request = facts.request;
    let user_agent = request.user_agent.as_ref().and_then(|v| v.to_str().ok()).unwrap_or("");
    let usage = facts.made.map(|m| &m.usage);
    let line = Line {
        timestamp: Shown(Rfc3339::now()),
        level: "INFO",
        message: "request",
        target: TARGET,
        time: Shown(Rfc3339::from_millis(request.started_ms)),
        request_id: request.request_id.to_str().unwrap_or(""),
        method: request.method.as_str(),
        endpoint: request.endpoint,
        namespace: facts.namespace,
        service: facts.service,
        token: facts.token,
        provider: facts.provider.map_or("", |p| &*p.name),
        key: facts.key,
        requested_model: facts.requested_model,
        model: facts.served_model,
        status: request.status.as_u16(),
        error_type: request.error.unwrap_or(""),
        completed: facts.completed,
        latency_ms: millis(facts.latency),
        ttfb_ms: facts.first_byte.map_or(-1.0, millis),
        prompt_tokens: usage.map_or(0, |u| u.prompt_tokens()),
        completion_tokens: usage.map_or(0, |u| u.output),
        cached_tokens: usage.map_or(0, |u| u.cache_read),
        usage_estimated: facts.made.is_some_and(|m| m.estimated),
        cost_usd: Shown(Usd(facts.made.map_or(0, |m| m.cost_pico_usd))),
        saved_usd: Shown(Usd(facts.saved_pico_usd)),
        cache: facts.cache,
        retries: facts.retries,
        client_ip: Shown(ClientIp(request.client.map(|c| c.ip()))),
        user_agent,
    };
    BUFFER.with(|buffer| {
        // A line being written when a subscriber logs from inside (never here) would find the
        // buffer taken: it gets a buffer of its own.
        let mut own = Vec::new();
        let mut taken = buffer.try_borrow_mut();
        let out = match &mut taken {
            Ok(buffer) => &mut **buffer,
            Err(_) => &mut own,
        };
        out.clear();
        // Serialising borrowed strings and numbers into memory cannot fail, and yields UTF-8.
        if serde_json::to_writer(&mut *out, &line).is_ok()
            && let Ok(json) = std::str::from_utf8(out)
        {
            tracing::info!(target: TARGET, line = json);
        }
    });
}

/// The denial reason of an error code the gateway answered with.
fn denial(code: &str) -> Option<&'static str> {
    Some(match code {
        "missing_api_key" | "invalid_api_key" => "auth",
        "forbidden" => "policy",
        "rate_limit_exceeded" => "rate_limit",
        "insufficient_quota" => "budget",
        _ => return None,
    })
}

/// The class of an upstream failure, from the error code and status.
pub(crate) fn upstream_class(code: &str, status: StatusCode) -> Option<&'static str> {
    Some(match code {
        "upstream_timeout" => "timeout",
        "upstream_unavailable" => "connect",
        "upstream_credentials_rejected" => "rejected_key",
        "upstream_error" if status == StatusCode::TOO_MANY_REQUESTS => "http_429",
        "upstream_error" if status.is_server_error() => "http_5xx",
        "upstream_error" => "http_4xx",
        _ => return None,
    })
}

/// Milliseconds with microsecond precision.
fn millis(d: Duration) -> f64 {
    (d.as_micros() as f64) / 1000.0
}
