//! Budget checks: before a request goes upstream, every Budget counting its Service is
//! compared with the spend of its current UTC day and month — the shared ledger's view, this
//! replica's unwritten spend and the estimates reserved by requests in flight.
//!
//! A `Block` Budget at or over a ceiling refuses the request with HTTP 402
//! `insufficient_quota` naming the Budget, the window and when it resets. An `Alert` Budget
//! over its ceiling, and any Budget past its lowest alert threshold, lets the request through
//! with an `x-uprox-budget-warning` header saying so.
//!
//! The check reads atomics only: for each Budget of the Service, the meters of its Services.
//! [`admit`] also reserves the request's estimate in each Budget; a `Block` Budget reserves only
//! while what is spent and reserved stays below its ceilings, decided by one compare-and-swap
//! with the other requests' reservations, so two requests cannot both take a Budget's last
//! dollar.

use std::sync::Arc;

use http::HeaderValue;
use uprox_crds::common::ObjectId;
use uprox_crds::config::BudgetConfig;
use uprox_crds::prices::{Cost, PICO_PER_MICRO};
use uprox_crds::usage::{Windows, rfc3339};

use super::state::BudgetMeter;
use crate::snapshot::Snapshot;

/// The response header that carries a budget warning.
pub static WARNING_HEADER: http::HeaderName = http::HeaderName::from_static("x-uprox-budget-warning");

/// One Budget in a snapshot.
#[derive(Debug)]
pub struct BudgetEntry {
    /// Its compiled config.
    pub config: BudgetConfig,
    /// Its reservations, kept across snapshots.
    pub meter: Arc<BudgetMeter>,
    /// Indices into [`Snapshot::services`] of the Services it counts.
    pub services: Box<[usize]>,
}

/// Which ceiling.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Window {
    /// The UTC calendar day.
    Daily,
    /// The UTC calendar month.
    Monthly,
}

impl Window {
    fn name(self) -> &'static str {
        match self {
            Window::Daily => "daily",
            Window::Monthly => "monthly",
        }
    }
}

/// A Block Budget's ceiling is reached.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Exceeded {
    /// The Budget.
    pub budget: ObjectId,
    /// Which ceiling.
    pub window: Window,
    /// Spent (with reservations), pico-USD.
    pub spent_pico: u128,
    /// The ceiling, micro-USD.
    pub limit_micro: u64,
    /// When the window resets, Unix seconds.
    pub resets_at: i64,
}

impl Exceeded {
    /// What to tell the caller: refused (`Block`) or served anyway (`Alert`).
    fn message(&self, blocked: bool) -> String {
        let consequence =
            if blocked { "requests are refused until it resets" } else { "serving anyway (action Alert); it resets" };
        format!(
            "Budget {} has reached its {} limit of ${} (${} spent or reserved); {consequence} at {}",
            self.budget,
            self.window.name(),
            usd_micro(self.limit_micro),
            Cost::from_pico_usd(self.spent_pico).usd_rounded(2),
            rfc3339(self.resets_at),
        )
    }
}

impl std::fmt::Display for Exceeded {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.message(true))
    }
}

fn usd_micro(micro: u64) -> String {
    Cost::from_pico_usd(u128::from(micro) * PICO_PER_MICRO).usd()
}

/// Checks every Budget of Service `service` at `now` (Unix seconds) without reserving.
/// `Ok(Some(_))` is a warning to send with the answer.
pub fn check(snapshot: &Snapshot, service: usize, now: i64) -> Result<Option<HeaderValue>, Box<Exceeded>> {
    admit(snapshot, service, now, 0)
}

/// Checks every Budget of Service `service` at `now` (Unix seconds) and reserves `pico` in each
/// (see the module documentation). `Err` when a `Block` Budget is spent, with nothing reserved;
/// `Ok(Some(_))` is a warning to send with the answer.
pub fn admit(snapshot: &Snapshot, service: usize, now: i64, pico: u64) -> Result<Option<HeaderValue>, Box<Exceeded>> {
    let Some(entry) = snapshot.services.get(service) else { return Ok(None) };
    if entry.budgets.is_empty() {
        return Ok(None);
    }
    let at = Windows::at(now);
    let mut warning = None;
    for (n, &b) in entry.budgets.iter().enumerate() {
        let budget = &snapshot.budgets[b];
        let (mut day, mut month) = (0u128, 0u128);
        for &s in budget.services.iter() {
            let (d, m) = snapshot.services[s].meter.spent(&at);
            day += d;
            month += m;
        }
        let below = |limit: Option<u64>, spent: u128| limit.is_none_or(|l| spent < u128::from(l) * PICO_PER_MICRO);
        let mut reserved = 0;
        let admitted = budget.meter.try_reserve(pico, |others| {
            reserved = others;
            !budget.config.block
                || (below(budget.config.daily_micro_usd, day + others)
                    && below(budget.config.monthly_micro_usd, month + others))
        });
        if !admitted {
            // Refused: nothing stays reserved (this Budget's was not taken).
            for &earlier in &entry.budgets[..n] {
                snapshot.budgets[earlier].meter.release(pico);
            }
        }
        for (window, spent, limit, resets_at) in [
            (Window::Daily, day + reserved, budget.config.daily_micro_usd, at.day_resets_at()),
            (Window::Monthly, month + reserved, budget.config.monthly_micro_usd, at.month_resets_at()),
        ] {
            let Some(limit) = limit else { continue };
            let limit_pico = u128::from(limit) * PICO_PER_MICRO;
            if spent >= limit_pico {
                let exceeded = Exceeded {
                    budget: budget.config.id.clone(),
                    window,
                    spent_pico: spent,
                    limit_micro: limit,
                    resets_at,
                };
                if !admitted {
                    return Err(Box::new(exceeded));
                }
                warning.get_or_insert_with(|| header(&exceeded.message(false)));
                continue;
            }
            let lowest = budget.config.alert_thresholds.iter().copied().filter(|t| *t < 100).min();
            if let Some(threshold) = lowest
                && spent * 100 >= limit_pico * u128::from(threshold)
            {
                let percent = spent * 100 / limit_pico.max(1);
                warning.get_or_insert_with(|| {
                    header(&format!(
                        "Budget {} is at {percent}% of its {} limit of ${}; it resets at {}",
                        budget.config.id,
                        window.name(),
                        usd_micro(limit),
                        rfc3339(resets_at)
                    ))
                });
            }
        }
    }
    Ok(warning)
}

fn header(text: &str) -> HeaderValue {
    // Budget ids, figures and timestamps are visible ASCII.
    HeaderValue::from_str(text).unwrap_or_else(|_| HeaderValue::from_static("budget threshold reached"))
}
