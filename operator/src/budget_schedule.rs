//! When to re-evaluate the Budgets between compilations: after the usage ledger changed (the
//! gateways rewrite it every few seconds, so evaluations are spaced by an interval), and just
//! after midnight UTC, when a day (and maybe a month) window resets even if nobody spends.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use tokio::time::Instant;
use uprox_crds::usage::Windows;

/// A little after the reset, so the clock is surely in the new window.
const RESET_MARGIN: Duration = Duration::from_secs(1);

/// The next Budget evaluation.
#[derive(Clone, Debug)]
pub struct BudgetSchedule {
    /// Evaluations after ledger changes are at least this far apart.
    interval: Duration,
    /// A ledger change is evaluated no sooner than this (gateways write in bursts).
    quiet: Duration,
    last: Instant,
    pending: Option<Instant>,
    reset: Instant,
}

impl BudgetSchedule {
    /// A schedule whose last evaluation was `now` (`unix_ms` on the wall clock).
    pub fn new(interval: Duration, quiet: Duration, now: Instant, unix_ms: i64) -> Self {
        Self { interval, quiet, last: now, pending: None, reset: now + until_reset(unix_ms) }
    }

    /// The ledger changed at `now`.
    pub fn ledger_changed(&mut self, now: Instant) {
        if self.pending.is_none() {
            self.pending = Some((now + self.quiet).max(self.last + self.interval));
        }
    }

    /// The Budgets were evaluated at `now` (`unix_ms` on the wall clock).
    pub fn evaluated(&mut self, now: Instant, unix_ms: i64) {
        self.last = now;
        self.pending = None;
        self.reset = now + until_reset(unix_ms);
    }

    /// When to evaluate next.
    pub fn due(&self) -> Instant {
        self.pending.map_or(self.reset, |p| p.min(self.reset))
    }
}

/// Milliseconds since the Unix epoch on the wall clock.
pub fn unix_ms_now() -> i64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}

/// How long from `unix_ms` until just after the next midnight UTC.
fn until_reset(unix_ms: i64) -> Duration {
    let reset_ms = Windows::at(unix_ms.div_euclid(1000)).day_resets_at() * 1000;
    Duration::from_millis(u64::try_from(reset_ms - unix_ms).unwrap_or(0)) + RESET_MARGIN
}

#[cfg(test)]
mod tests {
    use super::*;

    /// 2026-11-27T23:59:58Z.
    const LATE: i64 = 1_795_823_998_000;

    #[test]
    fn midnight_is_due_even_when_the_ledger_is_quiet() {
        let start = Instant::now();
        let schedule = BudgetSchedule::new(Duration::from_secs(2), Duration::from_millis(200), start, LATE);
        assert_eq!(schedule.due(), start + Duration::from_secs(3));
    }

    #[test]
    fn ledger_changes_are_spaced_by_the_interval() {
        let start = Instant::now();
        let noon = LATE - 12 * 3_600_000;
        let mut schedule = BudgetSchedule::new(Duration::from_secs(2), Duration::from_millis(200), start, noon);
        schedule.ledger_changed(start + Duration::from_millis(100));
        assert_eq!(schedule.due(), start + Duration::from_secs(2), "not sooner than the interval");
        schedule.ledger_changed(start + Duration::from_millis(1900));
        assert_eq!(schedule.due(), start + Duration::from_secs(2), "a burst is one evaluation");
        schedule.evaluated(start + Duration::from_secs(2), noon + 2000);
        schedule.ledger_changed(start + Duration::from_secs(10));
        assert_eq!(schedule.due(), start + Duration::from_millis(10_200), "a lone change waits only the quiet time");
    }
}
