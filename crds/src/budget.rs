//! The `Budget` resource: daily and monthly USD ceilings (UTC calendar windows) over the spend
//! of one or more Services in its namespace, with alert thresholds and a block-or-alert action.

use kube::{CustomResource, KubeSchema};
use serde::{Deserialize, Serialize};

use crate::conditions::Condition;

/// A USD amount written as a decimal string with at most six decimals, e.g. `"25"` or `"0.50"`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(transparent)]
pub struct Usd(#[schemars(regex(pattern = r"^[0-9]{1,9}(\.[0-9]{1,6})?$"))] pub String);

impl Usd {
    /// The amount in micro-USD, or `None` when the text is not a decimal of the allowed shape.
    pub fn micro_usd(&self) -> Option<u64> {
        let (whole, frac) = match self.0.split_once('.') {
            // "1." has a point but no decimals: the schema's pattern refuses it, so must we.
            Some((_, "")) => return None,
            Some((w, f)) => (w, f),
            None => (self.0.as_str(), ""),
        };
        let digits = |s: &str| !s.is_empty() && s.len() <= 9 && s.bytes().all(|b| b.is_ascii_digit());
        if !digits(whole) || (!frac.is_empty() && (frac.len() > 6 || !frac.bytes().all(|b| b.is_ascii_digit()))) {
            return None;
        }
        let whole: u64 = whole.parse().ok()?;
        let mut micro_frac: u64 = if frac.is_empty() { 0 } else { frac.parse().ok()? };
        for _ in frac.len()..6 {
            micro_frac *= 10;
        }
        whole.checked_mul(1_000_000)?.checked_add(micro_frac)
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
    printcolumn(name = "Daily", type_ = "string", json_path = ".spec.dailyUSD"),
    printcolumn(name = "Spent today", type_ = "string", json_path = ".status.dailySpendUSD"),
    printcolumn(name = "Monthly", type_ = "string", json_path = ".spec.monthlyUSD"),
    printcolumn(name = "Spent this month", type_ = "string", json_path = ".status.monthlySpendUSD"),
    printcolumn(name = "Action", type_ = "string", json_path = ".spec.action"),
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
    /// Percentages of a ceiling at which an alert (a Kubernetes Event and a metric) fires.
    /// Default `[80, 100]`.
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
    /// USD spent in the current UTC day.
    #[serde(default, rename = "dailySpendUSD", skip_serializing_if = "Option::is_none")]
    pub daily_spend_usd: Option<String>,
    /// USD spent in the current UTC month.
    #[serde(default, rename = "monthlySpendUSD", skip_serializing_if = "Option::is_none")]
    pub monthly_spend_usd: Option<String>,
    /// `Ready`, and `ReferencesResolved`.
    #[serde(default)]
    pub conditions: Vec<Condition>,
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
}
