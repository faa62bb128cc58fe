//! Budgets: USD parsing, ceilings, thresholds, the action, and the Services they name.

use super::fixtures::*;
use super::world::World;
use crate::common::ObjectId;
use crate::compile::Severity;
use crate::conditions::reason;
use crate::config::BudgetConfig;

fn world() -> World {
    World::new().service(service("a", "app")).provider(ProviderBuilder::mock("a", "p"))
}

#[test]
fn amounts_are_parsed_to_micro_usd() {
    let out = world().budget(budget("a", "b", ["app"]).daily("7.5").monthly("120")).compile();
    assert!(out.diagnostics.is_empty(), "{:#?}", out.diagnostics);
    assert_eq!(
        out.budget("a", "b"),
        Some(&BudgetConfig {
            id: ObjectId::new("a", "b"),
            daily_micro_usd: Some(7_500_000),
            monthly_micro_usd: Some(120_000_000),
            alert_thresholds: vec![80, 100],
            block: true,
        })
    );
}

#[test]
fn either_ceiling_alone_is_enough() {
    let out = world()
        .budget(budget("a", "day", ["app"]).daily("0.000001"))
        .budget(budget("a", "month", ["app"]).monthly("1"))
        .compile();
    assert_eq!(out.budget("a", "day").map(|b| (b.daily_micro_usd, b.monthly_micro_usd)), Some((Some(1), None)));
    assert_eq!(
        out.budget("a", "month").map(|b| (b.daily_micro_usd, b.monthly_micro_usd)),
        Some((None, Some(1_000_000)))
    );
}

#[test]
fn a_budget_without_a_ceiling_is_excluded() {
    let out = world().budget(budget("a", "b", ["app"])).compile();
    assert_eq!(out.budget("a", "b"), None);
    let d = out.only_diagnostic();
    assert_eq!((d.kind, d.reason, d.severity), ("Budget", reason::INVALID_SPEC, Severity::Error));
    assert!(d.message.contains("spec.dailyUSD, spec.monthlyUSD or both"), "{d}");
}

#[test]
fn an_unparseable_amount_names_the_field_and_the_shape() {
    for (builder, field) in [
        (budget("a", "b", ["app"]).daily("1e3").monthly("10"), "spec.dailyUSD"),
        (budget("a", "b", ["app"]).monthly("0.1234567"), "spec.monthlyUSD"),
        (budget("a", "b", ["app"]).daily("-5"), "spec.dailyUSD"),
    ] {
        let out = world().budget(builder).compile();
        assert_eq!(out.budget("a", "b"), None);
        let d = out.only_diagnostic();
        assert_eq!(d.reason, reason::INVALID_SPEC);
        assert!(d.message.contains(field) && d.message.contains("for example \"25\""), "{d}");
    }
}

#[test]
fn thresholds_are_sorted_and_deduplicated() {
    let out = world().budget(budget("a", "b", ["app"]).daily("1").thresholds([100, 50, 90, 50])).compile();
    assert_eq!(out.budget("a", "b").map(|b| b.alert_thresholds.clone()), Some(vec![50, 90, 100]));
}

#[test]
fn thresholds_outside_one_to_a_hundred_are_dropped_but_the_ceiling_stays() {
    let out = world().budget(budget("a", "b", ["app"]).daily("1").thresholds([0, 80, 150])).compile();
    let Some(b) = out.budget("a", "b") else { panic!("{:#?}", out.diagnostics) };
    assert_eq!(b.alert_thresholds, vec![80]);
    assert_eq!(b.daily_micro_usd, Some(1_000_000));
    let d = out.only_diagnostic();
    assert_eq!((d.reason, d.severity), (reason::INVALID_SPEC, Severity::Error));
    assert!(d.message.contains("0, 150"), "{d}");
}

#[test]
fn the_alert_action_does_not_block() {
    let out = world().budget(budget("a", "b", ["app"]).daily("1").alert()).compile();
    assert_eq!(out.budget("a", "b").map(|b| b.block), Some(false));
}

#[test]
fn unknown_services_are_warned_about_and_the_budget_kept() {
    let out = world().budget(budget("a", "b", ["app", "ghost"]).daily("1")).compile();
    assert!(out.budget("a", "b").is_some());
    let d = out.only_diagnostic();
    assert_eq!((d.reason, d.severity), (reason::SERVICE_NOT_FOUND, Severity::Warning));
    assert!(d.message.contains("Service a/ghost"), "{d}");
}

#[test]
fn services_of_another_namespace_do_not_count() {
    let out = world().budget(budget("b", "b", ["app"]).daily("1")).compile();
    assert_eq!(out.only_diagnostic().reason, reason::SERVICE_NOT_FOUND);
    assert!(out.service("a", "app").budgets.is_empty());
}

#[test]
fn a_budget_counting_nothing_is_warned_about() {
    let out = world().budget(budget("a", "b", []).daily("1")).compile();
    assert!(out.budget("a", "b").is_some());
    assert_eq!(out.only_diagnostic().severity, Severity::Warning);
}
