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

use http::{HeaderName, HeaderValue, Uri};
use tokio::sync::{mpsc, oneshot};
use uprox_crds::provider::ProviderType;

pub mod export;
pub mod ids;
pub mod otlp;

pub use ids::Ids;
use otlp::{Kind, Span, Value};

/// Spans waiting for the exporter, at most.
const QUEUE: usize = 8192;

/// The OTLP/HTTP encoding.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Protocol {
    /// `http/protobuf`.
    Protobuf,
    /// `http/json`.
    Json,
}

impl Protocol {
    fn content_type(self) -> &'static str {
        match self {
            Protocol::Protobuf => "application/x-protobuf",
            Protocol::Json => "application/json",
        }
    }
}

/// Where and how spans are exported.
#[derive(Debug, Clone, PartialEq)]
pub struct Config {
    /// The traces endpoint, e.g. `http://otel-collector:4318/v1/traces`.
    pub endpoint: Uri,
    /// The encoding.
    pub protocol: Protocol,
    /// Headers every export request carries (e.g. a collector's API key).
    pub headers: Vec<(HeaderName, HeaderValue)>,
    /// The share of new traces recorded, 0 to 1.
    pub sample_ratio: f64,
    /// Who exports.
    pub resource: otlp::Resource,
}

/// The tracing options given on the command line (each also an `UPROX_*` variable).
#[derive(Debug, Clone, Default)]
pub struct Options {
    /// `--otlp-endpoint`: the collector's OTLP/HTTP base URL or traces URL.
    pub endpoint: Option<String>,
    /// `--otlp-protocol`.
    pub protocol: Option<String>,
    /// `--otlp-header name=value`, repeated.
    pub headers: Vec<String>,
    /// `--trace-sample-ratio`.
    pub sample_ratio: Option<f64>,
}

impl Config {
    /// The config from the command-line `options` and the OpenTelemetry variables `env` reads;
    /// `None` when no endpoint is set (tracing off).
    ///
    /// - Endpoint: `--otlp-endpoint` (a URL without a path gets `/v1/traces`), else
    ///   `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT` (as is), else `OTEL_EXPORTER_OTLP_ENDPOINT` plus
    ///   `/v1/traces`.
    /// - Protocol: `--otlp-protocol`, else `OTEL_EXPORTER_OTLP_TRACES_PROTOCOL`, else
    ///   `OTEL_EXPORTER_OTLP_PROTOCOL`, else `http/protobuf`; `grpc` is refused.
    /// - Headers: `--otlp-header`, and `OTEL_EXPORTER_OTLP_HEADERS` and `…_TRACES_HEADERS`
    ///   (`name=value` pairs, comma-separated, values percent-encoded).
    /// - Sampling: `--trace-sample-ratio`, else `OTEL_TRACES_SAMPLER` (`always_on`, `always_off`,
    ///   `traceidratio`, `parentbased_*`) with `OTEL_TRACES_SAMPLER_ARG`, else 1. Requests that
    ///   carry a `traceparent` always follow its decision.
    /// - Resource: `service.name` from `OTEL_SERVICE_NAME` (default `uprox-gateway`),
    ///   `service.version`, `service.instance.id` from `HOSTNAME`, and `OTEL_RESOURCE_ATTRIBUTES`.
    pub fn from_options(options: &Options, env: impl Fn(&str) -> Option<String>) -> Result<Option<Config>, String> {
        let env = |name: &str| env(name).filter(|v| !v.trim().is_empty());
        let endpoint =
            match (&options.endpoint, env("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT"), env("OTEL_EXPORTER_OTLP_ENDPOINT")) {
                (Some(flag), ..) => {
                    let uri = parse_url(flag, "--otlp-endpoint")?;
                    if matches!(uri.path(), "" | "/") { join(flag, "/v1/traces") } else { flag.clone() }
                }
                (None, Some(traces), _) => traces,
                (None, None, Some(base)) => join(&base, "/v1/traces"),
                (None, None, None) => return Ok(None),
            };
        let endpoint = parse_url(&endpoint, "the OTLP endpoint")?;
        let protocol = options
            .protocol
            .clone()
            .or_else(|| env("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL"))
            .or_else(|| env("OTEL_EXPORTER_OTLP_PROTOCOL"));
        let protocol = match protocol.as_deref().map(str::trim) {
            None | Some("http/protobuf") => Protocol::Protobuf,
            Some("http/json") => Protocol::Json,
            Some("grpc") => {
                return Err(
                    "OTLP over gRPC is not supported: use http/protobuf or http/json (the collector's port 4318)"
                        .to_owned(),
                );
            }
            Some(other) => return Err(format!("unknown OTLP protocol {other:?}: use http/protobuf or http/json")),
        };
        let mut headers = Vec::new();
        let from_env = [env("OTEL_EXPORTER_OTLP_HEADERS"), env("OTEL_EXPORTER_OTLP_TRACES_HEADERS")];
        let pairs = from_env.iter().flatten().flat_map(|list| list.split(',')).map(|pair| (pair, true));
        for (pair, encoded) in pairs.chain(options.headers.iter().map(|pair| (pair.as_str(), false))) {
            if pair.trim().is_empty() {
                continue;
            }
            let (name, value) =
                pair.split_once('=').ok_or_else(|| format!("OTLP header {pair:?} is not name=value"))?;
            let value = if encoded { percent_decode(value.trim()) } else { value.trim().to_owned() };
            let name = HeaderName::from_bytes(name.trim().as_bytes())
                .map_err(|_| format!("OTLP header name {:?} is not a header name", name.trim()))?;
            let value =
                HeaderValue::from_str(&value).map_err(|_| format!("OTLP header {name} has an invalid value"))?;
            headers.retain(|(n, _): &(HeaderName, HeaderValue)| *n != name);
            headers.push((name, value));
        }
        let sample_ratio = match options.sample_ratio {
            Some(ratio) => ratio,
            None => match env("OTEL_TRACES_SAMPLER").as_deref().map(str::trim) {
                Some("always_off" | "parentbased_always_off") => 0.0,
                Some("traceidratio" | "parentbased_traceidratio") => {
                    env("OTEL_TRACES_SAMPLER_ARG").and_then(|v| v.trim().parse().ok()).unwrap_or(1.0)
                }
                _ => 1.0,
            },
        };
        if !(0.0..=1.0).contains(&sample_ratio) {
            return Err(format!("the trace sample ratio must be between 0 and 1, not {sample_ratio}"));
        }
        let mut resource = vec![("service.name".to_owned(), "uprox-gateway".to_owned())];
        for pair in env("OTEL_RESOURCE_ATTRIBUTES").iter().flat_map(|list| list.split(',')) {
            if let Some((key, value)) = pair.split_once('=') {
                set(&mut resource, key.trim(), percent_decode(value.trim()));
            }
        }
        if let Some(name) = env("OTEL_SERVICE_NAME") {
            set(&mut resource, "service.name", name);
        }
        set(&mut resource, "service.version", env!("CARGO_PKG_VERSION").to_owned());
        if let Some(host) = env("HOSTNAME")
            && !resource.iter().any(|(k, _)| k == "service.instance.id")
        {
            set(&mut resource, "service.instance.id", host);
        }
        Ok(Some(Config {
            endpoint,
            protocol,
            headers,
            sample_ratio,
            resource: otlp::Resource { attributes: resource },
        }))
    }
}

fn parse_url(text: &str, what: &str) -> Result<Uri, String> {
    let uri: Uri = text.trim().parse().map_err(|_| format!("{what} {text:?} is not a URL"))?;
    match uri.scheme_str() {
        Some("http" | "https") if uri.host().is_some() => Ok(uri),
        _ => Err(format!("{what} {text:?} is not an http:// or https:// URL")),
    }
}

fn join(base: &str, path: &str) -> String {
    format!("{}{path}", base.trim().trim_end_matches('/'))
}

fn set(attributes: &mut Vec<(String, String)>, key: &str, value: String) {
    match attributes.iter_mut().find(|(k, _)| k == key) {
        Some(entry) => entry.1 = value,
        None => attributes.push((key.to_owned(), value)),
    }
}

/// `%XX` escapes decoded (the W3C Baggage encoding of the OTLP header and resource variables);
/// malformed escapes are kept as written.
fn percent_decode(text: &str) -> String {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let hex = |c: u8| (c as char).to_digit(16);
        if bytes[i] == b'%'
            && let (Some(h), Some(l)) = (bytes.get(i + 1).and_then(|c| hex(*c)), bytes.get(i + 2).and_then(|c| hex(*c)))
        {
            out.push((h * 16 + l) as u8);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

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
        Ids::for_request(headers.get("traceparent"), |trace| {
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

    fn config(options: &Options, env: &[(&str, &str)]) -> Result<Option<Config>, String> {
        Config::from_options(options, |name| env.iter().find(|(n, _)| *n == name).map(|(_, v)| (*v).to_owned()))
    }

    fn endpoint(options: &Options, env: &[(&str, &str)]) -> String {
        config(options, env).unwrap().unwrap().endpoint.to_string()
    }

    #[test]
    fn off_without_an_endpoint() {
        assert_eq!(config(&Options::default(), &[("OTEL_SERVICE_NAME", "x")]), Ok(None));
        assert_eq!(config(&Options::default(), &[("OTEL_EXPORTER_OTLP_ENDPOINT", " ")]), Ok(None));
    }

    #[test]
    fn the_endpoint_comes_from_the_flag_then_the_standard_variables() {
        let flag = |url: &str| Options { endpoint: Some(url.to_owned()), ..Options::default() };
        let none = Options::default();
        assert_eq!(endpoint(&flag("http://collector:4318"), &[]), "http://collector:4318/v1/traces");
        assert_eq!(endpoint(&flag("http://collector:4318/"), &[]), "http://collector:4318/v1/traces");
        assert_eq!(endpoint(&flag("https://otlp.example/api/traces"), &[]), "https://otlp.example/api/traces");
        let both = [
            ("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "http://traces:4318/custom"),
            ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://base:4318/"),
        ];
        assert_eq!(endpoint(&flag("http://flag:4318"), &both), "http://flag:4318/v1/traces");
        assert_eq!(endpoint(&none, &both), "http://traces:4318/custom");
        assert_eq!(endpoint(&none, &both[1..]), "http://base:4318/v1/traces");
        for bad in ["collector:4318", "ftp://collector", "not a url"] {
            assert!(config(&flag(bad), &[]).is_err(), "{bad}");
        }
    }

    #[test]
    fn protocol_headers_sampling_and_resource() {
        let options = Options {
            endpoint: Some("http://c:4318".to_owned()),
            headers: vec!["x-api-key=flag".to_owned()],
            ..Options::default()
        };
        let env = [
            ("OTEL_EXPORTER_OTLP_PROTOCOL", "http/json"),
            ("OTEL_EXPORTER_OTLP_HEADERS", "x-api-key=env,authorization=Basic%20abc%3D"),
            ("OTEL_TRACES_SAMPLER", "parentbased_traceidratio"),
            ("OTEL_TRACES_SAMPLER_ARG", "0.25"),
            ("OTEL_RESOURCE_ATTRIBUTES", "deployment.environment=prod,service.name=ignored"),
            ("OTEL_SERVICE_NAME", "gateway-eu"),
            ("HOSTNAME", "uprox-gateway-abc"),
        ];
        let config = config(&options, &env).unwrap().unwrap();
        assert_eq!(config.protocol, Protocol::Json);
        let headers: Vec<(String, &str)> =
            config.headers.iter().map(|(n, v)| (n.to_string(), v.to_str().unwrap())).collect();
        assert_eq!(headers, [("authorization".to_owned(), "Basic abc="), ("x-api-key".to_owned(), "flag")]);
        assert_eq!(config.sample_ratio, 0.25);
        let resource: Vec<(&str, &str)> =
            config.resource.attributes.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
        assert_eq!(
            resource,
            [
                ("service.name", "gateway-eu"),
                ("deployment.environment", "prod"),
                ("service.version", env!("CARGO_PKG_VERSION")),
                ("service.instance.id", "uprox-gateway-abc"),
            ]
        );
    }

    #[test]
    fn bad_settings_are_refused_with_a_reason() {
        let on = |protocol: Option<&str>, ratio: Option<f64>, header: Option<&str>| Options {
            endpoint: Some("http://c:4318".to_owned()),
            protocol: protocol.map(str::to_owned),
            sample_ratio: ratio,
            headers: header.map(str::to_owned).into_iter().collect(),
        };
        let grpc = config(&on(Some("grpc"), None, None), &[]).unwrap_err();
        assert!(grpc.contains("gRPC is not supported"), "{grpc}");
        assert!(config(&on(Some("thrift"), None, None), &[]).is_err());
        assert!(config(&on(None, Some(1.5), None), &[]).is_err());
        assert!(config(&on(None, None, Some("no-equals")), &[]).is_err());
        assert!(config(&on(None, None, Some("bad name=x")), &[]).is_err());
        let default = config(&on(None, None, None), &[("OTEL_TRACES_SAMPLER", "always_off")]).unwrap().unwrap();
        assert_eq!((default.protocol, default.sample_ratio), (Protocol::Protobuf, 0.0));
    }

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
