//! MachineTokens: issued Secrets, ownership labels, rotation, malformed values, revocation,
//! expiry, duplicate digests and Policies.

use super::fixtures::*;
use super::world::World;
use crate::common::{ObjectId, Scope};
use crate::compile::Severity;
use crate::conditions::reason;
use crate::config::TokenConfig;
use crate::token;

/// Service `a/app` and its MachineToken `a/bot`, whose Secret is added by each test.
fn world() -> World {
    World::new().provider(ProviderBuilder::mock("a", "p")).service(service("a", "app"))
}

#[test]
fn an_issued_token_is_compiled_to_its_digest() {
    let value = token_value(1);
    let out = world()
        .policy(policy("a", "chat-only"))
        .token(
            machine_token("a", "bot", "app")
                .scopes([Scope::Chat, Scope::Embeddings])
                .policies(["chat-only"])
                .expires(1_900_000_000),
        )
        .secret(issued("a", "bot", &value))
        .compile();
    assert!(out.diagnostics.is_empty(), "{:#?}", out.diagnostics);
    assert_eq!(
        out.config.tokens,
        vec![TokenConfig {
            digest: token::digest_hex(&value),
            id: ObjectId::new("a", "bot"),
            service: ObjectId::new("a", "app"),
            scopes: vec![Scope::Chat, Scope::Embeddings],
            policies: vec![ObjectId::new("a", "chat-only")],
            expires_at: Some(1_900_000_000),
            denied: None,
        }]
    );
}

#[test]
fn the_token_value_is_trimmed_before_digesting() {
    let value = token_value(2);
    let out =
        world().token(machine_token("a", "bot", "app")).secret(issued("a", "bot", &format!("{value}\n"))).compile();
    assert_eq!(out.token("a", "bot").map(|t| t.digest.clone()), Some(token::digest_hex(&value)));
}

#[test]
fn a_custom_secret_name_is_honoured() {
    let value = token_value(3);
    let out = world()
        .token(machine_token("a", "bot", "app").secret_name("creds"))
        .secret(secret("a", "creds").with(token::SECRET_KEY, &value).label(token::SECRET_LABEL, "bot"))
        .compile();
    assert!(out.token("a", "bot").is_some(), "{:#?}", out.diagnostics);
}

#[test]
fn a_token_for_a_missing_service_is_excluded() {
    let out = world().token(machine_token("a", "bot", "ghost")).secret(issued("a", "bot", &token_value(1))).compile();
    assert!(out.config.tokens.is_empty());
    let d = out.only_diagnostic();
    assert_eq!((d.kind, d.reason, d.severity), ("MachineToken", reason::SERVICE_NOT_FOUND, Severity::Error));
    assert!(d.message.contains("Service a/ghost"), "{d}");
}

#[test]
fn a_token_without_its_secret_is_not_issued_yet() {
    let out = world().token(machine_token("a", "bot", "app")).compile();
    assert!(out.config.tokens.is_empty());
    let d = out.only_diagnostic();
    assert_eq!((d.reason, d.severity), (reason::NOT_ISSUED, Severity::Warning));
    assert!(d.message.starts_with("not issued yet"), "{d}");
    assert!(d.message.contains("Secret a/bot-token"), "{d}");
}

#[test]
fn a_secret_not_labelled_for_the_token_is_not_adopted() {
    let value = token_value(4);
    for candidate in [
        secret("a", "bot-token").with(token::SECRET_KEY, &value),
        secret("a", "bot-token").with(token::SECRET_KEY, &value).label(token::SECRET_LABEL, "someone-else"),
    ] {
        let out = world().token(machine_token("a", "bot", "app")).secret(candidate).compile();
        assert!(out.config.tokens.is_empty());
        let d = out.only_diagnostic();
        assert_eq!((d.reason, d.severity), (reason::NOT_ISSUED, Severity::Warning));
        assert!(
            d.message.contains(
                "the Secret a/bot-token is not labelled uprox.dev/machine-token=bot; uprox does not adopt Secrets it did not issue"
            ),
            "{d}"
        );
    }
}

#[test]
fn a_stale_rotation_is_not_accepted() {
    let value = token_value(5);
    let out = world()
        .token(machine_token("a", "bot", "app").rotation(2))
        .secret(issued("a", "bot", &value).rotation(1))
        .compile();
    assert!(out.config.tokens.is_empty());
    let d = out.only_diagnostic();
    assert_eq!((d.reason, d.severity), (reason::NOT_ISSUED, Severity::Warning));
    assert!(d.message.contains("rotation 2 requested, the Secret a/bot-token holds rotation 1"), "{d}");

    // A missing annotation counts as rotation 0.
    let out = world().token(machine_token("a", "bot", "app").rotation(1)).secret(issued("a", "bot", &value)).compile();
    assert!(out.only_diagnostic().message.contains("holds rotation 0"));
}

#[test]
fn a_current_or_newer_rotation_is_accepted() {
    for held in [3, 4] {
        let out = world()
            .token(machine_token("a", "bot", "app").rotation(3))
            .secret(issued("a", "bot", &token_value(6)).rotation(held))
            .compile();
        assert!(out.token("a", "bot").is_some(), "{:#?}", out.diagnostics);
    }
}

#[test]
fn an_unreadable_rotation_annotation_is_not_accepted() {
    let out = world()
        .token(machine_token("a", "bot", "app"))
        .secret(issued("a", "bot", &token_value(6)).annotation(token::ROTATION_ANNOTATION, "two"))
        .compile();
    assert!(out.config.tokens.is_empty());
    assert_eq!(out.only_diagnostic().reason, reason::NOT_ISSUED);
}

#[test]
fn a_malformed_or_missing_value_is_an_error() {
    for (candidate, what) in [
        (issued("a", "bot", "sk-not-a-token"), "not a uprox token"),
        (issued("a", "bot", &format!("{}x", token_value(7))), "not a uprox token"),
        (secret("a", "bot-token").label(token::SECRET_LABEL, "bot"), "the key is missing"),
        (issued("a", "bot", "  "), "the value is empty"),
    ] {
        let out = world().token(machine_token("a", "bot", "app")).secret(candidate).compile();
        assert!(out.config.tokens.is_empty());
        let d = out.only_diagnostic();
        assert_eq!(d.severity, Severity::Error, "{d}");
        assert!(d.message.contains(what), "{d}");
        assert!(!d.message.contains("sk-not-a-token"), "{d}");
    }
}

#[test]
fn a_revoked_token_is_excluded_silently() {
    let out = world()
        .token(machine_token("a", "bot", "app").revoked())
        .secret(issued("a", "bot", &token_value(8)))
        .token(machine_token("a", "never-issued", "app").revoked())
        .compile();
    assert!(out.config.tokens.is_empty());
    assert!(out.diagnostics.is_empty(), "{:#?}", out.diagnostics);
}

#[test]
fn a_token_without_expiry_never_expires() {
    let out = world().token(machine_token("a", "bot", "app")).secret(issued("a", "bot", &token_value(9))).compile();
    assert_eq!(out.token("a", "bot").map(|t| t.expires_at), Some(None));
}

#[test]
fn two_tokens_with_one_value_keep_the_first_by_id() {
    let value = token_value(10);
    let out = world()
        .token(machine_token("a", "zed", "app"))
        .token(machine_token("a", "abe", "app"))
        .secret(issued("a", "zed", &value))
        .secret(issued("a", "abe", &value))
        .compile();
    assert_eq!(out.config.tokens.len(), 1);
    assert!(out.token("a", "abe").is_some());
    let d = out.only_diagnostic();
    assert_eq!((d.object.name.as_str(), d.severity), ("zed", Severity::Error));
    assert!(d.message.contains("same token as MachineToken a/abe"), "{d}");
}

#[test]
fn a_missing_token_policy_denies_the_token() {
    let out = world()
        .token(machine_token("a", "bot", "app").policies(["ghost"]))
        .secret(issued("a", "bot", &token_value(11)))
        .compile();
    let Some(t) = out.token("a", "bot") else { panic!("{:#?}", out.diagnostics) };
    assert!(t.denied.as_deref().is_some_and(|m| m.contains("MachineToken a/bot") && m.contains("Policy a/ghost")));
    let d = out.only_diagnostic();
    assert_eq!((d.kind, d.reason), ("MachineToken", reason::POLICY_NOT_FOUND));
}

#[test]
fn tokens_are_sorted_by_digest() {
    let mut w = world();
    for n in 0..6u8 {
        let name = format!("t{n}");
        w = w.token(machine_token("a", &name, "app")).secret(issued("a", &name, &token_value(n)));
    }
    let out = w.compile();
    let digests: Vec<&str> = out.config.tokens.iter().map(|t| t.digest.as_str()).collect();
    assert_eq!(digests.len(), 6);
    assert!(digests.windows(2).all(|w| w[0] < w[1]), "{digests:?}");
}
