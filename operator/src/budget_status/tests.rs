#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeMap;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;
use k8s_openapi::jiff::Timestamp;
use uprox_crds::BudgetSpec;
use uprox_crds::budget::Usd;
use uprox_crds::usage::{Delta, Ledger, ServiceDelta};

use super::*;

/// 2026-11-27T18:00:00Z.
const NOW: i64 = 1_795_802_400;
const DAY: i64 = 86_400;
const USD: u128 = 1_000_000_000_000;
const LEDGER: &str = "uprox-system/uprox-usage";

fn at(secs: i64) -> Time {
    Time(Timestamp::from_second(secs).unwrap())
}

fn budget(daily: Option<&str>, monthly: Option<&str>) -> Budget {
    let mut b = Budget::new(
        "team-budget",
        BudgetSpec {
            services: vec!["app".into()],
            daily_usd: daily.map(|d| Usd(d.into())),
            monthly_usd: monthly.map(|m| Usd(m.into())),
            alert_thresholds: vec![80, 100],
            action: BudgetAction::Block,
        },
    );
    b.metadata.namespace = Some("team".into());
    b.metadata.generation = Some(1);
    b
}

/// A ledger where `team/app` spent `pico` at `when`, with `unpriced` requests.
fn ledger(pico: u128, when: i64, unpriced: &[(&str, u64)]) -> LedgerRead {
    let mut ledger = Ledger::new();
    let service = ServiceDelta {
        pico_usd: pico,
        requests: 1,
        unpriced: unpriced.iter().map(|(m, n)| ((*m).to_owned(), *n)).collect(),
    };
    let delta = Delta { services: BTreeMap::from([("team/app".to_owned(), service)]) };
    ledger.apply("gw-0", 1, &delta, when);
    LedgerRead::Read(ledger)
}

fn run(b: &Budget, usage: &LedgerRead, now: i64) -> Evaluation {
    evaluate(b, b.status.clone().unwrap_or_default(), usage, LEDGER, &[], &at(now))
}

/// Evaluates, then stores the status on the Budget as a write would.
fn step(b: &mut Budget, usage: &LedgerRead, now: i64) -> Evaluation {
    let e = run(b, usage, now);
    b.status = Some(e.status.clone());
    e
}

fn condition<'a>(s: &'a BudgetStatus, type_: &str) -> &'a Condition {
    s.conditions.iter().find(|c| c.type_ == type_).unwrap_or_else(|| panic!("no {type_} in {:?}", s.conditions))
}

fn reasons(e: &Evaluation) -> Vec<&str> {
    e.events.iter().map(|e| e.reason.as_str()).collect()
}

#[test]
fn spend_percent_and_resets_read_as_people_expect() {
    let b = budget(Some("10"), None);
    let e = run(&b, &ledger(3_209_999 * 1_000_000, NOW, &[]), NOW);
    let s = &e.status;
    assert_eq!(s.daily_spend_usd.as_deref(), Some("3.209999"));
    assert_eq!(s.monthly_spend_usd.as_deref(), Some("3.209999"));
    assert_eq!(s.daily_percent, Some(32), "percent is rounded down");
    assert_eq!(s.monthly_percent, None, "no monthly ceiling, no percent");
    assert_eq!(s.daily_usage.as_deref(), Some("$3.21/$10 (32%)"));
    assert_eq!(s.monthly_usage.as_deref(), Some("$3.21"));
    assert_eq!(s.daily_resets_at.as_deref(), Some("2026-11-28T00:00:00Z"));
    assert_eq!(s.monthly_resets_at.as_deref(), Some("2026-12-01T00:00:00Z"));
    assert_eq!(condition(s, WARNING).status, "False");
    assert_eq!(condition(s, EXCEEDED).status, "False");
    assert_eq!(condition(s, PRICED).status, "True");
    assert_eq!(condition(s, SPEND_KNOWN).reason, reason::LEDGER_READ);
    assert!(e.events.is_empty() && s.alerts.is_empty());
    assert_eq!(e.gauges, [(BudgetWindow::Daily, 3.209_999, Some(10.0)), (BudgetWindow::Monthly, 3.209_999, None)]);
}

#[test]
fn a_threshold_warns_once_and_the_ceiling_exceeds_once() {
    let mut b = budget(Some("10"), Some("300"));
    let e = step(&mut b, &ledger(8 * USD, NOW, &[]), NOW);
    assert_eq!(reasons(&e), [reason::BUDGET_THRESHOLD]);
    let note = e.events[0].note.clone().unwrap();
    assert!(note.contains("daily spend $8.00 is 80% of the $10 limit"), "{note}");
    assert!(note.contains("2026-11-28T00:00:00Z"), "{note}");
    let warning = condition(&e.status, WARNING);
    assert_eq!((warning.status.as_str(), warning.reason.as_str()), ("True", reason::THRESHOLD_REACHED));
    assert_eq!(condition(&e.status, EXCEEDED).status, "False");
    assert_eq!(
        e.status.alerts,
        [BudgetAlert { window: BudgetWindow::Daily, period: "2026-11-27".into(), threshold: 80 }]
    );

    // More spend below the ceiling: nothing new to announce.
    let e = step(&mut b, &ledger(9 * USD, NOW, &[]), NOW + 60);
    assert!(e.events.is_empty(), "{:?}", reasons(&e));

    // The ceiling: Exceeded, Warning no longer, one Event saying what happens.
    let e = step(&mut b, &ledger(10 * USD + USD / 5, NOW, &[]), NOW + 120);
    assert_eq!(reasons(&e), [reason::BUDGET_EXCEEDED]);
    let exceeded = condition(&e.status, EXCEEDED);
    assert_eq!((exceeded.status.as_str(), exceeded.reason.as_str()), ("True", reason::LIMIT_REACHED));
    for text in [&exceeded.message, e.events[0].note.as_ref().unwrap()] {
        assert!(text.contains("daily spend $10.20 reached the $10 limit (102%)"), "{text}");
        assert!(text.contains("refused with HTTP 402 until 2026-11-28T00:00:00Z"), "{text}");
    }
    assert_eq!(condition(&e.status, WARNING).status, "False");
    assert_eq!(e.status.daily_percent, Some(102));
    assert_eq!(e.status.monthly_percent, Some(3));

    // Further passes, same day: silence, and the same status (no patch).
    let again = step(&mut b, &ledger(11 * USD, NOW, &[]), NOW + 180);
    assert!(again.events.is_empty());
    let same = run(&b, &ledger(11 * USD, NOW, &[]), NOW + 240);
    assert_eq!(Some(&same.status), b.status.as_ref(), "a later clock alone must not change the status");
}

#[test]
fn the_alert_action_says_requests_are_still_served() {
    let mut b = budget(None, Some("50"));
    b.spec.action = BudgetAction::Alert;
    let e = run(&b, &ledger(50 * USD, NOW, &[]), NOW);
    let message = &condition(&e.status, EXCEEDED).message;
    assert!(message.contains("monthly spend $50.00 reached the $50 limit (100%)"), "{message}");
    assert!(message.contains("still served") && message.contains("2026-12-01T00:00:00Z"), "{message}");
    assert_eq!(reasons(&e), [reason::BUDGET_EXCEEDED]);
}

#[test]
fn several_levels_at_once_make_one_event_and_every_record() {
    let b = budget(Some("10"), None);
    let e = run(&b, &ledger(12 * USD, NOW, &[]), NOW);
    assert_eq!(reasons(&e), [reason::BUDGET_EXCEEDED]);
    let thresholds: Vec<u8> = e.status.alerts.iter().map(|a| a.threshold).collect();
    assert_eq!(thresholds, [80, 100]);
    assert_eq!(e.reached.len(), 2);
}

#[test]
fn a_threshold_added_below_a_recorded_level_is_recorded_silently() {
    let mut b = budget(Some("10"), None);
    step(&mut b, &ledger(9 * USD, NOW, &[]), NOW);
    b.spec.alert_thresholds = vec![50, 80, 100];
    let e = step(&mut b, &ledger(9 * USD, NOW, &[]), NOW + 60);
    assert!(e.events.is_empty());
    assert_eq!(e.status.alerts.len(), 2);
}

#[test]
fn alerts_fire_again_in_the_next_window_and_old_records_are_dropped() {
    let mut b = budget(Some("10"), Some("1000"));
    let e = step(&mut b, &ledger(8 * USD, NOW, &[]), NOW);
    assert_eq!(e.events.len(), 1);
    // Tomorrow: yesterday's spend reads as 0 and its record is dropped.
    let quiet = step(&mut b, &ledger(8 * USD, NOW, &[]), NOW + DAY);
    assert_eq!(quiet.status.daily_spend_usd.as_deref(), Some("0.000000"));
    assert_eq!(quiet.status.monthly_spend_usd.as_deref(), Some("8.000000"), "the month still counts it");
    assert!(quiet.status.alerts.is_empty());
    assert_eq!(quiet.status.daily_resets_at.as_deref(), Some("2026-11-29T00:00:00Z"));
    assert!(quiet.events.is_empty());
    // Spend again tomorrow: the daily 80% level is announced again.
    let e = step(&mut b, &ledger(8 * USD, NOW + DAY, &[]), NOW + DAY + 60);
    assert_eq!(reasons(&e), [reason::BUDGET_THRESHOLD]);
    assert_eq!(e.status.alerts[0].period, "2026-11-28");
}

#[test]
fn a_previous_month_reads_as_zero() {
    let b = budget(Some("10"), Some("100"));
    let e = run(&b, &ledger(90 * USD, NOW - 30 * DAY, &[("x", 1)]), NOW);
    assert_eq!(e.status.daily_spend_usd.as_deref(), Some("0.000000"));
    assert_eq!(e.status.monthly_spend_usd.as_deref(), Some("0.000000"));
    assert_eq!(e.status.monthly_percent, Some(0));
    assert_eq!(condition(&e.status, PRICED).status, "True", "last month's unpriced models do not count");
    assert!(e.events.is_empty());
}

#[test]
fn remembered_alerts_are_not_announced_again() {
    let b = budget(Some("10"), None);
    let usage = ledger(8 * USD, NOW, &[]);
    let first = run(&b, &usage, NOW);
    assert_eq!(first.events.len(), 1);
    // The write succeeded but this operator's view of the Budget does not show it yet.
    let again = evaluate(&b, BudgetStatus::default(), &usage, LEDGER, &first.status.alerts, &at(NOW + 5));
    assert!(again.events.is_empty());
    assert_eq!(again.status.alerts, first.status.alerts);
}

#[test]
fn unpriced_models_make_priced_false_with_the_fix() {
    let b = budget(Some("10"), None);
    let e = run(&b, &ledger(USD, NOW, &[("gpt-mystery", 12), ("local-llm", 3)]), NOW);
    let priced = condition(&e.status, PRICED);
    assert_eq!((priced.status.as_str(), priced.reason.as_str()), ("False", reason::UNPRICED_MODELS));
    assert!(priced.message.contains("gpt-mystery (12), local-llm (3)"), "{}", priced.message);
    assert!(priced.message.contains("15 requests") && priced.message.contains("spec.prices"), "{}", priced.message);
}

#[test]
fn a_missing_or_broken_ledger_reads_as_zero_and_says_so() {
    let b = budget(Some("10"), None);
    let e = run(&b, &LedgerRead::Absent, NOW);
    assert_eq!(e.status.daily_spend_usd.as_deref(), Some("0.000000"));
    let known = condition(&e.status, SPEND_KNOWN);
    assert_eq!((known.status.as_str(), known.reason.as_str()), ("True", reason::NO_USAGE_YET));

    let e = run(&b, &LedgerRead::Unreadable("the usage ledger does not parse: eof".into()), NOW);
    assert_eq!(e.status.daily_spend_usd.as_deref(), Some("0.000000"));
    let known = condition(&e.status, SPEND_KNOWN);
    assert_eq!((known.status.as_str(), known.reason.as_str()), ("False", reason::LEDGER_UNREADABLE));
    assert!(known.message.contains(LEDGER) && known.message.contains("does not parse"), "{}", known.message);
}

#[test]
fn a_zero_ceiling_is_reached_at_once() {
    let b = budget(Some("0"), None);
    let e = run(&b, &LedgerRead::Absent, NOW);
    assert_eq!(e.status.daily_percent, Some(100));
    assert_eq!(condition(&e.status, EXCEEDED).status, "True");
}

#[test]
fn the_compiled_conditions_are_kept() {
    let b = budget(Some("10"), None);
    let ready = conditions::new(conditions::READY, true, reason::COMPILED, "in the compiled config", Some(1), at(0));
    let base =
        BudgetStatus { observed_generation: Some(1), conditions: vec![ready.clone()], ..BudgetStatus::default() };
    let e = evaluate(&b, base, &LedgerRead::Absent, LEDGER, &[], &at(NOW));
    assert_eq!(e.status.conditions[0], ready);
    assert_eq!(e.status.observed_generation, Some(1));
}
