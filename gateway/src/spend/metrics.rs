//! The spend metrics of the gateway's admin port: cost, costed requests, requests to unpriced
//! models, and response-cache hits, misses and savings since the process started, by namespace,
//! Service, provider and model (at most 64 models per provider and thread; more count as
//! `other`). Budget spend and limits are the operator's metrics (`uprox_budget_*`), computed from
//! the shared ledger rather than one replica's view.

use prometheus::proto::{MetricFamily, MetricType};

use super::state::Spend;
use crate::metrics::expose::{counter, family, label};

/// The metric families.
pub fn families(spend: &Spend) -> Vec<MetricFamily> {
    let [mut cost, mut requests, mut unpriced, mut hits, mut misses, mut saved] = [
        (
            "uprox_cost_usd_total",
            "USD spent through this gateway process (exact, from the usage the provider reported).",
        ),
        ("uprox_costed_requests_total", "Requests whose cost this gateway process recorded."),
        ("uprox_unpriced_requests_total", "Requests to models without a price, costed at 0."),
        ("uprox_cache_hits_total", "Requests answered from the response cache (no upstream call, no cost)."),
        ("uprox_cache_misses_total", "Requests the response cache could have answered but did not."),
        ("uprox_cache_saved_usd_total", "USD the response cache's hits would have cost upstream."),
    ]
    .map(|(name, help)| family(name, help, MetricType::COUNTER));
    let mut meters = spend.all();
    meters.sort_by(|a, b| a.key.cmp(&b.key));
    for meter in meters {
        let (namespace, service) = meter.key.split_once('/').unwrap_or(("", &meter.key));
        let mut by_provider: Vec<_> = meter.by_model().into_iter().collect();
        by_provider.sort_by(|a, b| a.0.cmp(&b.0));
        for (provider, models) in by_provider {
            let mut models: Vec<_> = models.into_iter().collect();
            models.sort_by(|a, b| a.0.cmp(&b.0));
            for (model, total) in models {
                let labels = || {
                    vec![
                        label("namespace", namespace),
                        label("service", service),
                        label("provider", &provider),
                        label("model", &model),
                    ]
                };
                let usd = |pico: u128| pico as f64 / 1e12;
                if total.requests > 0 {
                    cost.mut_metric().push(counter(labels(), usd(total.pico_usd)));
                    requests.mut_metric().push(counter(labels(), total.requests as f64));
                }
                if total.cache_hits > 0 {
                    hits.mut_metric().push(counter(labels(), total.cache_hits as f64));
                    saved.mut_metric().push(counter(labels(), usd(total.saved_pico_usd)));
                }
                if total.cache_misses > 0 {
                    misses.mut_metric().push(counter(labels(), total.cache_misses as f64));
                }
                if total.unpriced > 0 {
                    unpriced.mut_metric().push(counter(labels(), total.unpriced as f64));
                }
            }
        }
    }
    vec![cost, requests, unpriced, hits, misses, saved]
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use uprox_crds::common::ObjectId;

    use super::*;

    #[test]
    fn cost_is_exposed_by_service_provider_and_model() {
        let spend = Spend::default();
        let meter = spend.service(&ObjectId::new("team", "app"));
        let provider: Arc<str> = Arc::from("team/openai");
        meter.record(&provider, "gpt-4o", 2_500_000_000, true);
        meter.record(&provider, "gpt-4o", 2_500_000_000, true);
        meter.record(&provider, "we\"ird", 0, false);
        let text = crate::metrics::expose::encode(families(&spend));
        assert!(text.contains(
            "uprox_cost_usd_total{namespace=\"team\",service=\"app\",provider=\"team/openai\",model=\"gpt-4o\"} 0.005\n"
        ), "{text}");
        assert!(text.contains("uprox_costed_requests_total{namespace=\"team\",service=\"app\",provider=\"team/openai\",model=\"gpt-4o\"} 2\n"));
        assert!(text.contains("uprox_unpriced_requests_total{namespace=\"team\",service=\"app\",provider=\"team/openai\",model=\"we\\\"ird\"} 1\n"));
        assert!(text.contains("# TYPE uprox_cost_usd_total counter"));
        meter.cache_outcome(&provider, "gpt-4o-mini", Some(1_500_000_000));
        meter.cache_outcome(&provider, "gpt-4o-mini", None);
        let text = crate::metrics::expose::encode(families(&spend));
        let labels = r#"{namespace="team",service="app",provider="team/openai",model="gpt-4o-mini"}"#;
        for line in [
            format!("uprox_cache_hits_total{labels} 1\n"),
            format!("uprox_cache_misses_total{labels} 1\n"),
            format!("uprox_cache_saved_usd_total{labels} 0.0015\n"),
        ] {
            assert!(text.contains(&line), "{line} in {text}");
        }
        assert!(!text.contains(&format!("uprox_costed_requests_total{labels}")), "a hit is not a costed request");
    }

    #[test]
    fn models_are_bounded_per_provider() {
        let spend = Spend::default();
        let meter = spend.service(&ObjectId::new("team", "app"));
        let provider: Arc<str> = Arc::from("team/p");
        for i in 0..100 {
            meter.record(&provider, &format!("m{i}"), 1, true);
        }
        let models = &meter.by_model()[&provider];
        assert_eq!(models.len(), 65);
        assert_eq!(models["other"].requests, 36);
    }
}
