//! The operator's Prometheus metrics, served on `/metrics` of the admin port.

use prometheus::{
    Encoder as _, Histogram, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge, IntGaugeVec, Opts,
    Registry, TextEncoder,
};

/// Every metric, registered in one registry.
#[derive(Clone, Debug)]
pub struct Metrics {
    registry: Registry,
    /// Status reconciles by kind.
    pub reconciles: IntCounterVec,
    /// Status reconcile duration by kind (one pass over every object of the kind).
    pub reconcile_duration: HistogramVec,
    /// Failures by kind and reason.
    pub failures: IntCounterVec,
    /// Compilations.
    pub compiles: IntCounter,
    /// Compile duration.
    pub compile_duration: Histogram,
    /// Bytes of the compiled config JSON.
    pub config_bytes: IntGauge,
    /// Diagnostics of the last compile by kind and severity.
    pub diagnostics: IntGaugeVec,
    /// Tokens issued (first or rotated).
    pub tokens_issued: IntCounter,
    /// 1 while this replica leads.
    pub leader: IntGauge,
}

impl Metrics {
    /// Registers every metric.
    pub fn new() -> Result<Self, prometheus::Error> {
        let registry = Registry::new_custom(Some("uprox_operator".to_owned()), None)?;
        let buckets = vec![0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0];
        let metrics = Self {
            reconciles: IntCounterVec::new(Opts::new("reconciles_total", "Status reconciles by kind"), &["kind"])?,
            reconcile_duration: HistogramVec::new(
                HistogramOpts::new("reconcile_duration_seconds", "Time to reconcile every object of a kind")
                    .buckets(buckets.clone()),
                &["kind"],
            )?,
            failures: IntCounterVec::new(
                Opts::new("reconcile_failures_total", "Failed reconcile steps by kind and reason"),
                &["kind", "reason"],
            )?,
            compiles: IntCounter::new("compiles_total", "Compilations of the gateway config")?,
            compile_duration: Histogram::with_opts(
                HistogramOpts::new("compile_duration_seconds", "Time to compile the gateway config").buckets(buckets),
            )?,
            config_bytes: IntGauge::new("compiled_config_bytes", "Bytes of the compiled gateway config JSON")?,
            diagnostics: IntGaugeVec::new(
                Opts::new("diagnostics", "Diagnostics of the last compilation by kind and severity"),
                &["kind", "severity"],
            )?,
            tokens_issued: IntCounter::new("tokens_issued_total", "Machine tokens issued or rotated")?,
            leader: IntGauge::new("leader", "1 while this replica holds the leader Lease")?,
            registry,
        };
        metrics.registry.register(Box::new(metrics.reconciles.clone()))?;
        metrics.registry.register(Box::new(metrics.reconcile_duration.clone()))?;
        metrics.registry.register(Box::new(metrics.failures.clone()))?;
        metrics.registry.register(Box::new(metrics.compiles.clone()))?;
        metrics.registry.register(Box::new(metrics.compile_duration.clone()))?;
        metrics.registry.register(Box::new(metrics.config_bytes.clone()))?;
        metrics.registry.register(Box::new(metrics.diagnostics.clone()))?;
        metrics.registry.register(Box::new(metrics.tokens_issued.clone()))?;
        metrics.registry.register(Box::new(metrics.leader.clone()))?;
        Ok(metrics)
    }

    /// The text exposition format.
    pub fn render(&self) -> String {
        let mut out = Vec::new();
        // Encoding into a Vec cannot fail for well-formed metric families.
        let _ = TextEncoder::new().encode(&self.registry.gather(), &mut out);
        String::from_utf8(out).unwrap_or_default()
    }
}
