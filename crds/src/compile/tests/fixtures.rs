//! Chainable builders for the resources and Secrets `compile()` reads, so each test reads as
//! the resources it is about and nothing else. Gathering them is [`super::world`]'s job.
//!
//! Builders start from the smallest valid object and every method changes one thing. They do
//! not validate: tests of invalid input build it on purpose.

use std::collections::BTreeMap;

use k8s_openapi::ByteString;
use k8s_openapi::api::core::v1::Secret;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, Time};
use k8s_openapi::jiff::Timestamp;

use crate::budget::{Budget, BudgetAction, BudgetSpec, Usd};
use crate::common::{Pattern, Scope, SecretKeyRef};
use crate::machine_token::{MachineToken, MachineTokenSpec};
use crate::policy::{Policy, PolicySpec, RateLimits};
use crate::provider::{Provider, ProviderKey, ProviderSpec, ProviderType};
use crate::service::{KeyPin, Service, ServiceSpec};
use crate::token;

/// Metadata with a namespace and a name.
pub fn meta(namespace: &str, name: &str) -> ObjectMeta {
    ObjectMeta { namespace: Some(namespace.to_owned()), name: Some(name.to_owned()), ..ObjectMeta::default() }
}

/// A well-formed machine token made from one repeated byte.
pub fn token_value(byte: u8) -> String {
    token::format(&[byte; 32])
}

fn patterns<const N: usize>(items: [&str; N]) -> Vec<Pattern> {
    items.into_iter().map(Pattern::new).collect()
}

/// Builds a Provider.
pub struct ProviderBuilder(Provider);

impl ProviderBuilder {
    /// A Provider of type `ty` with no keys and no overrides.
    pub fn new(ty: ProviderType, namespace: &str, name: &str) -> Self {
        let spec = ProviderSpec {
            provider_type: ty,
            base_url: None,
            api_version: None,
            keys: Vec::new(),
            models: Vec::new(),
            allowed_namespaces: Vec::new(),
            timeout_seconds: None,
            prices: Vec::new(),
        };
        Self(Provider { metadata: meta(namespace, name), spec, status: None })
    }
    pub fn openai(namespace: &str, name: &str) -> Self {
        Self::new(ProviderType::Openai, namespace, name)
    }
    pub fn anthropic(namespace: &str, name: &str) -> Self {
        Self::new(ProviderType::Anthropic, namespace, name)
    }
    pub fn azure(namespace: &str, name: &str) -> Self {
        Self::new(ProviderType::Azure, namespace, name)
    }
    pub fn compatible(namespace: &str, name: &str) -> Self {
        Self::new(ProviderType::OpenaiCompatible, namespace, name)
    }
    pub fn mock(namespace: &str, name: &str) -> Self {
        Self::new(ProviderType::Mock, namespace, name)
    }
    /// Adds a key of priority 0 read from `secret`/`key` in the Provider's namespace.
    pub fn key(mut self, label: &str, secret: &str, key: &str) -> Self {
        self.0.spec.keys.push(ProviderKey {
            label: label.to_owned(),
            secret_ref: SecretKeyRef { name: secret.to_owned(), key: key.to_owned() },
            priority: 0,
            endpoint: None,
        });
        self
    }
    /// Sets the priority of the last key added.
    pub fn priority(mut self, priority: i32) -> Self {
        if let Some(key) = self.0.spec.keys.last_mut() {
            key.priority = priority;
        }
        self
    }
    /// Sets the endpoint of the last key added.
    pub fn endpoint(mut self, url: &str) -> Self {
        if let Some(key) = self.0.spec.keys.last_mut() {
            key.endpoint = Some(url.to_owned());
        }
        self
    }
    pub fn base_url(mut self, url: &str) -> Self {
        self.0.spec.base_url = Some(url.to_owned());
        self
    }
    pub fn api_version(mut self, version: &str) -> Self {
        self.0.spec.api_version = Some(version.to_owned());
        self
    }
    pub fn models<const N: usize>(mut self, models: [&str; N]) -> Self {
        self.0.spec.models = patterns(models);
        self
    }
    pub fn allowed<const N: usize>(mut self, namespaces: [&str; N]) -> Self {
        self.0.spec.allowed_namespaces = namespaces.iter().map(|n| (*n).to_owned()).collect();
        self
    }
    pub fn timeout(mut self, seconds: u32) -> Self {
        self.0.spec.timeout_seconds = Some(seconds);
        self
    }
    /// Adds a `spec.prices` entry with input and output prices.
    pub fn price(mut self, model: &str, input: &str, output: &str) -> Self {
        self.0.spec.prices.push(crate::provider::ModelPrice {
            model: Pattern::new(model),
            input_per_m_tok: input.to_owned(),
            output_per_m_tok: output.to_owned(),
            cached_input_per_m_tok: None,
            cache_write_per_m_tok: None,
            cache_write1h_per_m_tok: None,
            long_context: None,
        });
        self
    }
    /// Edits the last `spec.prices` entry.
    pub fn with_last_price(mut self, edit: impl FnOnce(&mut crate::provider::ModelPrice)) -> Self {
        if let Some(price) = self.0.spec.prices.last_mut() {
            edit(price);
        }
        self
    }
}

impl From<ProviderBuilder> for Provider {
    fn from(builder: ProviderBuilder) -> Self {
        builder.0
    }
}

/// Builds a Secret.
pub struct SecretBuilder(Secret);

/// A Secret with no data.
pub fn secret(namespace: &str, name: &str) -> SecretBuilder {
    SecretBuilder(Secret { metadata: meta(namespace, name), ..Secret::default() })
}

/// The Secret the operator issues for MachineToken `namespace/token_name` (default name,
/// label set, no rotation annotation, meaning rotation 0).
pub fn issued(namespace: &str, token_name: &str, value: &str) -> SecretBuilder {
    secret(namespace, &format!("{token_name}-token"))
        .with(token::SECRET_KEY, value)
        .label(token::SECRET_LABEL, token_name)
}

impl SecretBuilder {
    /// Puts `value` into `data` (as the API server returns it).
    pub fn with(self, key: &str, value: &str) -> Self {
        self.bytes(key, value.as_bytes())
    }
    /// Puts raw bytes into `data`.
    pub fn bytes(mut self, key: &str, value: &[u8]) -> Self {
        self.0.data.get_or_insert_with(BTreeMap::new).insert(key.to_owned(), ByteString(value.to_vec()));
        self
    }
    /// Puts `value` into `stringData` (as a manifest may).
    pub fn string(mut self, key: &str, value: &str) -> Self {
        self.0.string_data.get_or_insert_with(BTreeMap::new).insert(key.to_owned(), value.to_owned());
        self
    }
    pub fn label(mut self, key: &str, value: &str) -> Self {
        self.0.metadata.labels.get_or_insert_with(BTreeMap::new).insert(key.to_owned(), value.to_owned());
        self
    }
    pub fn annotation(mut self, key: &str, value: &str) -> Self {
        self.0.metadata.annotations.get_or_insert_with(BTreeMap::new).insert(key.to_owned(), value.to_owned());
        self
    }
    /// Sets the rotation annotation.
    pub fn rotation(self, rotation: u32) -> Self {
        self.annotation(token::ROTATION_ANNOTATION, &rotation.to_string())
    }
}

impl From<SecretBuilder> for Secret {
    fn from(builder: SecretBuilder) -> Self {
        builder.0
    }
}

/// Builds a Service.
pub struct ServiceBuilder(Service);

/// A Service with no Policies, pin or cache.
pub fn service(namespace: &str, name: &str) -> ServiceBuilder {
    ServiceBuilder(Service { metadata: meta(namespace, name), spec: ServiceSpec::default(), status: None })
}

impl ServiceBuilder {
    pub fn policies<const N: usize>(mut self, names: [&str; N]) -> Self {
        self.0.spec.policies = names.iter().map(|n| (*n).to_owned()).collect();
        self
    }
    /// Pins key `label` of Provider `provider` in the Service's namespace.
    pub fn pin(mut self, provider: &str, label: &str) -> Self {
        self.0.spec.provider_key =
            Some(KeyPin { provider: provider.to_owned(), namespace: None, label: label.to_owned() });
        self
    }
    /// Pins key `label` of Provider `namespace/provider`.
    pub fn pin_in(mut self, namespace: &str, provider: &str, label: &str) -> Self {
        self.0.spec.provider_key = Some(KeyPin {
            provider: provider.to_owned(),
            namespace: Some(namespace.to_owned()),
            label: label.to_owned(),
        });
        self
    }
    pub fn cache(mut self, seconds: u32) -> Self {
        self.0.spec.cache_ttl_seconds = Some(seconds);
        self
    }
}

impl From<ServiceBuilder> for Service {
    fn from(builder: ServiceBuilder) -> Self {
        builder.0
    }
}

/// Builds a MachineToken.
pub struct TokenBuilder(MachineToken);

/// A MachineToken for Service `service`, rotation 0, never expiring.
pub fn machine_token(namespace: &str, name: &str, service: &str) -> TokenBuilder {
    let spec = MachineTokenSpec { service: service.to_owned(), ..MachineTokenSpec::default() };
    TokenBuilder(MachineToken { metadata: meta(namespace, name), spec, status: None })
}

impl TokenBuilder {
    pub fn policies<const N: usize>(mut self, names: [&str; N]) -> Self {
        self.0.spec.policies = names.iter().map(|n| (*n).to_owned()).collect();
        self
    }
    pub fn scopes<const N: usize>(mut self, scopes: [Scope; N]) -> Self {
        self.0.spec.scopes = scopes.to_vec();
        self
    }
    pub fn revoked(mut self) -> Self {
        self.0.spec.revoked = true;
        self
    }
    pub fn rotation(mut self, rotation: u32) -> Self {
        self.0.spec.rotation = rotation;
        self
    }
    /// Expires at `seconds` after the Unix epoch.
    pub fn expires(mut self, seconds: i64) -> Self {
        self.0.spec.expires_at = Some(Time(Timestamp::from_second(seconds).unwrap_or(Timestamp::UNIX_EPOCH)));
        self
    }
    pub fn secret_name(mut self, name: &str) -> Self {
        self.0.spec.secret_name = Some(name.to_owned());
        self
    }
}

impl From<TokenBuilder> for MachineToken {
    fn from(builder: TokenBuilder) -> Self {
        builder.0
    }
}

/// Builds a Policy.
pub struct PolicyBuilder(Policy);

/// A Policy that allows everything without limits.
pub fn policy(namespace: &str, name: &str) -> PolicyBuilder {
    PolicyBuilder(Policy { metadata: meta(namespace, name), spec: PolicySpec::default(), status: None })
}

impl PolicyBuilder {
    pub fn providers<const N: usize>(mut self, providers: [&str; N]) -> Self {
        self.0.spec.providers = patterns(providers);
        self
    }
    pub fn models<const N: usize>(mut self, models: [&str; N]) -> Self {
        self.0.spec.models = patterns(models);
        self
    }
    pub fn scopes<const N: usize>(mut self, scopes: [Scope; N]) -> Self {
        self.0.spec.scopes = scopes.to_vec();
        self
    }
    /// Sets requests per minute, tokens per minute and concurrency (0 leaves one unset).
    pub fn limits(mut self, rpm: u32, tpm: u32, concurrent: u32) -> Self {
        use std::num::NonZeroU32;
        self.0.spec.rate_limits = Some(RateLimits {
            requests_per_minute: NonZeroU32::new(rpm),
            tokens_per_minute: NonZeroU32::new(tpm),
            max_concurrent_requests: NonZeroU32::new(concurrent),
        });
        self
    }
    /// Sets the response-cache rule.
    pub fn cache(mut self, mode: crate::policy::CacheMode, ttl_seconds: Option<u32>) -> Self {
        self.0.spec.cache = Some(crate::policy::CacheRule { mode, ttl_seconds });
        self
    }
}

impl From<PolicyBuilder> for Policy {
    fn from(builder: PolicyBuilder) -> Self {
        builder.0
    }
}

/// Builds a Budget.
pub struct BudgetBuilder(Budget);

/// A blocking Budget over `services` with no ceiling yet and the default thresholds.
pub fn budget<const N: usize>(namespace: &str, name: &str, services: [&str; N]) -> BudgetBuilder {
    let spec = BudgetSpec {
        services: services.iter().map(|s| (*s).to_owned()).collect(),
        daily_usd: None,
        monthly_usd: None,
        alert_thresholds: vec![80, 100],
        action: BudgetAction::Block,
    };
    BudgetBuilder(Budget { metadata: meta(namespace, name), spec, status: None })
}

impl BudgetBuilder {
    pub fn daily(mut self, usd: &str) -> Self {
        self.0.spec.daily_usd = Some(Usd(usd.to_owned()));
        self
    }
    pub fn monthly(mut self, usd: &str) -> Self {
        self.0.spec.monthly_usd = Some(Usd(usd.to_owned()));
        self
    }
    pub fn thresholds<const N: usize>(mut self, thresholds: [u8; N]) -> Self {
        self.0.spec.alert_thresholds = thresholds.to_vec();
        self
    }
    pub fn alert(mut self) -> Self {
        self.0.spec.action = BudgetAction::Alert;
        self
    }
}

impl From<BudgetBuilder> for Budget {
    fn from(builder: BudgetBuilder) -> Self {
        builder.0
    }
}
