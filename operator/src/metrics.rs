//! The operator's Prometheus metrics, served on `/metrics` of the admin port: its own
//! (`uprox_operator_*`) and the Budgets' (`uprox_budget_*`, one series per Budget and window,
//! removed when the Budget goes away).

use prometheus::{
    Encoder as _, GaugeVec, Histogram, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge, IntGaugeVec,
    Opts, Registry, TextEncoder,
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
    /// Budgets: spend by namespace, budget and window (`daily`, `monthly`), USD.
    pub budget_spend: GaugeVec,
    /// Budgets: ceiling by namespace, budget and window, USD (absent without a ceiling).
    pub budget_limit: GaugeVec,
    /// Budgets: alert levels reached by namespace, budget, window and threshold.
    pub budget_alerts: IntCounterVec,
    budget_registry: Registry,
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
            budget_spend: GaugeVec::new(
                Opts::new("budget_spend_usd", "Spend of a Budget's Services in the current UTC window, USD"),
                &["namespace", "budget", "window"],
            )?,
            budget_limit: GaugeVec::new(
                Opts::new("budget_limit_usd", "A Budget's ceiling per UTC window, USD"),
                &["namespace", "budget", "window"],
            )?,
            budget_alerts: IntCounterVec::new(
                Opts::new("budget_alerts_total", "Budget alert levels reached, once per window and threshold"),
                &["namespace", "budget", "window", "threshold"],
            )?,
            budget_registry: Registry::new_custom(Some("uprox".to_owned()), None)?,
            registry,
        };
        metrics.budget_registry.register(Box::new(metrics.budget_spend.clone()))?;
        metrics.budget_registry.register(Box::new(metrics.budget_limit.clone()))?;
        metrics.budget_registry.register(Box::new(metrics.budget_alerts.clone()))?;
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
        let mut families = self.registry.gather();
        families.extend(self.budget_registry.gather());
        let _ = TextEncoder::new().encode(&families, &mut out);
        String::from_utf8(out).unwrap_or_default()
    }

    /// Removes every series of Budget `namespace/budget`.
    pub fn forget_budget(&self, namespace: &str, budget: &str) {
        // Removing a series that does not exist is an error nobody needs to hear about.
        for window in ["daily", "monthly"] {
            let _ = self.budget_spend.remove_label_values(&[namespace, budget, window]);
            let _ = self.budget_limit.remove_label_values(&[namespace, budget, window]);
            for threshold in 1..=100u8 {
                let _ = self.budget_alerts.remove_label_values(&[namespace, budget, window, &threshold.to_string()]);
            }
        }
    }
}
