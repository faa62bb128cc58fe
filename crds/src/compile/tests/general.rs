//! Properties of the whole compilation: a full happy-path config, metadata and duplicate
//! checks, diagnostic shape and order, determinism, and that no secret value ever leaks.

use super::fixtures::*;
use super::world::World;
use crate::common::{ObjectId, Pattern, Scope};
use crate::compile::{Compiled, Diagnostic, Severity};
use crate::conditions::reason;
use crate::config::{
    BudgetConfig, CONFIG_VERSION, GatewayConfig, KeyConfig, PolicyConfig, ProviderConfig, ServiceConfig, TokenConfig,
};
use crate::provider::ProviderType;
use crate::token;

const OPENAI_MAIN: &str = "sk-openai-main-0000";
const OPENAI_BACKUP: &str = "sk-openai-backup-1111";
const ANTHROPIC_KEY: &str = "sk-ant-2222";

fn id(namespace: &str, name: &str) -> ObjectId {
    ObjectId::new(namespace, name)
}

/// A small but complete installation: two teams' worth of resources, all valid.
fn happy_world() -> World {
    World::new()
        .provider(ProviderBuilder::openai("team", "openai").key("main", "openai-key", "apiKey").priority(10).key(
            "backup",
            "openai-key",
            "backupKey",
        ))
        .provider(ProviderBuilder::anthropic("shared", "anthropic").allowed(["*"]).key("main", "anthropic", "key"))
        .provider(ProviderBuilder::mock("team", "mock"))
        .secret(secret("team", "openai-key").with("apiKey", OPENAI_MAIN).string("backupKey", OPENAI_BACKUP))
        .secret(secret("shared", "anthropic").with("key", ANTHROPIC_KEY))
        .policy(policy("team", "default").models(["gpt-*", "claude-*"]).limits(60, 0, 4))
        .service(service("team", "chatbot").policies(["default"]).pin("openai", "backup").cache(300))
        .token(machine_token("team", "chatbot-prod", "chatbot").scopes([Scope::Chat]).expires(2_000_000_000))
        .secret(issued("team", "chatbot-prod", &token_value(42)).rotation(0))
        .budget(budget("team", "monthly", ["chatbot"]).monthly("500").thresholds([100, 50, 80]).alert())
}

#[test]
fn happy_path_compiles_to_the_full_config() {
    let out = happy_world().compile();
    assert!(out.diagnostics.is_empty(), "{:#?}", out.diagnostics);
    let key =
        |id: &str, label: &str, priority| KeyConfig { id: id.into(), label: label.into(), priority, endpoint: None };
    let expected = GatewayConfig {
        version: CONFIG_VERSION,
        providers: vec![
            ProviderConfig {
                id: id("shared", "anthropic"),
                provider_type: ProviderType::Anthropic,
                base_url: "https://api.anthropic.com".into(),
                api_version: None,
                timeout_seconds: 300,
                models: vec![Pattern::new("claude-*")],
                models_explicit: false,
                keys: vec![key("shared/anthropic/main", "main", 0)],
                prices: vec![],
            },
            ProviderConfig {
                id: id("team", "mock"),
                provider_type: ProviderType::Mock,
                base_url: "mock://local".into(),
                api_version: None,
                timeout_seconds: 300,
                models: vec![Pattern::new("mock-*")],
                models_explicit: false,
                keys: vec![],
                prices: vec![],
            },
            ProviderConfig {
                id: id("team", "openai"),
                provider_type: ProviderType::Openai,
                base_url: "https://api.openai.com/v1".into(),
                api_version: None,
                timeout_seconds: 300,
                models: ProviderType::Openai.default_models().iter().map(|m| Pattern::new(*m)).collect(),
                models_explicit: false,
                keys: vec![key("team/openai/main", "main", 10), key("team/openai/backup", "backup", 0)],
                prices: vec![],
            },
        ],
        services: vec![ServiceConfig {
            id: id("team", "chatbot"),
            providers: vec![id("team", "mock"), id("team", "openai"), id("shared", "anthropic")],
            policies: vec![id("team", "default")],
            pinned_key: Some("team/openai/backup".into()),
            cache_ttl_seconds: 300,
            budgets: vec![id("team", "monthly")],
            denied: None,
        }],
        tokens: vec![TokenConfig {
            digest: token::digest_hex(&token_value(42)),
            id: id("team", "chatbot-prod"),
            service: id("team", "chatbot"),
            scopes: vec![Scope::Chat],
            policies: vec![],
            expires_at: Some(2_000_000_000),
            denied: None,
        }],
        policies: vec![PolicyConfig {
            id: id("team", "default"),
            providers: vec![],
            models: vec![Pattern::new("gpt-*"), Pattern::new("claude-*")],
            scopes: vec![],
            requests_per_minute: Some(60),
            tokens_per_minute: None,
            max_concurrent_requests: Some(4),
            ..Default::default()
        }],
        budgets: vec![BudgetConfig {
            id: id("team", "monthly"),
            daily_micro_usd: None,
            monthly_micro_usd: Some(500_000_000),
            alert_thresholds: vec![50, 80, 100],
            block: false,
        }],
    };
    assert_eq!(out.config, expected);
    let values: Vec<(&str, &str)> = out.keys.0.iter().map(|(k, v)| (k.as_str(), v.expose())).collect();
    assert_eq!(
        values,
        vec![
            ("shared/anthropic/main", ANTHROPIC_KEY),
            ("team/openai/backup", OPENAI_BACKUP),
            ("team/openai/main", OPENAI_MAIN),
        ]
    );
}

#[test]
fn an_empty_input_gives_an_empty_versioned_config() {
    let out = World::new().compile();
    assert_eq!(out.config, GatewayConfig { version: CONFIG_VERSION, ..GatewayConfig::default() });
    assert!(out.diagnostics.is_empty() && out.keys.0.is_empty());
}

#[test]
fn objects_without_namespace_or_name_are_reported_and_skipped() {
    let mut w = happy_world();
    w.providers[0].metadata.namespace = None;
    w.services[0].metadata.name = None;
    w.tokens[0].metadata.namespace = Some(String::new());
    w.policies[0].metadata.name = None;
    w.policies[0].metadata.namespace = None;
    w.budgets[0].metadata.name = Some(String::new());
    let out = w.compile();
    let invalid: Vec<(&str, String)> = out
        .diagnostics
        .iter()
        .filter(|d| d.reason == reason::INVALID_SPEC)
        .map(|d| (d.kind, d.object.to_string()))
        .collect();
    assert_eq!(
        invalid,
        vec![
            ("Budget", "team/".to_owned()),
            ("MachineToken", "/chatbot-prod".to_owned()),
            ("Policy", "/".to_owned()),
            ("Provider", "/openai".to_owned()),
            ("Service", "team/".to_owned()),
        ]
    );
    assert!(out.diagnostics.iter().filter(|d| d.reason == reason::INVALID_SPEC).all(Diagnostic::is_error));
    assert!(out.config.services.is_empty() && out.config.tokens.is_empty() && out.config.budgets.is_empty());
    assert!(out.config.policies.is_empty() && out.provider("team", "openai").is_none());
}

#[test]
fn an_object_defined_twice_is_left_out_entirely() {
    let out = World::new()
        .provider(ProviderBuilder::mock("a", "p"))
        .provider(ProviderBuilder::mock("a", "p").models(["other-*"]))
        .compile();
    assert!(out.config.providers.is_empty());
    let d = out.only_diagnostic();
    assert_eq!((d.kind, d.reason), ("Provider", reason::INVALID_SPEC));
    assert!(d.message.contains("defined 2 times"), "{d}");
}

#[test]
fn a_secret_defined_twice_is_not_used() {
    let out = World::new()
        .provider(ProviderBuilder::openai("a", "p").key("main", "s", "k"))
        .secret(secret("a", "s").with("k", "one"))
        .secret(secret("a", "s").with("k", "two"))
        .compile();
    assert!(out.config.providers.is_empty());
    let d = out.only_diagnostic();
    assert_eq!(d.reason, reason::SECRET_VALUE_INVALID);
    assert!(d.message.contains("Secret a/s is defined more than once"), "{d}");
}

#[test]
fn diagnostics_display_kind_object_and_message() {
    let d = Diagnostic {
        kind: "Provider",
        object: id("default", "openai"),
        severity: Severity::Warning,
        reason: reason::NO_PROVIDERS,
        message: "something to fix".into(),
    };
    assert_eq!(d.to_string(), "Provider default/openai: something to fix");
    assert!(!d.is_error());
    assert!(Diagnostic { severity: Severity::Error, ..d }.is_error());
}

/// Resources with something wrong in every kind, beside the valid ones.
fn troubled_world() -> World {
    happy_world()
        .provider(ProviderBuilder::openai("team", "broken").key("a", "nope", "k").key("b", "openai-key", "missing"))
        .provider(ProviderBuilder::compatible("other", "vllm").models(["*"]))
        .service(service("other", "lonely").policies(["ghost"]).pin_in("team", "openai", "main"))
        .service(service("team", "pinned").pin("openai", "nope"))
        .token(machine_token("team", "stale", "chatbot").rotation(3))
        .secret(issued("team", "stale", &token_value(1)).rotation(2))
        .token(machine_token("team", "copy", "chatbot"))
        .secret(issued("team", "copy", &token_value(42)))
        .token(machine_token("team", "bad", "chatbot"))
        .secret(issued("team", "bad", "uprox_live_tooshort-SECRET"))
        .token(machine_token("team", "squatted", "chatbot"))
        .secret(secret("team", "squatted-token").with(token::SECRET_KEY, &token_value(7)))
        .policy(policy("team", "loose").providers(["a b"]))
        .budget(budget("team", "bad", ["chatbot", "ghost"]).daily("ten").thresholds([0]))
}

fn compiled_equal(a: &Compiled, b: &Compiled) {
    assert_eq!(a.config, b.config);
    assert_eq!(a.keys, b.keys);
    assert_eq!(a.diagnostics, b.diagnostics);
}

#[test]
fn shuffled_inputs_give_an_equal_result() {
    let world = troubled_world();
    let reference = world.compile();
    assert!(reference.diagnostics.len() >= 10, "{:#?}", reference.diagnostics);
    compiled_equal(&reference, &world.compile());
    for turn in 1..5 {
        let mut shuffled = world.clone();
        let (providers, tokens, secrets) = (world.providers.len(), world.tokens.len(), world.secrets.len());
        shuffled.providers.rotate_left(turn % providers);
        shuffled.services.reverse();
        shuffled.tokens.rotate_right(turn % tokens);
        shuffled.policies.reverse();
        shuffled.budgets.reverse();
        shuffled.secrets.rotate_left(turn % secrets);
        if turn % 2 == 0 {
            shuffled.secrets.reverse();
            shuffled.tokens.reverse();
        }
        compiled_equal(&reference, &shuffled.compile());
    }
}

#[test]
fn diagnostics_are_sorted_by_kind_object_and_message() {
    let out = troubled_world().compile();
    let keys: Vec<_> = out.diagnostics.iter().map(|d| (d.kind, d.object.clone(), d.message.clone())).collect();
    let mut sorted = keys.clone();
    sorted.sort();
    assert_eq!(keys, sorted);
}

#[test]
fn every_vec_of_the_config_is_sorted() {
    let c = troubled_world().compile().config;
    assert!(c.providers.windows(2).all(|w| w[0].id < w[1].id));
    assert!(c.services.windows(2).all(|w| w[0].id < w[1].id));
    assert!(c.tokens.windows(2).all(|w| w[0].digest < w[1].digest));
    assert!(c.policies.windows(2).all(|w| w[0].id < w[1].id));
    assert!(c.budgets.windows(2).all(|w| w[0].id < w[1].id));
}

#[test]
fn no_secret_value_leaks_into_diagnostics_or_the_config() {
    let out = troubled_world().compile();
    assert!(!out.keys.0.is_empty(), "the test needs resolved keys to be meaningful");
    let config_json = serde_json::to_string(&out.config).unwrap_or_default();
    assert!(config_json.contains("team/openai/main"), "serialisation must have worked");
    let debug = format!("{out:?}");
    let values = [
        OPENAI_MAIN.to_owned(),
        OPENAI_BACKUP.to_owned(),
        ANTHROPIC_KEY.to_owned(),
        token_value(1),
        token_value(7),
        token_value(42),
        "tooshort-SECRET".to_owned(),
    ];
    for value in &values {
        assert!(!config_json.contains(value.as_str()), "config leaks {value}");
        assert!(!debug.contains(value.as_str()), "Debug leaks {value}");
        for d in &out.diagnostics {
            assert!(!d.message.contains(value.as_str()), "diagnostic leaks {value}: {d}");
            assert!(!d.to_string().contains(value.as_str()), "diagnostic leaks {value}: {d}");
        }
    }
}
