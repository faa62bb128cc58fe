//! The `Budget` resource: daily and monthly USD ceilings (UTC calendar windows) over the spend
//! of one or more Services in its namespace, with alert thresholds and a block-or-alert action.

use std::collections::{BTreeMap, BTreeSet};

use kube::{CustomResource, KubeSchema};
use serde::{Deserialize, Serialize};

use crate::conditions::Condition;
use crate::usage::{Ledger, Windows, service_key};

/// A USD amount written as a decimal string with at most six decimals, e.g. `"25"` or `"0.50"`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(transparent)]
pub struct Usd(#[schemars(regex(pattern = r"^[0-9]{1,9}(\.[0-9]{1,6})?$"))] pub String);

impl Usd {
    /// The amount in micro-USD, or `None` when the text is not a decimal of the allowed shape.
    pub fn micro_usd(&self) -> Option<u64> {
        crate::prices::parse_decimal(&self.0, 9, 6).and_then(|micro| u64::try_from(micro).ok())
    }
}

/// What happens when spend reaches a ceiling.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
pub enum BudgetAction {
    /// Refuse further requests with HTTP 402 `insufficient_quota` until the window resets.
    #[default]
    Block,
    /// Keep serving; only raise alerts.
    Alert,
}

fn default_thresholds() -> Vec<u8> {
    vec![80, 100]
}

/// USD ceilings over the spend of some Services.
#[derive(CustomResource, KubeSchema, Clone, Debug, PartialEq, Serialize, Deserialize)]
#[kube(
    group = "uprox.dev",
    version = "v1alpha1",
    kind = "Budget",
    namespaced,
    doc = "Daily and monthly USD ceilings over the spend of one or more Services.",
    status = "BudgetStatus",
    shortname = "ubud",
    category = "uprox",
    printcolumn(name = "Today", type_ = "string", json_path = ".status.dailyUsage"),
    printcolumn(name = "This month", type_ = "string", json_path = ".status.monthlyUsage"),
    printcolumn(name = "Action", type_ = "string", json_path = ".spec.action"),
    printcolumn(name = "Exceeded", type_ = "string", json_path = ".status.conditions[?(@.type==\"Exceeded\")].status"),
    printcolumn(name = "Ready", type_ = "string", json_path = ".status.conditions[?(@.type==\"Ready\")].status")
)]
#[x_kube(validation = Rule::new("has(self.dailyUSD) || has(self.monthlyUSD)").message("set spec.dailyUSD, spec.monthlyUSD or both"))]
#[serde(rename_all = "camelCase")]
pub struct BudgetSpec {
    /// Names of the Services in this namespace whose spend this Budget counts.
    #[schemars(length(min = 1, max = 256))]
    pub services: Vec<String>,
    /// Ceiling per UTC calendar day, in USD (for example `"25"` or `"7.50"`).
    #[serde(default, rename = "dailyUSD", skip_serializing_if = "Option::is_none")]
    pub daily_usd: Option<Usd>,
    /// Ceiling per UTC calendar month, in USD.
    #[serde(default, rename = "monthlyUSD", skip_serializing_if = "Option::is_none")]
    pub monthly_usd: Option<Usd>,
    /// Percentages of a ceiling at which an alert (a Kubernetes Event and a metric) fires,
    /// once per window. Default `[80, 100]`. Reaching the ceiling itself always alerts.
    #[serde(default = "default_thresholds")]
    #[schemars(length(max = 10))]
    pub alert_thresholds: Vec<Threshold>,
    /// `Block` (default) refuses requests with HTTP 402 once a ceiling is reached; `Alert`
    /// keeps serving and only alerts.
    #[serde(default)]
    pub action: BudgetAction,
}

/// A percentage from 1 to 100.
pub type Threshold = u8;

/// Observed state of a Budget.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct BudgetStatus {
    /// The `metadata.generation` this status describes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// USD spent in the current UTC day by the Services counted, 6 decimals (`"3.204100"`).
    #[serde(default, rename = "dailySpendUSD", skip_serializing_if = "Option::is_none")]
    pub daily_spend_usd: Option<String>,
    /// USD spent in the current UTC month by the Services counted, 6 decimals.
    #[serde(default, rename = "monthlySpendUSD", skip_serializing_if = "Option::is_none")]
    pub monthly_spend_usd: Option<String>,
    /// Today's spend in whole percent of `spec.dailyUSD`, rounded down; absent without a daily
    /// ceiling. Can exceed 100.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub daily_percent: Option<u32>,
    /// This month's spend in whole percent of `spec.monthlyUSD`, rounded down; absent without
    /// a monthly ceiling. Can exceed 100.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub monthly_percent: Option<u32>,
    /// When the daily window resets (next midnight UTC), RFC 3339.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub daily_resets_at: Option<String>,
    /// When the monthly window resets (the 1st of next month, 00:00 UTC), RFC 3339.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub monthly_resets_at: Option<String>,
    /// Today's spend for people: `"$3.20/$10 (32%)"`, or `"$3.20"` without a daily ceiling.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub daily_usage: Option<String>,
    /// This month's spend for people: `"$41.07/$300 (13%)"`, or `"$41.07"` without a monthly
    /// ceiling.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub monthly_usage: Option<String>,
    /// The alert levels already reached in the current windows, each announced by one Event;
    /// kept here so a restarted operator does not announce them again.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub alerts: Vec<BudgetAlert>,
    /// `Ready`, `ReferencesResolved`, `Warning` (an alert threshold below the ceiling was
    /// reached), `Exceeded` (a ceiling was reached), `Priced` (every request counted had a
    /// price) and `SpendKnown` (the usage ledger could be read).
    #[serde(default)]
    pub conditions: Vec<Condition>,
}

/// A budget window.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize, schemars::JsonSchema)]
pub enum BudgetWindow {
    /// The UTC calendar day.
    Daily,
    /// The UTC calendar month.
    Monthly,
}

impl BudgetWindow {
    /// `daily` or `monthly`, for messages and metric labels.
    pub fn as_str(self) -> &'static str {
        match self {
            BudgetWindow::Daily => "daily",
            BudgetWindow::Monthly => "monthly",
        }
    }
}

/// An alert level reached in one window.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct BudgetAlert {
    /// `Daily` or `Monthly`.
    pub window: BudgetWindow,
    /// The window it was reached in: `YYYY-MM-DD` for a day, `YYYY-MM` for a month.
    pub period: String,
    /// The threshold reached, in percent of the ceiling (100: the ceiling itself).
    pub threshold: Threshold,
}

/// What the Services of one Budget spent in the current windows, read from the usage ledger.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct BudgetSpend {
    /// Spend of the current UTC day, pico-USD.
    pub day_pico_usd: u128,
    /// Spend of the current UTC month, pico-USD.
    pub month_pico_usd: u128,
    /// Requests this month to models without a price, by model, summed over the Services.
    pub unpriced: BTreeMap<String, u64>,
}

impl Budget {
    /// The spend of this Budget's Services (in its namespace) in the windows `at`: entries of
    /// earlier windows count as zero. A Service named twice is counted once.
    pub fn spend(&self, ledger: &Ledger, at: &Windows) -> BudgetSpend {
        let namespace = self.metadata.namespace.as_deref().unwrap_or_default();
        let names: BTreeSet<&str> = self.spec.services.iter().map(String::as_str).collect();
        let mut spend = BudgetSpend::default();
        for name in names {
            let Some(usage) = ledger.services.get(&service_key(namespace, name)) else { continue };
            let (day, month) = usage.spent(at);
            spend.day_pico_usd = spend.day_pico_usd.saturating_add(day);
            spend.month_pico_usd = spend.month_pico_usd.saturating_add(month);
            for (model, count) in usage.unpriced_in(at) {
                let total = spend.unpriced.entry(model.clone()).or_default();
                *total = total.saturating_add(*count);
            }
        }
        spend
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn usd_parses_exactly() {
        assert_eq!(Usd("25".into()).micro_usd(), Some(25_000_000));
        assert_eq!(Usd("7.5".into()).micro_usd(), Some(7_500_000));
        assert_eq!(Usd("0.000001".into()).micro_usd(), Some(1));
        assert_eq!(Usd("0.1234567".into()).micro_usd(), None);
        assert_eq!(Usd("-1".into()).micro_usd(), None);
        assert_eq!(Usd("1.".into()).micro_usd(), None);
        assert_eq!(Usd("".into()).micro_usd(), None);
        assert_eq!(Usd("1e3".into()).micro_usd(), None);
    }

    #[test]
    fn spend_sums_the_named_services_of_the_current_windows() {
        use crate::usage::{Delta, ServiceDelta};
        // 2026-11-27T18:00:00Z
        let now = 1_795_802_400;
        let delta = |service: &str, pico: u128, unpriced: &[(&str, u64)]| Delta {
            services: BTreeMap::from([(
                service.to_owned(),
                ServiceDelta {
                    pico_usd: pico,
                    requests: 1,
                    unpriced: unpriced.iter().map(|(m, n)| ((*m).to_owned(), *n)).collect(),
                },
            )]),
        };
        let mut ledger = Ledger::new();
        ledger.apply("a", 1, &delta("team/app", 2_000_000_000_000, &[("x", 2)]), now - 86_400);
        ledger.apply("a", 2, &delta("team/app", 1_000_000_000_000, &[("x", 1)]), now);
        ledger.apply("a", 3, &delta("team/batch", 500_000_000_000, &[("x", 3), ("y", 1)]), now);
        ledger.apply("a", 4, &delta("other/app", 9_000_000_000_000, &[]), now);
        let mut budget = Budget::new(
            "b",
            BudgetSpec {
                services: vec!["app".into(), "batch".into(), "app".into(), "missing".into()],
                daily_usd: Some(Usd("10".into())),
                monthly_usd: None,
                alert_thresholds: default_thresholds(),
                action: BudgetAction::Block,
            },
        );
        budget.metadata.namespace = Some("team".into());
        let spend = budget.spend(&ledger, &Windows::at(now));
        assert_eq!(spend.day_pico_usd, 1_500_000_000_000);
        assert_eq!(spend.month_pico_usd, 3_500_000_000_000);
        assert_eq!(spend.unpriced, BTreeMap::from([("x".to_owned(), 6), ("y".to_owned(), 1)]));
        // Next month: nothing of November counts.
        let december = Windows::at(now + 4 * 86_400);
        assert_eq!(budget.spend(&ledger, &december), BudgetSpend::default());
    }
}
