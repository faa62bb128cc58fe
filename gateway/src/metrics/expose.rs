//! Building metric families for the `prometheus` crate's encoder: every series of the admin
//! port's `/metrics` (requests, spend, cache, trace export) is one of these, encoded together.

use prometheus::proto::{self, MetricFamily, MetricType};

/// An empty family.
pub fn family(name: &str, help: &str, kind: MetricType) -> MetricFamily {
    let mut family = MetricFamily::default();
    family.set_name(name.to_owned());
    family.set_help(help.to_owned());
    family.set_field_type(kind);
    family
}

/// A label pair.
pub fn label(name: &str, value: &str) -> proto::LabelPair {
    let mut pair = proto::LabelPair::default();
    pair.set_name(name.to_owned());
    pair.set_value(value.to_owned());
    pair
}

/// A counter series with these labels.
pub fn counter(labels: Vec<proto::LabelPair>, value: f64) -> proto::Metric {
    let mut metric = proto::Metric::from_label(labels);
    let mut counter = proto::Counter::default();
    counter.set_value(value);
    metric.set_counter(counter);
    metric
}

/// A gauge family of one unlabelled series.
pub fn gauge(name: &str, help: &str, value: f64) -> MetricFamily {
    let mut f = family(name, help, MetricType::GAUGE);
    let mut gauge = proto::Gauge::default();
    gauge.set_value(value);
    f.mut_metric().push(proto::Metric::from_gauge(gauge));
    f
}

/// A counter family of one series per `(label value, count)`, under label `name`.
pub fn counters_by(family_name: &str, help: &str, label_name: &str, series: &[(&str, f64)]) -> MetricFamily {
    let mut f = family(family_name, help, MetricType::COUNTER);
    for (value, n) in series {
        f.mut_metric().push(counter(vec![label(label_name, value)], *n));
    }
    f
}

/// The text exposition of `families` (empty families left out).
pub fn encode(mut families: Vec<MetricFamily>) -> String {
    families.retain(|f| !f.get_metric().is_empty());
    let mut out = Vec::new();
    // The families are well-formed by construction; an error leaves the text empty.
    let _ = prometheus::Encoder::encode(&prometheus::TextEncoder::new(), &families, &mut out);
    String::from_utf8(out).unwrap_or_default()
}
