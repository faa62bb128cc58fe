//! What a Budget's status says about money: a pure function from the Budget, the status it is
//! to extend (its `Ready` and `ReferencesResolved` come from the compilation), the usage ledger
//! and the clock, to the status with spend, percent, reset times, alert levels and the
//! `Warning`, `Exceeded`, `Priced` and `SpendKnown` conditions — and the Events to send.
//!
//! **Alert levels.** The thresholds of `spec.alertThresholds` from 1 to 100, and always 100
//! (the ceiling). A level reached in a window is recorded in `status.alerts` with the window's
//! period (`2026-11-27`, `2026-11`) and announced by one Event, so it is announced once per
//! window even across operator restarts. Records of past periods are dropped. When several
//! levels are reached at once, one Event names the highest; a level below one already recorded
//! (a threshold added later) is recorded without an Event.
//!
//! Enforcement is the gateway's: this module only reports.

use std::collections::{BTreeMap, BTreeSet};

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::runtime::events::{Event, EventType};
use uprox_crds::budget::{BudgetAction, Threshold};
use uprox_crds::conditions::{self, EXCEEDED, PRICED, SPEND_KNOWN, WARNING, reason};
use uprox_crds::prices::{Cost, PICO_PER_MICRO};
use uprox_crds::usage::{Windows, rfc3339};
use uprox_crds::{Budget, BudgetAlert, BudgetSpend, BudgetStatus, BudgetWindow};

use crate::ledger::LedgerRead;

/// The status to write and what to announce.
pub struct Evaluation {
    /// The whole status.
    pub status: BudgetStatus,
    /// Levels reached for the first time in their window (for the alert counter).
    pub reached: Vec<BudgetAlert>,
    /// Events to send once the status is written.
    pub events: Vec<Event>,
    /// Spend and ceiling per window, for the gauges: `(window, spend USD, ceiling USD)`.
    pub gauges: Vec<(BudgetWindow, f64, Option<f64>)>,
}

/// One window of one Budget.
struct Window {
    window: BudgetWindow,
    period: String,
    spent: u128,
    /// The ceiling in pico-USD and as written.
    limit: Option<(u128, String)>,
    resets_at: String,
}

impl Window {
    fn percent(&self) -> Option<u32> {
        let (limit, _) = self.limit.as_ref()?;
        let percent = if *limit == 0 { 100 } else { self.spent.saturating_mul(100) / limit };
        Some(u32::try_from(percent).unwrap_or(u32::MAX))
    }

    /// Whether spend reached `threshold` percent of the ceiling, exactly.
    fn reached(&self, threshold: Threshold) -> bool {
        self.limit
            .as_ref()
            .is_some_and(|(limit, _)| self.spent.saturating_mul(100) >= limit.saturating_mul(u128::from(threshold)))
    }

    fn exceeded(&self) -> bool {
        self.reached(100)
    }

    fn usage(&self) -> String {
        match (&self.limit, self.percent()) {
            (Some((_, text)), Some(percent)) => format!("{}/${text} ({percent}%)", dollars(self.spent)),
            _ => dollars(self.spent),
        }
    }

    /// "daily spend $8.50 is 85% of the $10 limit" and the like.
    fn describe(&self) -> String {
        let (text, percent) = match (&self.limit, self.percent()) {
            (Some((_, text)), Some(percent)) => (text.as_str(), percent),
            _ => return format!("{} spend is {}", self.window.as_str(), dollars(self.spent)),
        };
        format!("{} spend {} is {percent}% of the ${text} limit", self.window.as_str(), dollars(self.spent))
    }

    /// "daily spend $10.20 reached the $10 limit (102%); requests are refused …".
    fn describe_exceeded(&self, action: BudgetAction) -> String {
        let limit = self.limit.as_ref().map_or("0", |(_, text)| text.as_str());
        let percent = self.percent().unwrap_or_default();
        let consequence = match action {
            BudgetAction::Block => format!("requests are refused with HTTP 402 until {}", self.resets_at),
            BudgetAction::Alert => {
                format!("requests are still served (action Alert); the window resets at {}", self.resets_at)
            }
        };
        format!(
            "{} spend {} reached the ${limit} limit ({percent}%); {consequence}",
            self.window.as_str(),
            dollars(self.spent)
        )
    }
}

/// `$3.20`: USD rounded to cents, for people.
fn dollars(pico_usd: u128) -> String {
    format!("${}", Cost::from_pico_usd(pico_usd).usd_rounded(2))
}

/// The alert levels of a Budget: its valid thresholds and the ceiling, ascending.
fn levels(budget: &Budget) -> BTreeSet<Threshold> {
    budget.spec.alert_thresholds.iter().copied().filter(|t| (1..=100).contains(t)).chain([100]).collect()
}

/// Evaluates `budget` against `ledger` at `now`, extending `base`. `remembered` are alert
/// levels this operator recorded that its view of the Budget may not show yet.
pub fn evaluate(
    budget: &Budget,
    base: BudgetStatus,
    ledger: &LedgerRead,
    location: &str,
    remembered: &[BudgetAlert],
    now: &Time,
) -> Evaluation {
    let at = Windows::at(now.0.as_second());
    let spend = match ledger {
        LedgerRead::Read(ledger) => budget.spend(ledger, &at),
        LedgerRead::Absent | LedgerRead::Unreadable(_) => BudgetSpend::default(),
    };
    let ceiling = |usd: Option<&uprox_crds::budget::Usd>| {
        usd.and_then(|u| Some((u128::from(u.micro_usd()?) * PICO_PER_MICRO, u.0.clone())))
    };
    let windows = [
        Window {
            window: BudgetWindow::Daily,
            period: at.day_key(),
            spent: spend.day_pico_usd,
            limit: ceiling(budget.spec.daily_usd.as_ref()),
            resets_at: rfc3339(at.day_resets_at()),
        },
        Window {
            window: BudgetWindow::Monthly,
            period: at.month_key(),
            spent: spend.month_pico_usd,
            limit: ceiling(budget.spec.monthly_usd.as_ref()),
            resets_at: rfc3339(at.month_resets_at()),
        },
    ];
    let generation = budget.metadata.generation;
    let action = budget.spec.action;

    let current = |a: &BudgetAlert| windows.iter().any(|w| w.window == a.window && w.period == a.period);
    let known: BTreeSet<BudgetAlert> = base.alerts.iter().chain(remembered).filter(|a| current(a)).cloned().collect();
    let levels = levels(budget);
    let (alerts, reached, events) = announce(&windows, &levels, known, action);

    let mut conds = base.conditions.clone();
    for (type_, ok, why, message) in
        [warning(&windows, &levels), exceeded(&windows, action), priced(&spend.unpriced), spend_known(ledger, location)]
    {
        conditions::upsert(&mut conds, conditions::new(type_, ok, why, message, generation, now.clone()));
    }

    let usd = |pico: u128| Cost::from_pico_usd(pico).usd_rounded(6);
    let as_f64 = |pico: u128| pico as f64 / 1e12;
    let gauges =
        windows.iter().map(|w| (w.window, as_f64(w.spent), w.limit.as_ref().map(|(l, _)| as_f64(*l)))).collect();
    let [daily, monthly] = &windows;
    let status = BudgetStatus {
        daily_spend_usd: Some(usd(daily.spent)),
        monthly_spend_usd: Some(usd(monthly.spent)),
        daily_percent: daily.percent(),
        monthly_percent: monthly.percent(),
        daily_resets_at: Some(daily.resets_at.clone()),
        monthly_resets_at: Some(monthly.resets_at.clone()),
        daily_usage: Some(daily.usage()),
        monthly_usage: Some(monthly.usage()),
        alerts: alerts.into_iter().collect(),
        conditions: conds,
        ..base
    };
    Evaluation { status, reached, events, gauges }
}

/// A condition as `(type, ok, reason, message)`.
type Verdict = (&'static str, bool, &'static str, String);

/// The levels reached for the first time in their window, recorded with those already
/// `known`; one Event per window for the highest, unless a higher one was announced already.
/// Returns every record of the current windows, the new ones, and the Events.
fn announce(
    windows: &[Window],
    levels: &BTreeSet<Threshold>,
    known: BTreeSet<BudgetAlert>,
    action: BudgetAction,
) -> (BTreeSet<BudgetAlert>, Vec<BudgetAlert>, Vec<Event>) {
    let mut alerts = known.clone();
    let mut reached = Vec::new();
    let mut events = Vec::new();
    for w in windows {
        let record = |threshold| BudgetAlert { window: w.window, period: w.period.clone(), threshold };
        let fresh: Vec<BudgetAlert> =
            levels.iter().filter(|t| w.reached(**t)).map(|t| record(*t)).filter(|a| !known.contains(a)).collect();
        let highest_known = known.iter().filter(|a| a.window == w.window).map(|a| a.threshold).max();
        if let Some(top) = fresh.iter().map(|a| a.threshold).max()
            && highest_known.is_none_or(|h| top > h)
        {
            events.push(alert_event(w, top, action));
        }
        alerts.extend(fresh.iter().cloned());
        reached.extend(fresh);
    }
    (alerts, reached, events)
}

/// `Warning`: a window reached a threshold below its ceiling, but not the ceiling.
fn warning(windows: &[Window], levels: &BTreeSet<Threshold>) -> Verdict {
    let warned: Vec<String> = windows
        .iter()
        .filter(|w| !w.exceeded())
        .filter_map(|w| {
            let top = levels.iter().rev().find(|t| **t < 100 && w.reached(**t))?;
            Some(format!("{} (alert threshold {top}%); resets at {}", w.describe(), w.resets_at))
        })
        .collect();
    if warned.is_empty() {
        let message = "no window has reached an alert threshold below its ceiling".to_owned();
        (WARNING, false, reason::BELOW_THRESHOLDS, message)
    } else {
        (WARNING, true, reason::THRESHOLD_REACHED, warned.join("; "))
    }
}

/// `Exceeded`: a window's spend reached its ceiling.
fn exceeded(windows: &[Window], action: BudgetAction) -> Verdict {
    let exceeded: Vec<String> = windows.iter().filter(|w| w.exceeded()).map(|w| w.describe_exceeded(action)).collect();
    if exceeded.is_empty() {
        (EXCEEDED, false, reason::WITHIN_LIMITS, "every window is below its ceiling".to_owned())
    } else {
        (EXCEEDED, true, reason::LIMIT_REACHED, exceeded.join("; "))
    }
}

/// `Priced`: false when requests this month went to models without a price.
fn priced(unpriced: &BTreeMap<String, u64>) -> Verdict {
    if unpriced.is_empty() {
        return (PRICED, true, reason::PRICED, "every request counted this month had a price".to_owned());
    }
    let total: u64 = unpriced.values().sum();
    let models: Vec<String> = unpriced.iter().map(|(m, n)| format!("{m} ({n})")).collect();
    let message = format!(
        "{total} requests this month went to models without a price and were counted at $0: {}; add spec.prices \
         for these models on their Provider so that they count against this Budget",
        models.join(", ")
    );
    (PRICED, false, reason::UNPRICED_MODELS, message)
}

/// `SpendKnown`: whether the ledger could be read.
fn spend_known(ledger: &LedgerRead, location: &str) -> Verdict {
    match ledger {
        LedgerRead::Read(_) => {
            (SPEND_KNOWN, true, reason::LEDGER_READ, format!("spend read from the usage ledger ConfigMap {location}"))
        }
        LedgerRead::Absent => (
            SPEND_KNOWN,
            true,
            reason::NO_USAGE_YET,
            format!(
                "no usage recorded yet: the usage ledger ConfigMap {location} is written once a gateway costs a request"
            ),
        ),
        LedgerRead::Unreadable(error) => (
            SPEND_KNOWN,
            false,
            reason::LEDGER_UNREADABLE,
            format!(
                "the usage ledger ConfigMap {location} cannot be read ({error}); spend shows $0 until a gateway writes it again"
            ),
        ),
    }
}

/// The Event announcing that window `w` reached level `threshold`.
fn alert_event(w: &Window, threshold: Threshold, action: BudgetAction) -> Event {
    let (why, note) = if threshold >= 100 {
        (reason::BUDGET_EXCEEDED, w.describe_exceeded(action))
    } else {
        (
            reason::BUDGET_THRESHOLD,
            format!("{} (alert threshold {threshold}%); the window resets at {}", w.describe(), w.resets_at),
        )
    };
    Event {
        type_: EventType::Warning,
        reason: why.to_owned(),
        note: Some(note),
        action: "EvaluateBudget".to_owned(),
        secondary: None,
    }
}

#[cfg(test)]
mod tests;
