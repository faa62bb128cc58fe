//! Request tracing: OpenTelemetry spans of gateway requests, exported over OTLP/HTTP (binary
//! protobuf or JSON) to a collector. Off unless an endpoint is configured (`--otlp-endpoint`,
//! or the standard `OTEL_EXPORTER_OTLP_*` variables; see [`Config::from_options`]).
//!
//! Every audited request becomes a SERVER span named after the GenAI semantic conventions —
//! `{gen_ai.operation.name} {gen_ai.request.model}`, e.g. `chat gpt-4o` — or, for endpoints
//! without a model, `{method} {endpoint}`; a request that reached a provider gets a CLIENT child
//! span for the upstream call (first attempt to the last one's response headers), whose id the
//! provider receives as the parent in a W3C `traceparent` header. A request that arrives with a
//! `traceparent` joins its caller's trace and follows its sampling decision; others start a
//! trace, kept for `sample_ratio` of trace ids.
//!
//! Spans are built when the request's audit line is written, from the same facts, and queued
//! without a lock into a bounded channel; when the exporter falls behind, spans are dropped and
//! counted (`uprox_trace_spans_total{result="dropped"}`), never a request delayed. One task on
//! the control runtime sends them in batches ([`export`]).

use std::io::Write as _;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use http::{HeaderName, Uri};
use tokio::sync::{mpsc, oneshot};
use uprox_crds::provider::ProviderType;

mod config;
pub mod export;
pub mod ids;
pub mod otlp;

pub use config::{Config, Options, Protocol};
pub use ids::Ids;
use otlp::{Head, Kind, SpanWriter};

/// The W3C Trace Context header.
pub static TRACEPARENT: HeaderName = HeaderName::from_static("traceparent");

/// Spans waiting for the exporter, at most.
const QUEUE: usize = 8192;

/// Spans exported, dropped (queue full) and failed (the collector refused them or could not be
/// reached).
#[derive(Debug, Default)]
pub struct Counts {
    /// Accepted by the collector.
    pub exported: AtomicU64,
    /// Not queued: the exporter was behind.
    pub dropped: AtomicU64,
    /// Sent and not accepted.
    pub failed: AtomicU64,
}

/// The request tracer: ids for requests, spans to the exporter.
#[derive(Debug)]
pub struct Tracer {
    queue: mpsc::Sender<Vec<u8>>,
    protocol: Protocol,
    /// New traces are kept when the low 56 bits of their id are below this.
    threshold: u64,
    /// What became of the spans.
    pub counts: Arc<Counts>,
    stop: Mutex<Option<oneshot::Sender<oneshot::Sender<()>>>>,
}

impl Tracer {
    /// Starts the exporter on the current Tokio runtime; `None` (with an error logged) outside
    /// one.
    pub fn start(config: Config) -> Option<Tracer> {
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            tracing::error!("trace export needs a Tokio runtime; tracing is off");
            return None;
        };
        let (queue, spans) = mpsc::channel(QUEUE);
        let (stop, stopped) = oneshot::channel();
        let counts = Arc::new(Counts::default());
        let threshold = (config.sample_ratio * (1u64 << 56) as f64) as u64;
        let protocol = config.protocol;
        tracing::info!(endpoint = %config.endpoint, protocol = ?config.protocol, ratio = config.sample_ratio, "exporting request spans over OTLP");
        let exporter = export::Exporter {
            client: crate::upstream::client(Duration::from_secs(10), Duration::from_secs(90)),
            config,
            queue: spans,
            stop: stopped,
            counts: counts.clone(),
            failing: false,
        };
        runtime.spawn(exporter.run());
        Some(Tracer { queue, protocol, threshold, counts, stop: Mutex::new(Some(stop)) })
    }

    /// The ids of a request with these headers.
    pub fn ids(&self, headers: &http::HeaderMap) -> Ids {
        Ids::for_request(headers.get(&TRACEPARENT), |trace| {
            let low = u64::from_be_bytes([
                trace[8], trace[9], trace[10], trace[11], trace[12], trace[13], trace[14], trace[15],
            ]);
            low & ((1 << 56) - 1) < self.threshold
        })
    }

    /// Queues a finished span; drops it when the queue is full.
    fn record(&self, span: Vec<u8>) {
        if self.queue.try_send(span).is_err() {
            self.counts.dropped.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// The metric family of what became of the spans.
    pub fn families(&self) -> Vec<prometheus::proto::MetricFamily> {
        let load = |n: &AtomicU64| n.load(Ordering::Relaxed) as f64;
        vec![crate::metrics::expose::counters_by(
            "uprox_trace_spans_total",
            "Request spans by what became of them: exported, dropped (the export queue was full) or failed (the collector refused them or could not be reached).",
            "result",
            &[
                ("exported", load(&self.counts.exported)),
                ("dropped", load(&self.counts.dropped)),
                ("failed", load(&self.counts.failed)),
            ],
        )]
    }

    /// Sends what is queued, waiting at most `within`.
    pub async fn shutdown(&self, within: Duration) {
        let stop = self.stop.lock().unwrap_or_else(PoisonError::into_inner).take();
        let Some(stop) = stop else { return };
        let (done, finished) = oneshot::channel();
        if stop.send(done).is_ok() {
            let _ = tokio::time::timeout(within, finished).await;
        }
    }

    /// The spans of a finished request: its SERVER span, and the CLIENT span of its upstream
    /// call when `upstream` (Unix nanoseconds, first attempt to last answer) says there was one.
    /// Each is encoded here, straight into the one buffer that is queued.
    pub fn finish(&self, ids: &Ids, facts: &crate::audit::Facts<'_>, upstream: Option<(u64, u64)>) {
        if !ids.sampled {
            return;
        }
        let end_ns = unix_nanos();
        let start_ns = end_ns.saturating_sub(u64::try_from(facts.latency.as_nanos()).unwrap_or(u64::MAX));
        let request = facts.request;
        let operation = match request.endpoint {
            "chat.completions" | "messages" | "responses" => Some("chat"),
            "embeddings" => Some("embeddings"),
            _ => None,
        };
        let name = match (operation, facts.requested_model) {
            (Some(op), model) if !model.is_empty() => format!("{op} {model}"),
            (Some(op), _) => op.to_owned(),
            (None, _) => format!("{} {}", request.method, request.endpoint),
        };
        let system = facts.provider.map(|p| match p.kind() {
            ProviderType::Openai => "openai",
            ProviderType::Azure => "azure.ai.openai",
            ProviderType::Anthropic => "anthropic",
            other => other.as_str(),
        });
        // What both spans say.
        let common = |w: &mut SpanWriter| {
            if let Some(op) = operation {
                w.str("gen_ai.operation.name", op);
            }
            if let Some(system) = system {
                w.str("gen_ai.provider.name", system);
            }
            if !facts.requested_model.is_empty() {
                w.str("gen_ai.request.model", facts.requested_model);
            }
            if let Some(p) = facts.provider {
                w.str("uprox.provider", &p.name);
                if !facts.key.is_empty() {
                    w.str("uprox.key", facts.key);
                }
            }
            w.int("uprox.retries", i64::from(facts.retries));
        };
        if let Some((up_start, up_end)) = upstream {
            let head = Head {
                trace: &ids.trace,
                id: &ids.upstream,
                parent: Some(&ids.span),
                remote_parent: false,
                name: &name,
                kind: Kind::Client,
                start_ns: up_start,
                end_ns: up_end.max(up_start),
            };
            let mut w = SpanWriter::new(self.protocol, &head);
            common(&mut w);
            if let Some(host) =
                facts.provider.and_then(|p| p.chat_url.as_ref().or(p.models_url.as_ref())).and_then(Uri::host)
            {
                w.str("server.address", host);
            }
            let failed = request.error.and_then(|code| crate::audit::upstream_class(code, request.status));
            if let Some(class) = failed {
                w.str("error.type", class);
            }
            // Client spans fail on any upstream error (HTTP conventions).
            self.record(w.finish(failed));
        }
        let head = Head {
            trace: &ids.trace,
            id: &ids.span,
            parent: ids.parent.as_ref(),
            remote_parent: ids.parent.is_some(),
            name: &name,
            kind: Kind::Server,
            start_ns,
            end_ns,
        };
        let mut w = SpanWriter::new(self.protocol, &head);
        common(&mut w);
        if !facts.served_model.is_empty() {
            w.str("gen_ai.response.model", facts.served_model);
        }
        if let Some(made) = facts.made {
            w.int("gen_ai.usage.input_tokens", made.usage.prompt_tokens() as i64);
            w.int("gen_ai.usage.output_tokens", made.usage.output as i64);
            w.int("uprox.usage.cached_tokens", made.usage.cache_read as i64);
            w.bool("uprox.usage.estimated", made.estimated);
            w.double("uprox.cost_usd", usd(made.cost_pico_usd));
        }
        w.str("http.request.method", request.method.as_str());
        w.int("http.response.status_code", i64::from(request.status.as_u16()));
        if let Some(code) = request.error {
            w.str("error.type", code);
        }
        if let Some(client) = request.client {
            let mut text = [0u8; 48];
            let mut cursor = std::io::Cursor::new(&mut text[..]);
            if write!(cursor, "{}", client.ip()).is_ok() {
                let len = cursor.position() as usize;
                w.str("client.address", std::str::from_utf8(&text[..len]).unwrap_or(""));
            }
        }
        if let Some(agent) = request.user_agent.as_ref().and_then(|v| v.to_str().ok()) {
            w.str("user_agent.original", agent);
        }
        w.str("uprox.request_id", request.request_id.to_str().unwrap_or(""));
        w.str("uprox.endpoint", request.endpoint);
        for (key, value) in
            [("uprox.namespace", facts.namespace), ("uprox.service", facts.service), ("uprox.token", facts.token)]
        {
            if !value.is_empty() {
                w.str(key, value);
            }
        }
        if !facts.cache.is_empty() {
            w.str("uprox.cache", facts.cache);
        }
        if facts.saved_pico_usd > 0 {
            w.double("uprox.saved_usd", usd(facts.saved_pico_usd));
        }
        w.bool("uprox.completed", facts.completed);
        if let Some(first) = facts.first_byte {
            w.double("uprox.time_to_first_byte_ms", first.as_secs_f64() * 1000.0);
        }
        // Server spans fail on 5xx; a 4xx is the client's mistake (HTTP conventions).
        let error = request.status.is_server_error().then(|| request.error.unwrap_or("upstream_error"));
        self.record(w.finish(error));
    }
}

/// Pico-USD as USD.
fn usd(pico: u128) -> f64 {
    pico as f64 / 1e12
}

/// Now, in Unix nanoseconds.
pub fn unix_nanos() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_nanos() as u64)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use super::*;

    #[tokio::test]
    async fn sampling_keeps_the_given_share_of_new_traces() {
        let endpoint = "http://127.0.0.1:9".to_owned();
        let config =
            |ratio| Options { endpoint: Some(endpoint.clone()), sample_ratio: Some(ratio), ..Options::default() };
        let tracer = |ratio| Tracer::start(Config::from_options(&config(ratio), |_| None).unwrap().unwrap()).unwrap();
        let headers = http::HeaderMap::new();
        let kept = |tracer: &Tracer| (0..2000).filter(|_| tracer.ids(&headers).sampled).count();
        assert_eq!(kept(&tracer(1.0)), 2000);
        assert_eq!(kept(&tracer(0.0)), 0);
        let quarter = kept(&tracer(0.25));
        assert!((400..600).contains(&quarter), "{quarter} of 2000 at 0.25");
    }
}
