//! The `GatewayConfig` contract: everything a gateway needs to serve, as compiled from the
//! resources. The operator writes it into a ConfigMap; standalone mode builds it in-process.
//!
//! It is versioned ([`CONFIG_VERSION`]) and self-contained: every reference is resolved, every
//! default applied, every token reduced to its SHA-256 digest. It never holds a secret value —
//! provider keys travel beside it in [`KeyMaterial`], which the operator seals. Unknown fields
//! are ignored on read so an older gateway can read a newer operator's config of the same
//! version.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::common::{ObjectId, Pattern, Scope};
use crate::prices::PriceEntry;
use crate::provider::ProviderType;
use crate::secret::SecretString;

/// The version of the [`GatewayConfig`] shape written by this crate.
pub const CONFIG_VERSION: u32 = 1;

/// The compiled configuration of every gateway replica.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct GatewayConfig {
    /// Shape version; a gateway refuses a config whose version it does not know.
    pub version: u32,
    /// Every usable Provider, sorted by id.
    #[serde(default)]
    pub providers: Vec<ProviderConfig>,
    /// Every Service, sorted by id.
    #[serde(default)]
    pub services: Vec<ServiceConfig>,
    /// Every live (issued, not revoked) token, sorted by digest.
    #[serde(default)]
    pub tokens: Vec<TokenConfig>,
    /// Every valid Policy, sorted by id.
    #[serde(default)]
    pub policies: Vec<PolicyConfig>,
    /// Every Budget, sorted by id.
    #[serde(default)]
    pub budgets: Vec<BudgetConfig>,
}

/// One upstream.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ProviderConfig {
    /// The Provider resource.
    pub id: ObjectId,
    /// Its wire protocol.
    #[serde(rename = "type")]
    pub provider_type: ProviderType,
    /// Base URL without a trailing slash, e.g. `https://api.openai.com/v1`.
    pub base_url: String,
    /// Azure `api-version` query value.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub api_version: Option<String>,
    /// Seconds to wait for the upstream's response headers.
    pub timeout_seconds: u32,
    /// Models it serves: exact names or trailing-`*` prefixes.
    pub models: Vec<Pattern>,
    /// Whether `models` was written in the Provider spec (`true`) or is its type's default
    /// (`false`). (Model listings ask the upstream for lists of patterns only, written or
    /// default, and answer lists with exact names from the list.) Configs written before this
    /// field existed read as `false`.
    #[serde(default)]
    pub models_explicit: bool,
    /// Its keys, highest priority first.
    #[serde(default)]
    pub keys: Vec<KeyConfig>,
    /// Prices from `spec.prices`, in spec order; they win over the built-in catalog
    /// ([`crate::prices::lookup`]). Configs written before this field existed read as empty.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub prices: Vec<PriceEntry>,
}

impl ProviderConfig {
    /// The price of `model` through this provider: its `spec.prices`, else the catalog; `None`
    /// when neither knows it. See [`crate::prices::lookup`].
    pub fn price<'a>(&'a self, catalog: &'a crate::prices::Catalog, model: &str) -> Option<&'a crate::prices::Price> {
        crate::prices::lookup(&self.prices, catalog, model).map(|(price, _)| price)
    }

    /// The most specific pattern of this provider that matches `model`.
    pub fn best_match(&self, model: &str) -> Option<usize> {
        self.models.iter().filter(|p| p.matches(model)).map(Pattern::specificity).max()
    }
}

/// One key of a provider. The value is in [`KeyMaterial`] under `id`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct KeyConfig {
    /// `namespace/provider/label`: unique across the config.
    pub id: String,
    /// The label from the Provider spec.
    pub label: String,
    /// Higher is preferred.
    pub priority: i32,
    /// Azure: the resource endpoint this key belongs to, when it differs from the base URL.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub endpoint: Option<String>,
}

/// One workload identity.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ServiceConfig {
    /// The Service resource.
    pub id: ObjectId,
    /// Providers it may reach, in routing order (own namespace first, then by id).
    pub providers: Vec<ObjectId>,
    /// Policies attached to it.
    #[serde(default)]
    pub policies: Vec<ObjectId>,
    /// Key id to use for the provider it belongs to, instead of the highest-priority key.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pinned_key: Option<String>,
    /// Response-cache time to live in seconds; 0: none set (the cache is off unless one of
    /// the caller's Policies sets a TTL).
    #[serde(default)]
    pub cache_ttl_seconds: u32,
    /// Budgets that count its spend.
    #[serde(default)]
    pub budgets: Vec<ObjectId>,
    /// When set, every request of this Service is refused with this message (fail closed, e.g.
    /// a Policy it names does not exist).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub denied: Option<String>,
}

/// One live machine token.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct TokenConfig {
    /// Lowercase hex SHA-256 of the whole token.
    pub digest: String,
    /// The MachineToken resource.
    pub id: ObjectId,
    /// The Service it acts for.
    pub service: ObjectId,
    /// Scopes it holds; empty means all.
    #[serde(default)]
    pub scopes: Vec<Scope>,
    /// Policies attached to the token itself.
    #[serde(default)]
    pub policies: Vec<ObjectId>,
    /// Expiry, seconds since the Unix epoch.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expires_at: Option<i64>,
    /// When set, every request with this token is refused with this message.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub denied: Option<String>,
}

/// One Policy.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PolicyConfig {
    /// The Policy resource.
    pub id: ObjectId,
    /// Provider-name allowlist; empty allows all.
    #[serde(default)]
    pub providers: Vec<Pattern>,
    /// Model allowlist; empty allows all.
    #[serde(default)]
    pub models: Vec<Pattern>,
    /// Scopes allowed; empty allows all.
    #[serde(default)]
    pub scopes: Vec<Scope>,
    /// Requests per minute.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub requests_per_minute: Option<u32>,
    /// Tokens per minute.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tokens_per_minute: Option<u32>,
    /// Concurrent requests.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_concurrent_requests: Option<u32>,
    /// Response-cache mode; unset is `Deterministic`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cache_mode: Option<crate::policy::CacheMode>,
    /// Response-cache TTL in seconds, when the Policy sets one (0: off).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cache_ttl_seconds: Option<u32>,
}

/// One Budget.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct BudgetConfig {
    /// The Budget resource.
    pub id: ObjectId,
    /// Daily ceiling in micro-USD (UTC calendar day).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub daily_micro_usd: Option<u64>,
    /// Monthly ceiling in micro-USD (UTC calendar month).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub monthly_micro_usd: Option<u64>,
    /// Alert thresholds in percent, ascending.
    pub alert_thresholds: Vec<u8>,
    /// Whether crossing the ceiling blocks requests.
    pub block: bool,
}

/// Provider key values by [`KeyConfig::id`]. Kept apart from the config so the config can be
/// written to a ConfigMap while these are sealed into a Secret.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct KeyMaterial(pub BTreeMap<String, SecretString>);

impl KeyMaterial {
    /// The value of one key.
    pub fn get(&self, id: &str) -> Option<&SecretString> {
        self.0.get(id)
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn a_provider_without_models_explicit_reads_as_defaults() {
        let json = r#"{"id":{"namespace":"a","name":"p"},"type":"openai","baseUrl":"https://api.openai.com/v1",
            "timeoutSeconds":300,"models":["gpt-*"],"keys":[]}"#;
        let p: ProviderConfig = serde_json::from_str(json).unwrap();
        assert!(!p.models_explicit);
        assert!(p.prices.is_empty(), "configs from before spec.prices read as unpriced overrides");
        let back = serde_json::to_value(ProviderConfig { models_explicit: true, ..p }).unwrap();
        assert_eq!(back["modelsExplicit"], true);
    }
}
