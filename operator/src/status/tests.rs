#![allow(clippy::unwrap_used, clippy::expect_used)]

use k8s_openapi::ByteString;
use k8s_openapi::api::core::v1::Secret;
use k8s_openapi::jiff::{SignedDuration, Timestamp};
use uprox_crds::{Resources, compile};

use super::*;

const WORLD: &str = r#"
apiVersion: uprox.dev/v1alpha1
kind: Provider
metadata: {name: openai, namespace: team, generation: 3}
spec:
  type: openai
  keys:
    - {label: main, secretRef: {name: openai-key, key: apiKey}, priority: 10}
---
apiVersion: uprox.dev/v1alpha1
kind: Policy
metadata: {name: chat-only, namespace: team, generation: 1}
spec: {scopes: [chat]}
---
apiVersion: uprox.dev/v1alpha1
kind: Service
metadata: {name: app, namespace: team, generation: 2}
spec: {policies: [chat-only]}
---
apiVersion: uprox.dev/v1alpha1
kind: Budget
metadata: {name: monthly, namespace: team, generation: 1}
spec: {services: [app], monthlyUSD: "50"}
---
apiVersion: uprox.dev/v1alpha1
kind: MachineToken
metadata: {name: app, namespace: team, generation: 1, uid: u-1}
spec: {service: app}
"#;

const KEY: &str = "uprox_live_abcdefghijklmnopqrstuvwxyz0123456789ABCDEFG";

struct World {
    resources: Resources,
}

impl World {
    fn new() -> Self {
        let mut resources = Resources::default();
        for doc in serde_yaml::Deserializer::from_str(WORLD) {
            let value = serde_yaml::Value::deserialize(doc).unwrap();
            match value["kind"].as_str().unwrap() {
                "Provider" => resources.providers.push(serde_yaml::from_value(value).unwrap()),
                "Policy" => resources.policies.push(serde_yaml::from_value(value).unwrap()),
                "Service" => resources.services.push(serde_yaml::from_value(value).unwrap()),
                "Budget" => resources.budgets.push(serde_yaml::from_value(value).unwrap()),
                "MachineToken" => resources.tokens.push(serde_yaml::from_value(value).unwrap()),
                other => panic!("{other}"),
            }
        }
        let mut world = Self { resources };
        world.resources.secrets.push(secret("openai-key", "apiKey", "sk-test-1234"));
        let issued = world.token().issued_secret(KEY, "2026-11-27T10:00:00Z");
        world.resources.secrets.push(as_stored(issued));
        world
    }

    fn token(&self) -> &MachineToken {
        &self.resources.tokens[0]
    }

    fn compiled(&self) -> Compiled {
        compile(&self.resources.inputs())
    }

    fn token_secret(&self) -> Option<&Secret> {
        self.resources.secrets.iter().find(|s| s.metadata.name.as_deref() == Some("app-token"))
    }
}

use serde::Deserialize as _;

/// A Secret as the API server returns it: `stringData` folded into `data`.
fn as_stored(mut secret: Secret) -> Secret {
    let string_data = secret.string_data.take().unwrap_or_default();
    let data = secret.data.get_or_insert_with(Default::default);
    for (k, v) in string_data {
        data.insert(k, ByteString(v.into_bytes()));
    }
    secret
}

fn secret(name: &str, key: &str, value: &str) -> Secret {
    let mut s = Secret::default();
    s.metadata.name = Some(name.into());
    s.metadata.namespace = Some("team".into());
    s.data = Some([(key.to_owned(), ByteString(value.as_bytes().to_vec()))].into());
    s
}

fn at(seconds: i64) -> Time {
    Time(Timestamp::from_second(1_800_000_000 + seconds).unwrap())
}

fn condition<'a>(conds: &'a [Condition], type_: &str) -> &'a Condition {
    conds.iter().find(|c| c.type_ == type_).unwrap_or_else(|| panic!("no {type_} in {conds:?}"))
}

#[test]
fn a_healthy_world_is_ready_everywhere() {
    let world = World::new();
    let compiled = world.compiled();
    let index = Index::new(&compiled);
    let now = at(0);

    let p = provider(&world.resources.providers[0], &index, &now);
    assert_eq!(p.observed_generation, Some(3));
    assert_eq!(p.keys, Some(1));
    assert_eq!(condition(&p.conditions, READY).status, "True");
    assert_eq!(condition(&p.conditions, KEYS_RESOLVED).status, "True");

    let s = service(&world.resources.services[0], &index, &now);
    assert_eq!((s.providers, s.tokens), (Some(1), Some(1)));
    assert_eq!(condition(&s.conditions, REFERENCES_RESOLVED).status, "True");

    let pol = policy(&world.resources.policies[0], &index, &now);
    assert_eq!(pol.attached, Some(1));
    assert_eq!(pol.services, ["app"]);
    assert_eq!(pol.tokens, Some(0));
    assert_eq!(condition(&pol.conditions, READY).status, "True");

    let b = budget(&world.resources.budgets[0], &index, &now);
    assert_eq!(condition(&b.conditions, READY).status, "True");

    let t = machine_token(world.token(), world.token_secret(), &index, &now);
    assert_eq!(condition(&t.conditions, READY).status, "True");
    assert_eq!(condition(&t.conditions, ISSUED).status, "True");
    assert_eq!(t.display.as_deref(), Some("uprox_live_abcdef…DEFG"));
    assert_eq!(t.secret_name.as_deref(), Some("app-token"));
    assert_eq!(t.issued_at, Some(Time("2026-11-27T10:00:00Z".parse().unwrap())));
    let text = serde_json::to_string(&t).unwrap();
    assert!(!text.contains(KEY), "the status must never carry the token");
}

#[test]
fn an_unchanged_world_needs_no_second_write() {
    let mut world = World::new();
    let compiled = world.compiled();
    let index = Index::new(&compiled);
    let first = provider(&world.resources.providers[0], &index, &at(0));
    world.resources.providers[0].status = Some(first.clone());
    let again = provider(&world.resources.providers[0], &index, &at(60));
    assert_eq!(first, again, "a later clock alone must not change the status");

    // As the API server stores it: times at second precision.
    let issued = world.token().issued_secret(KEY, "2026-11-27T10:00:00.123456789Z");
    world.resources.secrets.retain(|s| s.metadata.name.as_deref() != Some("app-token"));
    world.resources.secrets.push(as_stored(issued));
    let compiled = world.compiled();
    let index = Index::new(&compiled);
    let token_status = machine_token(world.token(), world.token_secret(), &index, &at(0));
    let stored = serde_json::from_value(serde_json::to_value(&token_status).unwrap()).unwrap();
    world.resources.tokens[0].status = Some(stored);
    assert_eq!(machine_token(world.token(), world.token_secret(), &index, &at(60)), token_status);
}

#[test]
fn a_missing_key_secret_is_reported_on_the_provider() {
    let mut world = World::new();
    world.resources.secrets.retain(|s| s.metadata.name.as_deref() != Some("openai-key"));
    let compiled = world.compiled();
    let p = provider(&world.resources.providers[0], &Index::new(&compiled), &at(0));
    let keys = condition(&p.conditions, KEYS_RESOLVED);
    assert_eq!(keys.status, "False");
    assert_eq!(keys.reason, reason::SECRET_NOT_FOUND);
    assert!(keys.message.contains("openai-key"), "{}", keys.message);
    assert_eq!(condition(&p.conditions, READY).status, "False");
}

#[test]
fn a_missing_policy_fails_the_service_closed() {
    let mut world = World::new();
    world.resources.policies.clear();
    let compiled = world.compiled();
    let index = Index::new(&compiled);
    let s = service(&world.resources.services[0], &index, &at(0));
    let refs = condition(&s.conditions, REFERENCES_RESOLVED);
    assert_eq!((refs.status.as_str(), refs.reason.as_str()), ("False", reason::POLICY_NOT_FOUND));
    assert_eq!(condition(&s.conditions, READY).status, "False");
}

#[test]
fn token_states_read_as_people_expect() {
    let mut world = World::new();
    // Not issued yet.
    let no_secret: Option<&Secret> = None;
    world.resources.secrets.retain(|s| s.metadata.name.as_deref() != Some("app-token"));
    let compiled = world.compiled();
    let t = machine_token(world.token(), no_secret, &Index::new(&compiled), &at(0));
    assert_eq!(condition(&t.conditions, ISSUED).reason, reason::NOT_ISSUED);
    assert_eq!(condition(&t.conditions, READY).status, "False");
    assert!(t.display.is_none());

    // Revoked.
    let mut world = World::new();
    world.resources.tokens[0].spec.revoked = true;
    let compiled = world.compiled();
    let t = machine_token(world.token(), world.token_secret(), &Index::new(&compiled), &at(0));
    assert_eq!(condition(&t.conditions, READY).reason, reason::REVOKED);
    assert_eq!(condition(&t.conditions, ISSUED).reason, reason::REVOKED);

    // Expired.
    let mut world = World::new();
    world.resources.tokens[0].spec.expires_at = Some(Time(at(0).0 - SignedDuration::from_secs(1)));
    let compiled = world.compiled();
    let t = machine_token(world.token(), world.token_secret(), &Index::new(&compiled), &at(0));
    assert_eq!(condition(&t.conditions, READY).reason, reason::EXPIRED);
    assert_eq!(t.expires_at, world.token().spec.expires_at);

    // Rotation requested: the old Secret is stale, so nothing is shown and it is not issued.
    let mut world = World::new();
    world.resources.tokens[0].spec.rotation = 1;
    let compiled = world.compiled();
    let t = machine_token(world.token(), world.token_secret(), &Index::new(&compiled), &at(0));
    assert_eq!(condition(&t.conditions, ISSUED).status, "False");
    assert!(t.display.is_none());
}

/// The token's status against the world as it is, at `now`.
fn token_status(world: &World, now: &Time) -> MachineTokenStatus {
    let compiled = world.compiled();
    machine_token(world.token(), world.token_secret(), &Index::new(&compiled), now)
}

/// `state` and `Ready` must tell the same story: `Active` exactly when `Ready` is true, and the
/// other states with the `Ready` reason that explains them.
fn assert_state(t: &MachineTokenStatus, state: TokenState, ready_reason: &str) {
    assert_eq!(t.state, Some(state), "{:?}", t.conditions);
    let ready = condition(&t.conditions, READY);
    assert_eq!(ready.status == "True", state == TokenState::Active, "{ready:?}");
    assert_eq!(ready.reason, ready_reason, "{ready:?}");
}

#[test]
fn every_token_status_names_its_state() {
    let one_second_ago = |w: &mut World| w.resources.tokens[0].spec.expires_at = Some(at(-1));

    // Issued and accepted.
    let world = World::new();
    assert_state(&token_status(&world, &at(0)), TokenState::Active, reason::COMPILED);

    // Not issued yet: no Secret.
    let mut world = World::new();
    world.resources.secrets.retain(|s| s.metadata.name.as_deref() != Some("app-token"));
    assert_state(&token_status(&world, &at(0)), TokenState::Pending, reason::NOT_ISSUED);

    // Its Service is missing.
    let mut world = World::new();
    world.resources.services.clear();
    assert_state(&token_status(&world, &at(0)), TokenState::Pending, reason::SERVICE_NOT_FOUND);

    // Due for rotation: the Secret holds the previous token.
    let mut world = World::new();
    world.resources.tokens[0].spec.rotation = 1;
    assert_eq!(token_status(&world, &at(0)).state, Some(TokenState::Pending));

    // Expired, issued or not: expired wins over pending.
    let mut world = World::new();
    one_second_ago(&mut world);
    assert_state(&token_status(&world, &at(0)), TokenState::Expired, reason::EXPIRED);
    world.resources.secrets.retain(|s| s.metadata.name.as_deref() != Some("app-token"));
    assert_state(&token_status(&world, &at(0)), TokenState::Expired, reason::EXPIRED);

    // Revoked wins over everything, expiry and a missing Service included.
    let mut world = World::new();
    world.resources.tokens[0].spec.revoked = true;
    assert_state(&token_status(&world, &at(0)), TokenState::Revoked, reason::REVOKED);
    one_second_ago(&mut world);
    world.resources.services.clear();
    assert_state(&token_status(&world, &at(0)), TokenState::Revoked, reason::REVOKED);
}

#[test]
fn a_token_turns_expired_when_the_clock_passes_its_expiry() {
    let mut world = World::new();
    world.resources.tokens[0].spec.expires_at = Some(at(60));
    let before = token_status(&world, &at(59));
    assert_eq!(before.state, Some(TokenState::Active));
    assert_eq!(before.expires_at, Some(at(60)), "the Expires column reads status.expiresAt");
    // As stored, then re-evaluated at the expiry the reconciler wakes for.
    world.resources.tokens[0].status = Some(serde_json::from_value(serde_json::to_value(&before).unwrap()).unwrap());
    assert_eq!(token_status(&world, &at(59)), before, "no write before the expiry");
    let after = token_status(&world, &at(60));
    assert_eq!(after.state, Some(TokenState::Expired));
    assert_eq!(serde_json::to_value(&after).unwrap()["state"], "Expired");
}

#[test]
fn a_provider_lists_the_models_it_serves_in_short() {
    let mut world = World::new();
    let compiled = world.compiled();
    let p = provider(&world.resources.providers[0], &Index::new(&compiled), &at(0));
    // openai's defaults are longer than the column.
    let models = p.models.unwrap();
    assert_eq!(models, "gpt-*, chatgpt-*, o1*, o3*, o4*, …");
    assert!(models.chars().count() <= 40);

    world.resources.providers[0].spec.models = vec![Pattern::new("gpt-*"), Pattern::new("o3*")];
    let compiled = world.compiled();
    let p = provider(&world.resources.providers[0], &Index::new(&compiled), &at(0));
    assert_eq!(p.models.as_deref(), Some("gpt-*, o3*"));
}

#[test]
fn summaries_fit_the_column() {
    assert_eq!(summary(&["a", "b"], 40), "a, b");
    assert_eq!(summary(&[], 40), "");
    let long = "m".repeat(60);
    let cut = summary(&[long.as_str(), "b"], 40);
    assert_eq!(cut.chars().count(), 40);
    assert!(cut.ends_with('…'));
    let exactly = "x".repeat(40);
    assert_eq!(summary(&[exactly.as_str()], 40), exactly);
    let wide = ["é".repeat(18), "ü".repeat(18), "z".to_owned()];
    let wide: Vec<&str> = wide.iter().map(String::as_str).collect();
    assert_eq!(summary(&wide, 40), format!("{}, …", "é".repeat(18)));
}

#[test]
fn a_policy_shows_its_limits_in_short() {
    use std::num::NonZeroU32;
    let mut world = World::new();
    let status = |w: &World| {
        let compiled = w.compiled();
        policy(&w.resources.policies[0], &Index::new(&compiled), &at(0)).limits.unwrap()
    };
    assert_eq!(status(&world), "none");
    world.resources.policies[0].spec.rate_limits = Some(RateLimits::default());
    assert_eq!(status(&world), "none");
    world.resources.policies[0].spec.rate_limits = Some(RateLimits {
        requests_per_minute: NonZeroU32::new(60),
        tokens_per_minute: NonZeroU32::new(10_000),
        max_concurrent_requests: NonZeroU32::new(4),
    });
    assert_eq!(status(&world), "60 rpm, 10k tpm, 4 concurrent");
    world.resources.policies[0].spec.rate_limits =
        Some(RateLimits { tokens_per_minute: NonZeroU32::new(1_500_000), ..RateLimits::default() });
    assert_eq!(status(&world), "1.5M tpm");
}

#[test]
fn counts_are_short_but_exact() {
    for (n, text) in [
        (1, "1"),
        (999, "999"),
        (1_000, "1k"),
        (1_500, "1.5k"),
        (1_050, "1050"),
        (12_345, "12345"),
        (250_000, "250k"),
        (2_000_000, "2M"),
        (2_500_000, "2.5M"),
        (2_550_000, "2550k"),
    ] {
        assert_eq!(compact(n), text, "{n}");
    }
}

#[test]
fn a_budget_keeps_the_spend_it_does_not_own() {
    let mut world = World::new();
    world.resources.budgets[0].status =
        Some(BudgetStatus { daily_spend_usd: Some("1.25".into()), ..BudgetStatus::default() });
    let compiled = world.compiled();
    let b = budget(&world.resources.budgets[0], &Index::new(&compiled), &at(0));
    assert_eq!(b.daily_spend_usd.as_deref(), Some("1.25"));
}

#[test]
fn very_long_messages_are_capped() {
    let d = Diagnostic {
        kind: "Provider",
        object: ObjectId::new("a", "b"),
        severity: uprox_crds::Severity::Error,
        reason: reason::INVALID_SPEC,
        message: "é".repeat(40_000),
    };
    let text = joined(&[&d]);
    assert!(text.len() <= 32 * 1024);
    assert!(text.ends_with('…'));
}
