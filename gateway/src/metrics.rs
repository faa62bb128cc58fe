//! The gateway's request metrics, recorded once per request when its audit line is written
//! (the same facts) and exposed on the admin port in the Prometheus text format by the
//! `prometheus` crate's encoder.
//!
//! Series use the OpenTelemetry GenAI names where they exist — `gen_ai_server_request_duration_
//! seconds`, `gen_ai_server_time_to_first_token_seconds`, `gen_ai_client_token_usage` — and
//! `uprox_*` otherwise. Labels are the Service's `namespace` and `service`, `provider`
//! (`namespace/name`), `model` (the model the answer names), and per family `endpoint`,
//! `status_class`, `token_type`, `reason`, `key` (a label, never a key) and `class`. No token,
//! request id or other unbounded value is a label; each family keeps at most
//! [`MAX_SERIES`] series per serving thread, more are counted under labels `other`.
//!
//! Recording takes no shared lock: each serving thread has its own shard (an uncontended mutex
//! only a scrape also takes); a scrape merges the shards.

use std::collections::{BTreeMap, HashMap};
use std::hash::Hasher as _;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::{Mutex, PoisonError};
use std::time::Duration;

use prometheus::proto::{self, MetricFamily, MetricType};

pub mod expose;

use expose::{counter, counters_by, family, gauge, label};

/// Series per family and serving thread, beyond which new label sets count as `other`.
pub const MAX_SERIES: usize = 2048;

/// Seconds: request durations, time to first token, upstream latency.
const SECONDS: &[f64] = &[0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0];
/// Tokens per request (the OpenTelemetry GenAI recommendation).
const TOKENS: &[f64] = &[1.0, 4.0, 16.0, 64.0, 256.0, 1024.0, 4096.0, 16384.0, 65536.0, 262144.0, 1048576.0, 4194304.0];

/// What one request was, for the metrics.
#[derive(Debug, Default)]
pub struct Observation<'a> {
    /// The Service's namespace (empty before authentication).
    pub namespace: &'a str,
    /// The Service.
    pub service: &'a str,
    /// The provider, `namespace/name` (empty before routing).
    pub provider: &'a str,
    /// The model the answer names, else the requested one.
    pub model: &'a str,
    /// The endpoint's name.
    pub endpoint: &'static str,
    /// The status sent.
    pub status: u16,
    /// Arrival to the end of the response.
    pub duration: Duration,
    /// Arrival to the first byte of a streamed answer.
    pub time_to_first_token: Option<Duration>,
    /// Time to the upstream's response headers.
    pub upstream: Option<Duration>,
    /// Input, output and cached tokens.
    pub tokens: Option<(u64, u64, u64)>,
    /// Why the gateway refused it: `auth`, `scope`, `policy`, `rate_limit`, `budget`.
    pub denial: Option<&'static str>,
    /// The key label and the class of an upstream failure: `timeout`, `connect`,
    /// `rejected_key`, `http_429`, `http_5xx`, `http_4xx`.
    pub upstream_error: Option<(&'a str, &'static str)>,
}

/// The metrics of one gateway.
#[derive(Debug, Default)]
pub struct Metrics {
    shards: thread_local::ThreadLocal<Mutex<Shard>>,
    /// Requests in flight, per thread (a request starts and ends on its connection's thread).
    in_flight: thread_local::ThreadLocal<AtomicI64>,
    generation: AtomicU64,
    reloads_ok: AtomicU64,
    reloads_failed: AtomicU64,
}

#[derive(Debug, Default)]
struct Shard {
    requests: Family<u64>,
    duration: Family<Histogram>,
    first_token: Family<Histogram>,
    tokens: Family<Histogram>,
    upstream: Family<Histogram>,
    denials: Family<u64>,
    upstream_errors: Family<u64>,
}

/// Label values, in the family's label order.
type Labels = Box<[Box<str>]>;

/// Series by a hash of their label values.
#[derive(Debug, Default)]
struct Family<V> {
    series: HashMap<u64, (Labels, V)>,
}

/// Label values hashed in order (fixed keys: the same labels always land on the same series).
/// Families sharing leading labels clone the hasher of the shared part.
#[derive(Clone, Default)]
struct Key(std::hash::DefaultHasher);

impl Key {
    fn of(labels: &[&str]) -> Key {
        Key::default().and(labels)
    }

    fn and(mut self, labels: &[&str]) -> Key {
        for label in labels {
            self.0.write(label.as_bytes());
            self.0.write_u8(0xff);
        }
        self
    }
}

impl<V: Default> Family<V> {
    fn get(&mut self, labels: &[&str]) -> &mut V {
        self.get_keyed(&Key::of(labels), labels)
    }

    /// The series of `labels`, whose key is `key` (see [`Key`]).
    fn get_keyed(&mut self, key: &Key, labels: &[&str]) -> &mut V {
        let key = key.0.finish();
        if !self.series.contains_key(&key) && self.series.len() >= MAX_SERIES {
            let other =
                self.series.entry(0).or_insert_with(|| (labels.iter().map(|_| "other".into()).collect(), V::default()));
            return &mut other.1;
        }
        &mut self.series.entry(key).or_insert_with(|| (labels.iter().map(|l| (*l).into()).collect(), V::default())).1
    }
}

/// A histogram's counts.
#[derive(Debug, Default, Clone)]
struct Histogram {
    /// Observations at or below each bound (not cumulative), and above the last.
    counts: Vec<u64>,
    sum: f64,
    count: u64,
}

impl Histogram {
    fn observe(&mut self, bounds: &[f64], value: f64) {
        if self.counts.is_empty() {
            self.counts = vec![0; bounds.len() + 1];
        }
        let slot = bounds.iter().position(|b| value <= *b).unwrap_or(bounds.len());
        self.counts[slot] += 1;
        self.sum += value;
        self.count += 1;
    }

    fn merge(&mut self, other: &Histogram) {
        if self.counts.len() < other.counts.len() {
            self.counts.resize(other.counts.len(), 0);
        }
        for (mine, theirs) in self.counts.iter_mut().zip(&other.counts) {
            *mine += theirs;
        }
        self.sum += other.sum;
        self.count += other.count;
    }
}

impl Metrics {
    /// A request started.
    pub fn started(&self) {
        self.in_flight.get_or_default().fetch_add(1, Ordering::Relaxed);
    }

    /// A request ended, as `o`.
    pub fn finished(&self, o: &Observation<'_>) {
        self.in_flight.get_or_default().fetch_sub(1, Ordering::Relaxed);
        let mut shard = self.shards.get_or_default().lock().unwrap_or_else(PoisonError::into_inner);
        let model_labels = [o.namespace, o.service, o.provider, o.model];
        let model_key = Key::of(&model_labels);
        let class = match o.status {
            200..=299 => "2xx",
            300..=399 => "3xx",
            400..=499 => "4xx",
            _ => "5xx",
        };
        let request_key = model_key.clone().and(&[o.endpoint, class]);
        *shard.requests.get_keyed(&request_key, &[o.namespace, o.service, o.provider, o.model, o.endpoint, class]) += 1;
        shard.duration.get_keyed(&model_key, &model_labels).observe(SECONDS, o.duration.as_secs_f64());
        if let Some(first) = o.time_to_first_token {
            shard.first_token.get_keyed(&model_key, &model_labels).observe(SECONDS, first.as_secs_f64());
        }
        if let Some((input, output, cached)) = o.tokens {
            for (kind, n) in [("input", input), ("output", output), ("cached", cached)] {
                if n > 0 || kind != "cached" {
                    let labels = [o.namespace, o.service, o.provider, o.model, kind];
                    shard.tokens.get_keyed(&model_key.clone().and(&[kind]), &labels).observe(TOKENS, n as f64);
                }
            }
        }
        if let Some(upstream) = o.upstream {
            shard.upstream.get(&[o.provider]).observe(SECONDS, upstream.as_secs_f64());
        }
        if let Some(reason) = o.denial {
            *shard.denials.get(&[o.namespace, o.service, reason]) += 1;
        }
        if let Some((key, class)) = o.upstream_error {
            *shard.upstream_errors.get(&[o.provider, key, class]) += 1;
        }
    }

    /// An upstream attempt failed, and failover moved on to another key.
    pub fn upstream_failed(&self, provider: &str, key: &str, class: &'static str) {
        let mut shard = self.shards.get_or_default().lock().unwrap_or_else(PoisonError::into_inner);
        *shard.upstream_errors.get(&[provider, key, class]) += 1;
    }

    /// A config was installed.
    pub fn installed(&self) {
        self.generation.fetch_add(1, Ordering::Relaxed);
        self.reloads_ok.fetch_add(1, Ordering::Relaxed);
    }

    /// A config change was refused (the last good one keeps serving).
    pub fn refused(&self) {
        self.reloads_failed.fetch_add(1, Ordering::Relaxed);
    }

    /// The metric families, merged over the serving threads.
    pub fn gather(&self) -> Vec<MetricFamily> {
        let mut merged = Merged::default();
        for shard in self.shards.iter() {
            let shard = shard.lock().unwrap_or_else(PoisonError::into_inner);
            merged.add(&shard);
        }
        let in_flight: i64 = self.in_flight.iter().map(|n| n.load(Ordering::Relaxed)).sum();
        let mut families = vec![
            counters(
                "uprox_requests_total",
                "Requests answered, by Service, provider, model, endpoint and status class.",
                &["namespace", "service", "provider", "model", "endpoint", "status_class"],
                &merged.requests,
            ),
            histograms(
                "gen_ai_server_request_duration_seconds",
                "Time from a request's arrival to the end of its response.",
                &["namespace", "service", "provider", "model"],
                SECONDS,
                &merged.duration,
            ),
            histograms(
                "gen_ai_server_time_to_first_token_seconds",
                "Time from a streamed request's arrival to its first byte.",
                &["namespace", "service", "provider", "model"],
                SECONDS,
                &merged.first_token,
            ),
            histograms(
                "gen_ai_client_token_usage",
                "Tokens per request by type (input, output, cached).",
                &["namespace", "service", "provider", "model", "token_type"],
                TOKENS,
                &merged.tokens,
            ),
            histograms(
                "uprox_upstream_duration_seconds",
                "Time to the upstream's response headers.",
                &["provider"],
                SECONDS,
                &merged.upstream,
            ),
            counters(
                "uprox_denials_total",
                "Requests refused by the gateway, by reason (auth, scope, policy, rate_limit, budget).",
                &["namespace", "service", "reason"],
                &merged.denials,
            ),
            counters(
                "uprox_upstream_errors_total",
                "Failed upstream attempts, by provider, key label and class: requests that failed, and attempts key failover recovered from.",
                &["provider", "key", "class"],
                &merged.upstream_errors,
            ),
        ];
        families.push(gauge("uprox_requests_in_flight", "Requests being answered.", in_flight as f64));
        families.push(gauge(
            "uprox_config_generation",
            "Configs installed since the process started.",
            self.generation.load(Ordering::Relaxed) as f64,
        ));
        families.push(counters_by(
            "uprox_config_reloads_total",
            "Config loads by result.",
            "result",
            &[
                ("success", self.reloads_ok.load(Ordering::Relaxed) as f64),
                ("failure", self.reloads_failed.load(Ordering::Relaxed) as f64),
            ],
        ));
        families
    }

    /// The text exposition of these metrics alone.
    pub fn render(&self) -> String {
        expose::encode(self.gather())
    }
}

/// The shards summed, by label values.
#[derive(Default)]
struct Merged {
    requests: BTreeMap<Labels, u64>,
    duration: BTreeMap<Labels, Histogram>,
    first_token: BTreeMap<Labels, Histogram>,
    tokens: BTreeMap<Labels, Histogram>,
    upstream: BTreeMap<Labels, Histogram>,
    denials: BTreeMap<Labels, u64>,
    upstream_errors: BTreeMap<Labels, u64>,
}

impl Merged {
    fn add(&mut self, shard: &Shard) {
        let count = |into: &mut BTreeMap<Labels, u64>, from: &Family<u64>| {
            for (labels, n) in from.series.values() {
                *into.entry(labels.clone()).or_default() += n;
            }
        };
        let hist = |into: &mut BTreeMap<Labels, Histogram>, from: &Family<Histogram>| {
            for (labels, h) in from.series.values() {
                into.entry(labels.clone()).or_default().merge(h);
            }
        };
        count(&mut self.requests, &shard.requests);
        count(&mut self.denials, &shard.denials);
        count(&mut self.upstream_errors, &shard.upstream_errors);
        hist(&mut self.duration, &shard.duration);
        hist(&mut self.first_token, &shard.first_token);
        hist(&mut self.tokens, &shard.tokens);
        hist(&mut self.upstream, &shard.upstream);
    }
}

fn labels(names: &[&str], values: &[Box<str>]) -> Vec<proto::LabelPair> {
    names.iter().zip(values).map(|(n, v)| label(n, v)).collect()
}

fn counters(name: &str, help: &str, names: &[&str], series: &BTreeMap<Labels, u64>) -> MetricFamily {
    let mut f = family(name, help, MetricType::COUNTER);
    for (values, n) in series {
        f.mut_metric().push(counter(labels(names, values), *n as f64));
    }
    f
}

fn histograms(
    name: &str,
    help: &str,
    names: &[&str],
    bounds: &[f64],
    series: &BTreeMap<Labels, Histogram>,
) -> MetricFamily {
    let mut f = family(name, help, MetricType::HISTOGRAM);
    for (values, h) in series {
        let mut metric = proto::Metric::from_label(labels(names, values));
        let mut histogram = proto::Histogram::default();
        histogram.set_sample_count(h.count);
        histogram.set_sample_sum(h.sum);
        let mut cumulative = 0;
        let buckets = bounds
            .iter()
            .enumerate()
            .map(|(i, bound)| {
                cumulative += h.counts.get(i).copied().unwrap_or(0);
                let mut bucket = proto::Bucket::default();
                bucket.set_upper_bound(*bound);
                bucket.set_cumulative_count(cumulative);
                bucket
            })
            .collect();
        histogram.set_bucket(buckets);
        metric.set_histogram(histogram);
        f.mut_metric().push(metric);
    }
    f
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn observations_are_exposed_merged_and_bounded() {
        let metrics = Metrics::default();
        let ok = Observation {
            namespace: "team",
            service: "app",
            provider: "team/openai",
            model: "gpt-4o",
            endpoint: "chat.completions",
            status: 200,
            duration: Duration::from_millis(30),
            time_to_first_token: Some(Duration::from_millis(8)),
            upstream: Some(Duration::from_millis(5)),
            tokens: Some((1000, 20, 0)),
            ..Observation::default()
        };
        metrics.started();
        metrics.finished(&ok);
        std::thread::scope(|s| {
            s.spawn(|| {
                metrics.started();
                metrics.finished(&ok);
            });
        });
        let denied = Observation {
            namespace: "team",
            service: "app",
            endpoint: "chat.completions",
            status: 429,
            denial: Some("rate_limit"),
            ..Observation::default()
        };
        metrics.started();
        metrics.finished(&denied);
        metrics.installed();
        metrics.refused();
        let text = metrics.render();
        for line in [
            r#"uprox_requests_total{namespace="team",service="app",provider="team/openai",model="gpt-4o",endpoint="chat.completions",status_class="2xx"} 2"#,
            r#"uprox_requests_total{namespace="team",service="app",provider="",model="",endpoint="chat.completions",status_class="4xx"} 1"#,
            r#"gen_ai_server_request_duration_seconds_bucket{namespace="team",service="app",provider="team/openai",model="gpt-4o",le="0.025"} 0"#,
            r#"gen_ai_server_request_duration_seconds_bucket{namespace="team",service="app",provider="team/openai",model="gpt-4o",le="0.05"} 2"#,
            r#"gen_ai_server_request_duration_seconds_count{namespace="team",service="app",provider="team/openai",model="gpt-4o"} 2"#,
            r#"gen_ai_server_time_to_first_token_seconds_count{namespace="team",service="app",provider="team/openai",model="gpt-4o"} 2"#,
            r#"gen_ai_client_token_usage_sum{namespace="team",service="app",provider="team/openai",model="gpt-4o",token_type="input"} 2000"#,
            r#"uprox_upstream_duration_seconds_count{provider="team/openai"} 2"#,
            r#"uprox_denials_total{namespace="team",service="app",reason="rate_limit"} 1"#,
            "uprox_requests_in_flight 0",
            "uprox_config_generation 1",
            r#"uprox_config_reloads_total{result="failure"} 1"#,
            "# TYPE gen_ai_server_request_duration_seconds histogram",
        ] {
            assert!(text.contains(line), "{line} missing in\n{text}");
        }
        assert!(!text.contains("token_type=\"cached\""), "no cached-token series without cached tokens");
    }

    #[test]
    fn series_are_bounded_per_thread() {
        let metrics = Metrics::default();
        for i in 0..(MAX_SERIES + 10) {
            let model = format!("m{i}");
            let o = Observation {
                namespace: "t",
                service: "s",
                provider: "p",
                model: &model,
                endpoint: "e",
                status: 200,
                ..Observation::default()
            };
            metrics.started();
            metrics.finished(&o);
        }
        let requests =
            metrics.gather().into_iter().find(|f| f.name() == "uprox_requests_total").map(|f| f.get_metric().len());
        assert_eq!(requests, Some(MAX_SERIES + 1), "the rest under `other`");
        assert!(metrics.render().contains(r#"uprox_requests_total{namespace="other",service="other",provider="other",model="other",endpoint="other",status_class="other"} 10"#));
    }
}
