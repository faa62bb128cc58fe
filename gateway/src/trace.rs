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
use otlp::{Kind, Span, Value};

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
    queue: mpsc::Sender<Span>,
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
        Some(Tracer { queue, threshold, counts, stop: Mutex::new(Some(stop)) })
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
    pub fn record(&self, span: Span) {
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
        let mut common = Vec::with_capacity(8);
        let text = |s: &str| Value::Str(s.to_owned());
        if let Some(op) = operation {
            common.push(("gen_ai.operation.name", text(op)));
        }
        if let Some(system) = system {
            common.push(("gen_ai.provider.name", text(system)));
        }
        if !facts.requested_model.is_empty() {
            common.push(("gen_ai.request.model", text(facts.requested_model)));
        }
        if let Some(p) = facts.provider {
            common.push(("uprox.provider", text(&p.name)));
            if !facts.key.is_empty() {
                common.push(("uprox.key", text(facts.key)));
            }
        }
        let mut attributes = common.clone();
        if !facts.served_model.is_empty() {
            attributes.push(("gen_ai.response.model", text(facts.served_model)));
        }
        if let Some(made) = facts.made {
            attributes.push(("gen_ai.usage.input_tokens", Value::Int(made.usage.prompt_tokens() as i64)));
            attributes.push(("gen_ai.usage.output_tokens", Value::Int(made.usage.output as i64)));
            attributes.push(("uprox.usage.cached_tokens", Value::Int(made.usage.cache_read as i64)));
            attributes.push(("uprox.usage.estimated", Value::Bool(made.estimated)));
            attributes.push(("uprox.cost_usd", Value::Double(usd(made.cost_pico_usd))));
        }
        attributes.push(("http.request.method", text(request.method.as_str())));
        attributes.push(("http.response.status_code", Value::Int(i64::from(request.status.as_u16()))));
        if let Some(code) = request.error {
            attributes.push(("error.type", text(code)));
        }
        if let Some(client) = request.client {
            attributes.push(("client.address", Value::Str(client.ip().to_string())));
        }
        if let Some(agent) = request.user_agent.as_ref().and_then(|v| v.to_str().ok()) {
            attributes.push(("user_agent.original", text(agent)));
        }
        attributes.push(("uprox.request_id", text(request.request_id.to_str().unwrap_or(""))));
        attributes.push(("uprox.endpoint", text(request.endpoint)));
        for (key, value) in
            [("uprox.namespace", facts.namespace), ("uprox.service", facts.service), ("uprox.token", facts.token)]
        {
            if !value.is_empty() {
                attributes.push((key, text(value)));
            }
        }
        if !facts.cache.is_empty() {
            attributes.push(("uprox.cache", text(facts.cache)));
        }
        if facts.saved_pico_usd > 0 {
            attributes.push(("uprox.saved_usd", Value::Double(usd(facts.saved_pico_usd))));
        }
        attributes.push(("uprox.retries", Value::Int(i64::from(facts.retries))));
        attributes.push(("uprox.completed", Value::Bool(facts.completed)));
        if let Some(first) = facts.first_byte {
            attributes.push(("uprox.time_to_first_byte_ms", Value::Double(first.as_secs_f64() * 1000.0)));
        }
        // Server spans fail on 5xx; a 4xx is the client's mistake (HTTP conventions).
        let error = request.status.is_server_error().then(|| request.error.unwrap_or("upstream_error").to_owned());
        if let Some((up_start, up_end)) = upstream {
            let mut client = common;
            if let Some(host) =
                facts.provider.and_then(|p| p.chat_url.as_ref().or(p.models_url.as_ref())).and_then(Uri::host)
            {
                client.push(("server.address", text(host)));
            }
            client.push(("uprox.retries", Value::Int(i64::from(facts.retries))));
            let failed = request.error.and_then(|code| crate::audit::upstream_class(code, request.status));
            if let Some(class) = failed {
                client.push(("error.type", text(class)));
            }
            self.record(Span {
                trace: ids.trace,
                id: ids.upstream,
                parent: Some(ids.span),
                remote_parent: false,
                name: name.clone(),
                kind: Kind::Client,
                start_ns: up_start,
                end_ns: up_end.max(up_start),
                attributes: client,
                // Client spans fail on any upstream error (HTTP conventions).
                error: failed.map(str::to_owned),
            });
        }
        self.record(Span {
            trace: ids.trace,
            id: ids.span,
            parent: ids.parent,
            remote_parent: ids.parent.is_some(),
            name,
            kind: Kind::Server,
            start_ns,
            end_ns,
            attributes,
            error,
        });
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
