//! Services and Policies: Provider access across namespaces, routing order, Policy resolution
//! (fail closed), key pins, cache TTL and Budgets.

use super::fixtures::*;
use super::world::World;
use crate::common::{ObjectId, Pattern, Scope};
use crate::compile::Severity;
use crate::conditions::reason;
use crate::config::PolicyConfig;

fn id(namespace: &str, name: &str) -> ObjectId {
    ObjectId::new(namespace, name)
}

/// A mock Provider needs no Secret, which keeps access tests short.
fn mock(namespace: &str, name: &str) -> ProviderBuilder {
    ProviderBuilder::mock(namespace, name)
}

#[test]
fn a_service_reaches_providers_of_its_own_namespace_only_by_default() {
    let out = World::new().provider(mock("a", "p")).provider(mock("b", "q")).service(service("a", "app")).compile();
    assert_eq!(out.service("a", "app").providers, vec![id("a", "p")]);
    assert!(out.diagnostics.is_empty(), "{:#?}", out.diagnostics);
}

#[test]
fn cross_namespace_access_is_denied_without_a_grant() {
    let out = World::new().provider(mock("shared", "p").allowed(["other"])).service(service("team", "app")).compile();
    assert!(out.service("team", "app").providers.is_empty());
    let d = out.only_diagnostic();
    assert_eq!((d.kind, d.reason, d.severity), ("Service", reason::NO_PROVIDERS, Severity::Warning));
    assert!(d.message.contains("spec.allowedNamespaces"), "{d}");
}

#[test]
fn cross_namespace_access_is_granted_explicitly_or_by_star() {
    let out = World::new()
        .provider(mock("shared", "explicit").allowed(["team"]))
        .provider(mock("shared", "star").allowed(["*"]))
        .service(service("team", "app"))
        .compile();
    assert_eq!(out.service("team", "app").providers, vec![id("shared", "explicit"), id("shared", "star")]);
}

#[test]
fn routing_order_is_own_namespace_first_then_by_id() {
    let out = World::new()
        .provider(mock("z", "p").allowed(["*"]))
        .provider(mock("a", "p").allowed(["m"]))
        .provider(mock("m", "y"))
        .provider(mock("m", "x"))
        .service(service("m", "app"))
        .compile();
    assert_eq!(out.service("m", "app").providers, vec![id("m", "x"), id("m", "y"), id("a", "p"), id("z", "p")]);
}

#[test]
fn excluded_providers_are_not_reachable() {
    let out = World::new()
        .provider(ProviderBuilder::openai("a", "broken").key("main", "missing", "k"))
        .provider(mock("a", "ok"))
        .service(service("a", "app"))
        .compile();
    assert_eq!(out.service("a", "app").providers, vec![id("a", "ok")]);
}

#[test]
fn policies_are_compiled_with_plain_limits_even_when_unreferenced() {
    let out = World::new()
        .policy(
            policy("a", "strict").providers(["openai*"]).models(["gpt-4o"]).scopes([Scope::Chat]).limits(60, 10_000, 0),
        )
        .compile();
    assert_eq!(
        out.policy("a", "strict"),
        Some(&PolicyConfig {
            id: id("a", "strict"),
            providers: vec![Pattern::new("openai*")],
            models: vec![Pattern::new("gpt-4o")],
            scopes: vec![Scope::Chat],
            requests_per_minute: Some(60),
            tokens_per_minute: Some(10_000),
            max_concurrent_requests: None,
            ..Default::default()
        })
    );
}

#[test]
fn a_policy_cache_rule_is_compiled() {
    use crate::policy::CacheMode;
    let out = World::new()
        .policy(policy("a", "replay").cache(CacheMode::All, Some(60)))
        .policy(policy("a", "nocache").cache(CacheMode::Off, None))
        .policy(policy("a", "plain"))
        .compile();
    let replay = out.policy("a", "replay").map(|p| (p.cache_mode, p.cache_ttl_seconds));
    assert_eq!(replay, Some((Some(CacheMode::All), Some(60))));
    let off = out.policy("a", "nocache").map(|p| (p.cache_mode, p.cache_ttl_seconds));
    assert_eq!(off, Some((Some(CacheMode::Off), None)));
    assert_eq!(out.policy("a", "plain").map(|p| (p.cache_mode, p.cache_ttl_seconds)), Some((None, None)));
}

#[test]
fn a_service_resolves_its_policies_in_order_without_repeats() {
    let out = World::new()
        .provider(mock("a", "p"))
        .policy(policy("a", "one"))
        .policy(policy("a", "two"))
        .service(service("a", "app").policies(["two", "one", "two"]))
        .compile();
    let s = out.service("a", "app");
    assert_eq!(s.policies, vec![id("a", "two"), id("a", "one")]);
    assert_eq!(s.denied, None);
}

#[test]
fn a_missing_policy_denies_the_service() {
    let out = World::new()
        .provider(mock("a", "p"))
        .policy(policy("a", "present"))
        .policy(policy("other", "strict"))
        .service(service("a", "app").policies(["present", "strict"]))
        .compile();
    let s = out.service("a", "app");
    assert_eq!(s.policies, vec![id("a", "present")]);
    let Some(denied) = &s.denied else { panic!("service must be denied") };
    assert!(denied.contains("Service a/app") && denied.contains("Policy a/strict"), "{denied}");
    let d = out.only_diagnostic();
    assert_eq!((d.kind, d.reason, d.severity), ("Service", reason::POLICY_NOT_FOUND, Severity::Error));
    assert!(d.message.contains("Policy a/strict, which does not exist"), "{d}");
}

#[test]
fn several_missing_policies_are_all_named() {
    let out = World::new().provider(mock("a", "p")).service(service("a", "app").policies(["x", "y"])).compile();
    assert_eq!(out.diagnostics.len(), 2);
    let denied = out.service("a", "app").denied.clone().unwrap_or_default();
    assert!(denied.contains("a/x, a/y"), "{denied}");
}

#[test]
fn an_invalid_policy_is_excluded_and_its_referrers_denied() {
    let out = World::new()
        .provider(mock("a", "p"))
        .policy(policy("a", "bad").models(["*gpt"]))
        .service(service("a", "app").policies(["bad"]))
        .compile();
    assert_eq!(out.policy("a", "bad"), None);
    assert!(out.service("a", "app").denied.is_some());
    let policy_diag = out.diagnostics.iter().find(|d| d.kind == "Policy").map(|d| d.reason);
    assert_eq!(policy_diag, Some(reason::INVALID_SPEC));
    let service_diag = out.diagnostics.iter().find(|d| d.kind == "Service");
    let Some(service_diag) = service_diag else { panic!("{:#?}", out.diagnostics) };
    assert!(service_diag.message.contains("is invalid (see its status)"), "{service_diag}");
}

/// A Provider `p/openai` with resolved keys `main` and `backup` and an unresolved `broken`,
/// granting namespace `granted`.
fn pin_world() -> World {
    World::new()
        .provider(
            ProviderBuilder::openai("p", "openai")
                .allowed(["granted"])
                .key("main", "s", "k")
                .priority(10)
                .key("backup", "s", "k")
                .key("broken", "s", "missing"),
        )
        .secret(secret("p", "s").with("k", "sk-value"))
}

#[test]
fn a_pin_resolves_to_the_key_id() {
    let out = pin_world().service(service("p", "own").pin("openai", "backup")).compile();
    let s = out.service("p", "own");
    assert_eq!(s.pinned_key.as_deref(), Some("p/openai/backup"));
    assert_eq!(s.denied, None);
    let out = pin_world().service(service("granted", "app").pin_in("p", "openai", "main")).compile();
    assert_eq!(out.service("granted", "app").pinned_key.as_deref(), Some("p/openai/main"));
}

#[test]
fn a_pin_to_an_unknown_label_denies_the_service() {
    let out = pin_world().service(service("p", "own").pin("openai", "nope")).compile();
    let s = out.service("p", "own");
    assert_eq!(s.pinned_key, None);
    assert!(s.denied.as_deref().is_some_and(|m| m.contains("key `nope`")), "{:?}", s.denied);
    let d = out.diagnostics.iter().find(|d| d.kind == "Service");
    let Some(d) = d else { panic!("{:#?}", out.diagnostics) };
    assert_eq!((d.reason, d.severity), (reason::KEY_NOT_FOUND, Severity::Error));
    assert!(d.message.contains("usable labels: main, backup"), "{d}");
}

#[test]
fn a_pin_to_an_unresolved_key_says_it_did_not_resolve() {
    let out = pin_world().service(service("p", "own").pin("openai", "broken")).compile();
    let d = out.diagnostics.iter().find(|d| d.kind == "Service");
    let Some(d) = d else { panic!("{:#?}", out.diagnostics) };
    assert_eq!(d.reason, reason::KEY_NOT_FOUND);
    assert!(d.message.contains("did not resolve"), "{d}");
    assert!(out.service("p", "own").denied.is_some());
}

#[test]
fn a_pin_to_an_inaccessible_provider_denies_the_service() {
    let out = pin_world().service(service("elsewhere", "app").pin_in("p", "openai", "main")).compile();
    let s = out.service("elsewhere", "app");
    assert_eq!(s.pinned_key, None);
    assert!(s.denied.is_some());
    let d = out.diagnostics.iter().find(|d| d.reason == reason::PROVIDER_NOT_FOUND);
    let Some(d) = d else { panic!("{:#?}", out.diagnostics) };
    assert!(d.message.contains("does not grant namespace elsewhere"), "{d}");
}

#[test]
fn a_pin_to_a_missing_or_excluded_provider_denies_the_service() {
    let out = pin_world()
        .provider(ProviderBuilder::openai("p", "broken").key("main", "nope", "k"))
        .service(service("p", "a").pin("ghost", "main"))
        .service(service("p", "b").pin("broken", "main"))
        .compile();
    for (name, state) in [("a", "does not exist"), ("b", "is not usable")] {
        assert!(out.service("p", name).denied.is_some());
        let object = id("p", name);
        let d = out.diagnostics_for("Service", &object).find(|d| d.reason == reason::PROVIDER_NOT_FOUND);
        assert!(d.is_some_and(|d| d.message.contains(state)), "{:#?}", out.diagnostics);
    }
}

#[test]
fn cache_ttl_defaults_to_zero() {
    let out = World::new()
        .provider(mock("a", "p"))
        .service(service("a", "plain"))
        .service(service("a", "cached").cache(600))
        .compile();
    assert_eq!(out.service("a", "plain").cache_ttl_seconds, 0);
    assert_eq!(out.service("a", "cached").cache_ttl_seconds, 600);
}

#[test]
fn a_service_lists_the_budgets_of_its_namespace_that_name_it() {
    let out = World::new()
        .provider(mock("a", "p"))
        .service(service("a", "app"))
        .budget(budget("a", "monthly", ["app", "other"]).monthly("100"))
        .budget(budget("a", "daily", ["app"]).daily("5"))
        .budget(budget("a", "unrelated", ["other"]).daily("5"))
        .budget(budget("b", "elsewhere", ["app"]).daily("5"))
        .budget(budget("a", "broken", ["app"]))
        .compile();
    assert_eq!(out.service("a", "app").budgets, vec![id("a", "daily"), id("a", "monthly")]);
}
