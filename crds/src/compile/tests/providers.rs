//! Providers: defaults, URL and model checks, key resolution from Secrets and key order.

use super::fixtures::*;
use super::world::World;
use crate::common::Pattern;
use crate::compile::Severity;
use crate::conditions::reason;
use crate::config::KeyConfig;
use crate::provider::ProviderType;

/// An OpenAI Provider `default/openai` with key `main` in Secret `openai-key`/`apiKey`.
fn openai_world(value: &str) -> World {
    World::new()
        .provider(ProviderBuilder::openai("default", "openai").key("main", "openai-key", "apiKey"))
        .secret(secret("default", "openai-key").with("apiKey", value))
}

#[test]
fn openai_gets_default_url_models_and_timeout() {
    let out = openai_world("sk-one").compile();
    assert!(out.diagnostics.is_empty(), "{:#?}", out.diagnostics);
    let Some(p) = out.provider("default", "openai") else { panic!("provider missing") };
    assert_eq!(p.provider_type, ProviderType::Openai);
    assert_eq!(p.base_url, "https://api.openai.com/v1");
    assert_eq!(p.timeout_seconds, 300);
    assert!(p.models.contains(&Pattern::new("gpt-*")));
    assert!(!p.models_explicit, "the defaults are not the spec's list");
    assert_eq!(p.api_version, None);
    assert_eq!(
        p.keys,
        vec![KeyConfig { id: "default/openai/main".into(), label: "main".into(), priority: 0, endpoint: None }]
    );
    assert_eq!(out.key_value("default/openai/main"), Some("sk-one"));
}

#[test]
fn spec_values_override_defaults_and_urls_lose_trailing_slashes() {
    let out = World::new()
        .provider(
            ProviderBuilder::azure("ai", "azure")
                .base_url("https://res.openai.azure.com//")
                .api_version("2024-10-21")
                .models(["gpt-4o", "gpt-4o-mini*"])
                .timeout(60)
                .key("east", "az", "key")
                .endpoint("https://east.openai.azure.com/"),
        )
        .secret(secret("ai", "az").with("key", "k"))
        .compile();
    assert!(out.diagnostics.is_empty(), "{:#?}", out.diagnostics);
    let Some(p) = out.provider("ai", "azure") else { panic!("provider missing") };
    assert_eq!(p.base_url, "https://res.openai.azure.com");
    assert_eq!(p.api_version.as_deref(), Some("2024-10-21"));
    assert_eq!(p.models, vec![Pattern::new("gpt-4o"), Pattern::new("gpt-4o-mini*")]);
    assert!(p.models_explicit);
    assert_eq!(p.timeout_seconds, 60);
    assert_eq!(p.keys[0].endpoint.as_deref(), Some("https://east.openai.azure.com"));
}

#[test]
fn azure_without_base_url_uses_the_first_keys_endpoint() {
    let out = World::new()
        .provider(
            ProviderBuilder::azure("ai", "azure")
                .models(["*"])
                .key("a", "az", "k")
                .endpoint("https://first.openai.azure.com/")
                .key("b", "az", "k")
                .endpoint("https://second.openai.azure.com"),
        )
        .secret(secret("ai", "az").with("k", "v"))
        .compile();
    let Some(p) = out.provider("ai", "azure") else { panic!("{:#?}", out.diagnostics) };
    assert_eq!(p.base_url, "https://first.openai.azure.com");
}

#[test]
fn a_provider_without_base_url_is_excluded() {
    for builder in [ProviderBuilder::azure("ai", "p"), ProviderBuilder::compatible("ai", "p")] {
        let out = World::new()
            .provider(builder.models(["*"]).key("main", "s", "k"))
            .secret(secret("ai", "s").with("k", "v"))
            .compile();
        assert!(out.config.providers.is_empty());
        let d = out.only_diagnostic();
        assert_eq!((d.kind, d.reason, d.severity), ("Provider", reason::INVALID_SPEC, Severity::Error));
        assert!(d.message.contains("spec.baseUrl"), "{}", d.message);
        assert!(out.keys.0.is_empty(), "an excluded provider's keys must not be kept");
    }
}

#[test]
fn a_provider_without_models_is_excluded() {
    let out = World::new()
        .provider(ProviderBuilder::compatible("ai", "vllm").base_url("http://vllm:8000/v1").key("main", "s", "k"))
        .secret(secret("ai", "s").with("k", "v"))
        .compile();
    assert!(out.config.providers.is_empty());
    let d = out.only_diagnostic();
    assert_eq!(d.reason, reason::INVALID_SPEC);
    assert!(d.message.contains("declares no models; set spec.models"), "{}", d.message);
}

#[test]
fn an_invalid_model_pattern_excludes_the_provider() {
    let out = World::new().provider(ProviderBuilder::mock("ai", "m").models(["claude-3", "*gpt", "a b"])).compile();
    assert!(out.config.providers.is_empty());
    let d = out.only_diagnostic();
    assert_eq!(d.reason, reason::INVALID_SPEC);
    assert!(d.message.contains("`*gpt`, `a b`"), "{}", d.message);
    assert!(!d.message.contains("claude-3"), "{}", d.message);
}

#[test]
fn a_timeout_outside_the_schema_range_is_refused() {
    for timeout in [0, 3601] {
        let out = World::new().provider(ProviderBuilder::mock("ai", "m").timeout(timeout)).compile();
        assert!(out.config.providers.is_empty());
        assert!(out.only_diagnostic().message.contains("spec.timeoutSeconds"));
    }
}

#[test]
fn mock_needs_no_key_and_ignores_any() {
    let out = World::new().provider(ProviderBuilder::mock("ai", "m").key("x", "missing", "k")).compile();
    assert!(out.diagnostics.is_empty(), "{:#?}", out.diagnostics);
    let Some(p) = out.provider("ai", "m") else { panic!("provider missing") };
    assert_eq!(p.base_url, "mock://local");
    assert_eq!(p.models, vec![Pattern::new("mock-*")]);
    assert!(p.keys.is_empty());
}

#[test]
fn a_keyed_type_without_keys_is_excluded() {
    let out = World::new().provider(ProviderBuilder::anthropic("ai", "claude")).compile();
    assert!(out.config.providers.is_empty());
    let d = out.only_diagnostic();
    assert_eq!(d.reason, reason::INVALID_SPEC);
    assert!(d.message.contains("spec.keys"), "{}", d.message);
}

#[test]
fn missing_secret_names_it_and_says_how_to_create_it() {
    let out =
        World::new().provider(ProviderBuilder::openai("team", "openai").key("main", "openai-key", "apiKey")).compile();
    assert!(out.config.providers.is_empty(), "no key resolved, so the provider is out");
    let d = out.only_diagnostic();
    assert_eq!((d.reason, d.severity), (reason::SECRET_NOT_FOUND, Severity::Error));
    assert!(d.message.contains("key `main`"), "{}", d.message);
    assert!(d.message.contains("Secret team/openai-key"), "{}", d.message);
    assert!(
        d.message.contains("kubectl create secret generic openai-key -n team --from-literal=apiKey=…"),
        "{}",
        d.message
    );
}

#[test]
fn secrets_are_looked_up_in_the_providers_namespace_only() {
    let out = World::new()
        .provider(ProviderBuilder::openai("team", "openai").key("main", "shared", "k"))
        .secret(secret("other", "shared").with("k", "v"))
        .compile();
    assert!(out.config.providers.is_empty());
    assert_eq!(out.only_diagnostic().reason, reason::SECRET_NOT_FOUND);
}

#[test]
fn missing_key_lists_the_keys_the_secret_has_by_name_only() {
    let out = World::new()
        .provider(ProviderBuilder::openai("team", "openai").key("main", "s", "apiKey"))
        .secret(secret("team", "s").with("api-key", "sk-secret-1").string("token", "sk-secret-2"))
        .compile();
    let d = out.only_diagnostic();
    assert_eq!(d.reason, reason::SECRET_KEY_NOT_FOUND);
    assert!(d.message.contains("no key `apiKey` (it has: api-key, token)"), "{}", d.message);
    assert!(!d.message.contains("sk-secret"), "{}", d.message);
}

#[test]
fn a_secret_without_data_says_so() {
    let out = World::new()
        .provider(ProviderBuilder::openai("team", "openai").key("main", "s", "apiKey"))
        .secret(secret("team", "s"))
        .compile();
    assert!(out.only_diagnostic().message.contains("it has no keys"));
}

#[test]
fn empty_and_non_utf8_values_are_invalid() {
    for bad in [
        secret("t", "s").with("k", ""),
        secret("t", "s").with("k", " \n\t"),
        secret("t", "s").bytes("k", &[0xff, 0xfe]),
    ] {
        let out = World::new().provider(ProviderBuilder::openai("t", "p").key("main", "s", "k")).secret(bad).compile();
        assert!(out.config.providers.is_empty());
        let d = out.only_diagnostic();
        assert_eq!(d.reason, reason::SECRET_VALUE_INVALID, "{d}");
        assert!(d.message.contains("key `main`") && d.message.contains("Secret t/s"), "{d}");
    }
}

#[test]
fn values_are_trimmed() {
    let out = openai_world("  sk-trim-me\n").compile();
    assert_eq!(out.key_value("default/openai/main"), Some("sk-trim-me"));
}

#[test]
fn string_data_wins_over_data() {
    let out = World::new()
        .provider(ProviderBuilder::openai("t", "p").key("main", "s", "k"))
        .secret(secret("t", "s").with("k", "from-data").string("k", "from-string-data"))
        .compile();
    assert_eq!(out.key_value("t/p/main"), Some("from-string-data"));
}

#[test]
fn keys_are_ordered_by_priority_then_label() {
    let out = World::new()
        .provider(
            ProviderBuilder::openai("t", "p")
                .key("zeta", "s", "k")
                .priority(5)
                .key("low", "s", "k")
                .priority(-1)
                .key("alpha", "s", "k")
                .priority(5)
                .key("mid", "s", "k"),
        )
        .secret(secret("t", "s").with("k", "v"))
        .compile();
    let Some(p) = out.provider("t", "p") else { panic!("{:#?}", out.diagnostics) };
    let order: Vec<(&str, i32)> = p.keys.iter().map(|k| (k.label.as_str(), k.priority)).collect();
    assert_eq!(order, vec![("alpha", 5), ("zeta", 5), ("mid", 0), ("low", -1)]);
    let ids: Vec<&str> = out.keys.0.keys().map(String::as_str).collect();
    assert_eq!(ids, vec!["t/p/alpha", "t/p/low", "t/p/mid", "t/p/zeta"]);
}

#[test]
fn a_provider_with_some_resolved_keys_is_kept_and_the_rest_reported() {
    let out = World::new()
        .provider(ProviderBuilder::openai("t", "p").key("good", "s", "k").key("bad", "s", "other"))
        .secret(secret("t", "s").with("k", "v"))
        .compile();
    let Some(p) = out.provider("t", "p") else { panic!("{:#?}", out.diagnostics) };
    assert_eq!(p.keys.len(), 1);
    assert_eq!(p.keys[0].label, "good");
    let d = out.only_diagnostic();
    assert_eq!(d.reason, reason::SECRET_KEY_NOT_FOUND);
    assert!(d.message.starts_with("key `bad`"), "{d}");
    assert_eq!(out.key_value("t/p/bad"), None);
}

#[test]
fn duplicate_labels_keep_the_first() {
    let out = World::new()
        .provider(ProviderBuilder::openai("t", "p").key("main", "s", "first").priority(1).key("main", "s", "second"))
        .secret(secret("t", "s").with("first", "v1").with("second", "v2"))
        .compile();
    let Some(p) = out.provider("t", "p") else { panic!("{:#?}", out.diagnostics) };
    assert_eq!(p.keys.len(), 1);
    assert_eq!(p.keys[0].priority, 1);
    assert_eq!(out.key_value("t/p/main"), Some("v1"));
    let d = out.only_diagnostic();
    assert_eq!((d.reason, d.severity), (reason::INVALID_SPEC, Severity::Error));
    assert!(d.message.contains("label `main` more than once"), "{d}");
}

#[test]
fn every_problem_of_a_provider_is_reported_at_once() {
    let out = World::new()
        .provider(ProviderBuilder::compatible("t", "p").models(["*x"]).timeout(0).key("main", "nope", "k"))
        .compile();
    let reasons: Vec<&str> = out.diagnostics.iter().map(|d| d.reason).collect();
    assert_eq!(reasons.len(), 4, "{:#?}", out.diagnostics);
    assert_eq!(reasons.iter().filter(|r| **r == reason::INVALID_SPEC).count(), 3);
    assert!(reasons.contains(&reason::SECRET_NOT_FOUND));
}
