//! The access decision for one request: the token's scopes, then every Policy attached to its
//! Service and to the token itself. Allowlists intersect (each Policy must allow), which makes
//! adding a Policy only ever narrow access. Pure functions over the snapshot; no IO, no lock.
//!
//! Denial messages name the rule and the Policy (always in the caller's own namespace), never a
//! key or another team's resources.

use uprox_crds::common::{Scope, allowed_by};

use crate::auth::Caller;
use crate::error::GatewayError;
use crate::snapshot::{ProviderEntry, Snapshot};

/// Whether the caller holds `scope`.
pub fn check_scope(snapshot: &Snapshot, caller: &Caller<'_>, scope: Scope) -> Result<(), GatewayError> {
    if !caller.token.scopes.is_empty() && !caller.token.scopes.contains(&scope) {
        return Err(GatewayError::Forbidden(format!(
            "MachineToken {} does not hold the scope \"{}\"",
            caller.token.id,
            scope.as_str()
        )));
    }
    for &p in caller.token.policies.iter() {
        let policy = &snapshot.policies[p];
        if !policy.scopes.is_empty() && !policy.scopes.contains(&scope) {
            return Err(GatewayError::Forbidden(format!(
                "Policy {} does not allow the scope \"{}\"",
                policy.id,
                scope.as_str()
            )));
        }
    }
    Ok(())
}

/// Whether every attached Policy allows this provider.
pub fn allows_provider(snapshot: &Snapshot, caller: &Caller<'_>, provider: &ProviderEntry) -> Result<(), GatewayError> {
    for &p in caller.token.policies.iter() {
        let policy = &snapshot.policies[p];
        if !allowed_by(&policy.providers, &provider.config.id.name) {
            return Err(GatewayError::Forbidden(format!(
                "Policy {} does not allow the provider serving this model",
                policy.id
            )));
        }
    }
    Ok(())
}

/// Whether every attached Policy allows this model.
pub fn allows_model(snapshot: &Snapshot, caller: &Caller<'_>, model: &str) -> Result<(), GatewayError> {
    for &p in caller.token.policies.iter() {
        let policy = &snapshot.policies[p];
        if !allowed_by(&policy.models, model) {
            return Err(GatewayError::Forbidden(format!("Policy {} does not allow the model \"{model}\"", policy.id)));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use uprox_crds::common::{ObjectId, Pattern};
    use uprox_crds::config::{CONFIG_VERSION, GatewayConfig, KeyMaterial, PolicyConfig, ServiceConfig, TokenConfig};

    use super::*;
    use crate::auth::Caller;
    use crate::snapshot::Snapshot;

    fn policy(name: &str, providers: &[&str], models: &[&str], scopes: &[Scope]) -> PolicyConfig {
        PolicyConfig {
            id: ObjectId::new("team", name),
            providers: providers.iter().map(|p| Pattern::new(*p)).collect(),
            models: models.iter().map(|m| Pattern::new(*m)).collect(),
            scopes: scopes.to_vec(),
            requests_per_minute: None,
            tokens_per_minute: None,
            max_concurrent_requests: None,
            ..Default::default()
        }
    }

    /// A snapshot with one Service (Policies `service`) and one token (scopes `scopes`,
    /// Policies `token`), and the Policies `all`.
    fn snapshot(all: Vec<PolicyConfig>, service: &[&str], token: &[&str], scopes: &[Scope]) -> Snapshot {
        let ids = |names: &[&str]| names.iter().map(|n| ObjectId::new("team", *n)).collect::<Vec<_>>();
        let config = GatewayConfig {
            version: CONFIG_VERSION,
            providers: vec![],
            services: vec![ServiceConfig {
                id: ObjectId::new("team", "app"),
                providers: vec![],
                policies: ids(service),
                pinned_key: None,
                cache_ttl_seconds: 0,
                budgets: vec![],
                denied: None,
            }],
            tokens: vec![TokenConfig {
                digest: hex::encode([1u8; 32]),
                id: ObjectId::new("team", "tok"),
                service: ObjectId::new("team", "app"),
                scopes: scopes.to_vec(),
                policies: ids(token),
                expires_at: None,
                denied: None,
            }],
            policies: all,
            budgets: vec![],
        };
        Snapshot::build(&config, &KeyMaterial::default()).unwrap()
    }

    fn caller(snapshot: &Snapshot) -> Caller<'_> {
        let token = snapshot.token(&[1u8; 32]).unwrap();
        Caller { token, service: &snapshot.services[0], service_index: 0, digest: [1; 32] }
    }

    fn provider(name: &str) -> ProviderEntry {
        ProviderEntry {
            name: std::sync::Arc::from(format!("other-team/{name}")),
            config: uprox_crds::config::ProviderConfig {
                id: ObjectId::new("other-team", name),
                provider_type: uprox_crds::provider::ProviderType::Mock,
                base_url: "http://127.0.0.1:1".into(),
                api_version: None,
                timeout_seconds: 1,
                models: vec![],
                models_explicit: false,
                keys: vec![],
                prices: vec![],
            },
            keys: vec![],
            chat_url: None,
            embeddings_url: None,
            models_url: None,
            responses_url: None,
            fixed_headers: vec![],
            last_price: arc_swap::ArcSwapOption::empty(),
        }
    }

    fn denial(result: Result<(), GatewayError>) -> String {
        match result {
            Err(GatewayError::Forbidden(message)) => message,
            other => panic!("expected a 403, got {other:?}"),
        }
    }

    #[test]
    fn no_scopes_and_no_policies_allow_everything() {
        let snap = snapshot(vec![], &[], &[], &[]);
        let c = caller(&snap);
        for scope in [Scope::Chat, Scope::Messages, Scope::Embeddings, Scope::Models, Scope::Responses, Scope::Files] {
            assert!(check_scope(&snap, &c, scope).is_ok());
        }
        assert!(allows_provider(&snap, &c, &provider("anything")).is_ok());
        assert!(allows_model(&snap, &c, "any-model").is_ok());
    }

    #[test]
    fn scopes_of_the_token_the_service_policy_and_the_token_policy_all_apply() {
        let policies = vec![
            policy("svc-scopes", &[], &[], &[Scope::Chat, Scope::Embeddings]),
            policy("tok-scopes", &[], &[], &[Scope::Chat, Scope::Models]),
        ];
        // Each source alone.
        let snap = snapshot(vec![], &[], &[], &[Scope::Chat]);
        let m = denial(check_scope(&snap, &caller(&snap), Scope::Files));
        assert_eq!(m, "MachineToken team/tok does not hold the scope \"files\"");
        let snap = snapshot(policies.clone(), &["svc-scopes"], &[], &[]);
        assert!(check_scope(&snap, &caller(&snap), Scope::Embeddings).is_ok());
        let m = denial(check_scope(&snap, &caller(&snap), Scope::Models));
        assert_eq!(m, "Policy team/svc-scopes does not allow the scope \"models\"");
        let snap = snapshot(policies.clone(), &[], &["tok-scopes"], &[]);
        assert!(check_scope(&snap, &caller(&snap), Scope::Models).is_ok());
        assert!(denial(check_scope(&snap, &caller(&snap), Scope::Embeddings)).contains("team/tok-scopes"));
        // Both Policies: only what both allow; the Service's Policy is named first.
        let snap = snapshot(policies, &["svc-scopes"], &["tok-scopes"], &[]);
        let c = caller(&snap);
        assert!(check_scope(&snap, &c, Scope::Chat).is_ok());
        assert!(denial(check_scope(&snap, &c, Scope::Models)).contains("svc-scopes"));
        assert!(denial(check_scope(&snap, &c, Scope::Embeddings)).contains("tok-scopes"));
        assert!(denial(check_scope(&snap, &c, Scope::Messages)).contains("svc-scopes"));
    }

    #[test]
    fn provider_allowlists_intersect_with_globs_and_never_name_the_provider() {
        let policies = vec![policy("svc", &["open*", "mock"], &[], &[]), policy("tok", &["OPENAI-*"], &[], &[])];
        let snap = snapshot(policies.clone(), &["svc"], &[], &[]);
        let c = caller(&snap);
        assert!(allows_provider(&snap, &c, &provider("openai-eu")).is_ok());
        assert!(allows_provider(&snap, &c, &provider("mock")).is_ok());
        assert!(allows_provider(&snap, &c, &provider("mock-2")).is_err(), "exact names are exact");
        let snap = snapshot(policies, &["svc"], &["tok"], &[]);
        let c = caller(&snap);
        assert!(allows_provider(&snap, &c, &provider("openai-eu")).is_ok(), "case-insensitive");
        let m = denial(allows_provider(&snap, &c, &provider("openrouter")));
        assert_eq!(m, "Policy team/tok does not allow the provider serving this model");
        let m = denial(allows_provider(&snap, &c, &provider("secret-anthropic")));
        assert!(m.contains("team/svc") && !m.contains("secret-anthropic") && !m.contains("other-team"), "{m}");
    }

    #[test]
    fn model_allowlists_intersect_with_globs() {
        let policies =
            vec![policy("svc", &[], &["gpt-*", "claude-3"], &[]), policy("tok", &[], &["gpt-4o*", "*"], &[])];
        let snap = snapshot(policies.clone(), &["svc"], &["tok"], &[]);
        let c = caller(&snap);
        assert!(allows_model(&snap, &c, "gpt-4o-mini").is_ok());
        assert!(allows_model(&snap, &c, "GPT-5").is_ok(), "`*` in the token's Policy allows what the Service's does");
        assert_eq!(
            denial(allows_model(&snap, &c, "claude-3-5")),
            "Policy team/svc does not allow the model \"claude-3-5\""
        );
        let narrow = vec![policies[0].clone(), policy("tok", &[], &["gpt-4o*"], &[])];
        let snap = snapshot(narrow, &["svc"], &["tok"], &[]);
        let c = caller(&snap);
        assert!(allows_model(&snap, &c, "gpt-4o").is_ok());
        assert_eq!(denial(allows_model(&snap, &c, "gpt-5")), "Policy team/tok does not allow the model \"gpt-5\"");
        assert!(denial(allows_model(&snap, &c, "claude-3")).contains("team/tok"), "allowed by one, not the other");
    }

    #[test]
    fn a_policy_shared_by_service_and_token_is_checked_and_named_once_per_rule() {
        let policies = vec![policy("both", &[], &["gpt-*"], &[Scope::Chat])];
        let snap = snapshot(policies, &["both"], &["both"], &[]);
        let c = caller(&snap);
        assert_eq!(c.token.policies.len(), 2);
        assert!(allows_model(&snap, &c, "gpt-4o").is_ok());
        assert_eq!(denial(allows_model(&snap, &c, "o1")), "Policy team/both does not allow the model \"o1\"");
        assert!(check_scope(&snap, &c, Scope::Files).is_err());
    }
}
