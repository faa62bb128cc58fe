//! The gateway's whole view of the world: one immutable [`Snapshot`] built from a
//! `GatewayConfig` and its key material, validated before it is swapped in.
//!
//! Building does all the work a request would otherwise repeat: token digests become a hash
//! map, references become indices, URLs are parsed and `Authorization` headers pre-rendered.
//! Handlers read a snapshot through one `Arc` and never lock. This module does not load or
//! watch anything; config sources hand it values.

use std::collections::HashMap;
use std::sync::Arc;

use uprox_crds::common::{ObjectId, Scope};
use uprox_crds::config::{CONFIG_VERSION, GatewayConfig, KeyMaterial, PolicyConfig, ProviderConfig};

mod providers;

use providers::build_provider;
pub use providers::{KeyEntry, ProviderEntry};

use crate::limits::{LimitSet, Registry, Subject};
use crate::spend::budget::BudgetEntry;
use crate::spend::state::{ServiceMeter, Spend};

/// Why a config was refused. The last good snapshot keeps serving.
#[derive(Debug, thiserror::Error)]
pub enum SnapshotError {
    /// The config's shape version is not one this gateway knows.
    #[error("config version {found} is not supported (this gateway reads version {CONFIG_VERSION})")]
    Version {
        /// Version found.
        found: u32,
    },
    /// A reference inside the config does not resolve.
    #[error("{0}")]
    Dangling(String),
    /// A URL or a header value is malformed.
    #[error("{0}")]
    Invalid(String),
}

/// One live token.
#[derive(Debug)]
pub struct TokenEntry {
    /// The MachineToken.
    pub id: ObjectId,
    /// Index into [`Snapshot::services`].
    pub service: usize,
    /// Scopes the token holds; empty is all.
    pub scopes: Vec<Scope>,
    /// Indices into [`Snapshot::policies`]: the Service's, then the token's.
    pub policies: Box<[usize]>,
    /// How many of [`policies`](Self::policies) are the Service's.
    pub service_policies: usize,
    /// The rate limiters that apply (see `limits`), set when the snapshot is installed; `None`
    /// when no attached Policy sets a limit.
    pub limits: Option<Arc<LimitSet>>,
    /// Expiry in Unix seconds.
    pub expires_at: Option<i64>,
    /// Fail-closed message.
    pub denied: Option<String>,
    /// How the response cache treats its requests; `None`: off.
    pub cache: Option<crate::cache::Rule>,
}

/// One Service.
#[derive(Debug)]
pub struct ServiceEntry {
    /// The Service.
    pub id: ObjectId,
    /// Indices into [`Snapshot::providers`], in routing order.
    pub providers: Box<[usize]>,
    /// Pinned `(provider, key)` indices.
    pub pinned: Option<(usize, usize)>,
    /// Fail-closed message.
    pub denied: Option<String>,
    /// Its spend, kept across snapshots (see [`Snapshot::attach_spend`]).
    pub meter: Arc<ServiceMeter>,
    /// Indices into [`Snapshot::budgets`] of the Budgets counting its spend.
    pub budgets: Box<[usize]>,
}

/// A routing decision: which provider, with which key.
#[derive(Debug, Clone, Copy)]
pub struct Route {
    /// Index into [`Snapshot::providers`].
    pub provider: usize,
    /// Index into that provider's keys, when it has any.
    pub key: Option<usize>,
}

/// Everything a request needs, immutable.
#[derive(Debug, Default)]
pub struct Snapshot {
    tokens: HashMap<[u8; 32], TokenEntry>,
    /// Services by index.
    pub services: Vec<ServiceEntry>,
    /// Providers by index.
    pub providers: Vec<ProviderEntry>,
    /// Policies by index.
    pub policies: Vec<PolicyConfig>,
    /// Budgets by index.
    pub budgets: Vec<BudgetEntry>,
}

impl Snapshot {
    /// Validates `config` and builds the snapshot. Fails without side effects.
    pub fn build(config: &GatewayConfig, keys: &KeyMaterial) -> Result<Self, SnapshotError> {
        if config.version != CONFIG_VERSION {
            return Err(SnapshotError::Version { found: config.version });
        }
        let providers = config.providers.iter().map(|p| build_provider(p, keys)).collect::<Result<Vec<_>, _>>()?;
        let provider_index: HashMap<&ObjectId, usize> =
            config.providers.iter().enumerate().map(|(i, p)| (&p.id, i)).collect();
        let policy_index: HashMap<&ObjectId, usize> =
            config.policies.iter().enumerate().map(|(i, p)| (&p.id, i)).collect();
        let lookup_policies = |owner: &ObjectId, ids: &[ObjectId]| -> Result<Vec<usize>, SnapshotError> {
            ids.iter()
                .map(|id| {
                    policy_index.get(id).copied().ok_or_else(|| {
                        SnapshotError::Dangling(format!("{owner} refers to Policy {id}, which is not in the config"))
                    })
                })
                .collect()
        };

        let mut services = Vec::with_capacity(config.services.len());
        let mut service_policies = Vec::with_capacity(config.services.len());
        let mut service_index = HashMap::new();
        for (i, s) in config.services.iter().enumerate() {
            let routes = s
                .providers
                .iter()
                .map(|id| {
                    provider_index.get(id).copied().ok_or_else(|| {
                        SnapshotError::Dangling(format!(
                            "Service {} refers to Provider {id}, which is not in the config",
                            s.id
                        ))
                    })
                })
                .collect::<Result<Vec<_>, _>>()?;
            let pinned = match &s.pinned_key {
                None => None,
                Some(key_id) => Some(find_key(&config.providers, key_id).ok_or_else(|| {
                    SnapshotError::Dangling(format!("Service {} pins key {key_id}, which is not in the config", s.id))
                })?),
            };
            service_policies.push(lookup_policies(&s.id, &s.policies)?);
            service_index.insert(&s.id, i);
            services.push(ServiceEntry {
                id: s.id.clone(),
                providers: routes.into(),
                pinned,
                denied: s.denied.clone(),
                meter: Arc::new(ServiceMeter::detached(&s.id)),
                budgets: Box::default(),
            });
        }

        // Budgets, and which Services each counts (the config lists them per Service).
        let budget_index: HashMap<&ObjectId, usize> =
            config.budgets.iter().enumerate().map(|(i, b)| (&b.id, i)).collect();
        let mut counted: Vec<Vec<usize>> = vec![Vec::new(); config.budgets.len()];
        for (i, s) in config.services.iter().enumerate() {
            let mut own = Vec::with_capacity(s.budgets.len());
            for id in &s.budgets {
                let b = *budget_index.get(id).ok_or_else(|| {
                    SnapshotError::Dangling(format!(
                        "Service {} refers to Budget {id}, which is not in the config",
                        s.id
                    ))
                })?;
                own.push(b);
                counted[b].push(i);
            }
            services[i].budgets = own.into();
        }
        let budgets = config
            .budgets
            .iter()
            .zip(counted)
            .map(|(config, services)| BudgetEntry {
                config: config.clone(),
                meter: Arc::default(),
                services: services.into(),
            })
            .collect();

        let mut tokens = HashMap::with_capacity(config.tokens.len());
        for t in &config.tokens {
            let mut digest = [0u8; 32];
            hex::decode_to_slice(&t.digest, &mut digest)
                .map_err(|_| SnapshotError::Invalid(format!("MachineToken {} has a malformed digest", t.id)))?;
            let service = *service_index.get(&t.service).ok_or_else(|| {
                SnapshotError::Dangling(format!(
                    "MachineToken {} refers to Service {}, which is not in the config",
                    t.id, t.service
                ))
            })?;
            let mut policies = service_policies[service].clone();
            let own_start = policies.len();
            policies.extend(lookup_policies(&t.id, &t.policies)?);
            let cache = crate::cache::Rule::resolve(
                config.services[service].cache_ttl_seconds,
                policies.iter().map(|&p| &config.policies[p]),
            );
            let entry = TokenEntry {
                cache,
                id: t.id.clone(),
                service,
                scopes: t.scopes.clone(),
                policies: policies.into(),
                service_policies: own_start,
                limits: None,
                expires_at: t.expires_at,
                denied: t.denied.clone(),
            };
            if tokens.insert(digest, entry).is_some() {
                return Err(SnapshotError::Invalid(format!("two tokens share the digest of MachineToken {}", t.id)));
            }
        }
        Ok(Self { tokens, services, providers, policies: config.policies.clone(), budgets })
    }

    /// Gives every Service and Budget its meter from `spend`, so spend and reservations carry
    /// over from the previous snapshot; `spend` forgets meters no longer configured once they
    /// have nothing left to write.
    pub fn attach_spend(&mut self, spend: &Spend) {
        for service in &mut self.services {
            service.meter = spend.service(&service.id);
        }
        for budget in &mut self.budgets {
            budget.meter = spend.budget(&budget.config.id);
        }
        let services: Vec<ObjectId> = self.services.iter().map(|s| s.id.clone()).collect();
        let budgets: Vec<ObjectId> = self.budgets.iter().map(|b| b.config.id.clone()).collect();
        spend.retain(&services, &budgets);
    }

    /// Gives every token the rate limiters of its Policies from `registry`: shared per
    /// `(Policy, Service)` for the Service's Policies, per `(Policy, token)` for the token's own.
    /// Limiters whose limits did not change keep their state; the registry forgets the rest.
    pub fn attach_limits(&mut self, registry: &Registry) {
        let mut resolver = registry.resolver();
        for (digest, token) in &mut self.tokens {
            let service = Subject::Service(self.services[token.service].id.clone());
            let own = Subject::Token(*digest);
            let limiters = token
                .policies
                .iter()
                .enumerate()
                .filter_map(|(i, &p)| {
                    let subject = if i < token.service_policies { &service } else { &own };
                    resolver.get(&self.policies[p], subject)
                })
                .collect();
            token.limits = LimitSet::new(limiters);
        }
        resolver.finish();
    }

    /// Shares the cool-downs of `previous`'s keys with this snapshot's: a key of the same
    /// Provider with the same label, value and endpoint keeps cooling down after a reload (and
    /// a failure seen by a request still on `previous` counts here too). A changed key — a
    /// rotated secret, say — starts healthy.
    pub fn carry_cooldowns(&mut self, previous: &Snapshot) {
        let before: HashMap<&str, &ProviderEntry> = previous.providers.iter().map(|p| (&*p.name, p)).collect();
        for provider in &mut self.providers {
            let Some(old) = before.get(&*provider.name) else { continue };
            provider.share_cooldowns(old);
        }
    }

    /// The token with this digest.
    pub fn token(&self, digest: &[u8; 32]) -> Option<&TokenEntry> {
        self.tokens.get(digest)
    }

    /// How many tokens are live.
    pub fn token_count(&self) -> usize {
        self.tokens.len()
    }

    /// Picks the provider and key for `model` among the Service's providers: the most specific
    /// model pattern wins; on a tie the earlier provider in routing order.
    pub fn route(&self, service: usize, model: &str) -> Option<Route> {
        let svc = self.services.get(service)?;
        let mut best: Option<(usize, usize)> = None;
        for &p in svc.providers.iter() {
            if let Some(score) = self.providers[p].config.best_match(model)
                && best.is_none_or(|(_, s)| score > s)
            {
                best = Some((p, score));
            }
        }
        let (provider, _) = best?;
        let key = match svc.pinned {
            Some((pp, k)) if pp == provider => Some(k),
            _ if self.providers[provider].keys.is_empty() => None,
            _ => Some(0),
        };
        Some(Route { provider, key })
    }
}

fn find_key(providers: &[ProviderConfig], key_id: &str) -> Option<(usize, usize)> {
    providers.iter().enumerate().find_map(|(p, cfg)| cfg.keys.iter().position(|k| k.id == key_id).map(|k| (p, k)))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;
    use uprox_crds::common::Pattern;
    use uprox_crds::config::{KeyConfig, ServiceConfig, TokenConfig};
    use uprox_crds::provider::ProviderType;
    use uprox_crds::secret::SecretString;

    fn provider(name: &str, models: &[&str], keys: &[(&str, i32)]) -> ProviderConfig {
        ProviderConfig {
            id: ObjectId::new("ns", name),
            provider_type: ProviderType::OpenaiCompatible,
            base_url: format!("http://127.0.0.1:1/{name}"),
            api_version: None,
            timeout_seconds: 5,
            models: models.iter().map(|m| Pattern::new(*m)).collect(),
            models_explicit: true,
            prices: Vec::new(),
            keys: keys
                .iter()
                .map(|(l, p)| KeyConfig {
                    id: format!("ns/{name}/{l}"),
                    label: (*l).into(),
                    priority: *p,
                    endpoint: None,
                })
                .collect(),
        }
    }

    fn config(pinned: Option<&str>) -> (GatewayConfig, KeyMaterial) {
        let providers = vec![
            provider("a", &["gpt-*"], &[("k1", 1), ("k2", 0)]),
            provider("b", &["gpt-4o", "claude-*"], &[("k", 0)]),
        ];
        let mut keys = KeyMaterial::default();
        for p in &providers {
            for k in &p.keys {
                keys.0.insert(k.id.clone(), SecretString::new(format!("sk-{}", k.id)));
            }
        }
        let service = ServiceConfig {
            id: ObjectId::new("ns", "svc"),
            providers: vec![ObjectId::new("ns", "a"), ObjectId::new("ns", "b")],
            policies: vec![],
            pinned_key: pinned.map(str::to_owned),
            cache_ttl_seconds: 0,
            budgets: vec![],
            denied: None,
        };
        let token = TokenConfig {
            digest: hex::encode([1u8; 32]),
            id: ObjectId::new("ns", "t"),
            service: service.id.clone(),
            scopes: vec![],
            policies: vec![],
            expires_at: None,
            denied: None,
        };
        (
            GatewayConfig {
                version: CONFIG_VERSION,
                providers,
                services: vec![service],
                tokens: vec![token],
                policies: vec![],
                budgets: vec![],
            },
            keys,
        )
    }

    #[test]
    fn routes_by_specificity_then_order() {
        let (cfg, keys) = config(None);
        let snap = Snapshot::build(&cfg, &keys).unwrap();
        assert_eq!(snap.route(0, "gpt-4o").unwrap().provider, 1, "exact beats prefix");
        assert_eq!(snap.route(0, "GPT-4O-mini").unwrap().provider, 0);
        assert_eq!(snap.route(0, "claude-3").unwrap().provider, 1);
        assert!(snap.route(0, "llama").is_none());
        assert_eq!(snap.route(0, "gpt-5").unwrap().key, Some(0));
    }

    #[test]
    fn each_token_gets_the_cache_rule_of_its_service_and_policies() {
        let (mut cfg, keys) = config(None);
        cfg.services[0].cache_ttl_seconds = 600;
        // As the operator writes it: the Policy's rule in the config's JSON.
        let policy: PolicyConfig = serde_json::from_value(serde_json::json!({
            "id": {"namespace": "ns", "name": "replay"}, "cacheMode": "All", "cacheTtlSeconds": 60
        }))
        .unwrap();
        cfg.policies.push(policy);
        let mut own = cfg.tokens[0].clone();
        own.digest = hex::encode([2u8; 32]);
        own.id = ObjectId::new("ns", "t2");
        own.policies = vec![ObjectId::new("ns", "replay")];
        cfg.tokens.push(own);
        let snap = Snapshot::build(&cfg, &keys).unwrap();
        let rule = |digest: u8| snap.token(&[digest; 32]).unwrap().cache;
        let minutes = |m: u64| std::time::Duration::from_secs(60 * m);
        use uprox_crds::policy::CacheMode;
        assert_eq!(rule(1), Some(crate::cache::Rule { ttl: minutes(10), mode: CacheMode::Deterministic }));
        assert_eq!(rule(2), Some(crate::cache::Rule { ttl: minutes(1), mode: CacheMode::All }));
    }

    #[test]
    fn pinned_key_wins_on_its_provider_only() {
        let (cfg, keys) = config(Some("ns/a/k2"));
        let snap = Snapshot::build(&cfg, &keys).unwrap();
        assert_eq!(snap.route(0, "gpt-5").unwrap().key, Some(1));
        assert_eq!(snap.route(0, "claude-3").unwrap().key, Some(0));
    }

    #[test]
    fn tokens_are_found_by_digest() {
        let (cfg, keys) = config(None);
        let snap = Snapshot::build(&cfg, &keys).unwrap();
        assert_eq!(snap.token(&[1u8; 32]).unwrap().id.name, "t");
        assert!(snap.token(&[2u8; 32]).is_none());
    }

    #[test]
    fn refuses_bad_configs() {
        let (mut cfg, keys) = config(None);
        cfg.version = 99;
        assert!(matches!(Snapshot::build(&cfg, &keys), Err(SnapshotError::Version { found: 99 })));

        let (cfg, _) = config(None);
        assert!(matches!(Snapshot::build(&cfg, &KeyMaterial::default()), Err(SnapshotError::Dangling(_))));

        let (mut cfg, keys) = config(Some("ns/a/nope"));
        assert!(Snapshot::build(&cfg, &keys).is_err());
        cfg.services[0].pinned_key = None;
        cfg.tokens[0].digest = "zz".into();
        assert!(matches!(Snapshot::build(&cfg, &keys), Err(SnapshotError::Invalid(_))));
    }

    #[test]
    fn key_headers_are_sensitive_and_redacted() {
        let (cfg, keys) = config(None);
        let snap = Snapshot::build(&cfg, &keys).unwrap();
        let key = &snap.providers[0].keys[0];
        assert!(key.auth.is_sensitive());
        assert!(!format!("{snap:?}").contains("sk-ns"));
    }
}
