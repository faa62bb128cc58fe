//! Providers: defaults (base URL, models, timeout), pattern checks, `spec.prices`, resolving
//! each key from its Secret into [`KeyMaterial`], key order, and which namespaces may use which
//! Provider.
//!
//! Which Provider a Service routes to for a model is the gateway's decision; this module only
//! says which Providers a namespace may reach at all.

use std::collections::{BTreeMap, BTreeSet};

use crate::common::{ObjectId, Pattern};
use crate::conditions::reason;
use crate::config::{KeyConfig, KeyMaterial, ProviderConfig};
use crate::prices::{PriceEntry, compile_price};
use crate::provider::{Provider, ProviderSpec, ProviderType};
use crate::secret::SecretString;

use super::diagnostics::{Diagnostics, PROVIDER};
use super::policies::{PATTERN_HELP, invalid_patterns};
use super::secrets::SecretIndex;

/// Seconds to wait for response headers when the spec says nothing.
const DEFAULT_TIMEOUT_SECONDS: u32 = 300;
/// The bounds the schema puts on `spec.timeoutSeconds`, rechecked for standalone manifests.
const TIMEOUT_RANGE: std::ops::RangeInclusive<u32> = 1..=3600;

/// A Provider that made it into the config.
pub(super) struct CompiledProvider {
    pub(super) config: ProviderConfig,
    /// `spec.allowedNamespaces`.
    allowed: Vec<String>,
    /// Every label in `spec.keys`, resolved or not, so a pin to a broken key can say so.
    pub(super) declared_labels: BTreeSet<String>,
}

impl CompiledProvider {
    /// Whether Services in `namespace` may use this Provider.
    pub(super) fn grants(&self, namespace: &str) -> bool {
        self.config.id.namespace == namespace || self.allowed.iter().any(|n| n == namespace || n == "*")
    }
}

/// Every Provider seen, and those compiled.
pub(super) struct Providers {
    compiled: BTreeMap<ObjectId, CompiledProvider>,
    /// Providers that exist but were left out, so referrers are not told they do not exist.
    excluded: BTreeSet<ObjectId>,
    keys: KeyMaterial,
}

/// What a Provider id refers to.
pub(super) enum Lookup<'a> {
    Missing,
    Excluded,
    Compiled(&'a CompiledProvider),
}

impl Providers {
    /// The compiled Providers a Service in `namespace` may use, in routing order: its own
    /// namespace first, then by id.
    pub(super) fn accessible_from(&self, namespace: &str) -> Vec<ObjectId> {
        let (mut own, others): (Vec<_>, Vec<_>) = self
            .compiled
            .values()
            .filter(|p| p.grants(namespace))
            .map(|p| p.config.id.clone())
            .partition(|id| id.namespace == namespace);
        own.extend(others);
        own
    }

    /// Looks up one Provider.
    pub(super) fn lookup(&self, id: &ObjectId) -> Lookup<'_> {
        match self.compiled.get(id) {
            Some(provider) => Lookup::Compiled(provider),
            None if self.excluded.contains(id) => Lookup::Excluded,
            None => Lookup::Missing,
        }
    }

    /// The Providers as written in the config (sorted by id) and their key values.
    pub(super) fn into_config(self) -> (Vec<ProviderConfig>, KeyMaterial) {
        (self.compiled.into_values().map(|p| p.config).collect(), self.keys)
    }
}

/// Compiles every Provider.
pub(super) fn compile(
    objects: BTreeMap<ObjectId, &Provider>,
    secrets: &SecretIndex<'_>,
    diags: &mut Diagnostics,
) -> Providers {
    let mut providers =
        Providers { compiled: BTreeMap::new(), excluded: BTreeSet::new(), keys: KeyMaterial::default() };
    for (id, provider) in objects {
        match compile_one(&id, &provider.spec, secrets, diags) {
            Some((compiled, values)) => {
                providers.keys.0.extend(values);
                providers.compiled.insert(id, compiled);
            }
            None => {
                providers.excluded.insert(id);
            }
        }
    }
    providers
}

/// One Provider and its key values, or `None` (with diagnostics) when it cannot be used. Every
/// problem is reported, not just the first, so one round of fixes is enough.
fn compile_one(
    id: &ObjectId,
    spec: &ProviderSpec,
    secrets: &SecretIndex<'_>,
    diags: &mut Diagnostics,
) -> Option<(CompiledProvider, Vec<(String, SecretString)>)> {
    let ty = spec.provider_type;
    let mut usable = true;
    let mut invalid = |message: String| {
        usable = false;
        diags.error(PROVIDER, id, reason::INVALID_SPEC, message);
    };

    let base_url = base_url(spec);
    if base_url.is_none() {
        invalid(match ty {
            ProviderType::Azure => "type azure has no base URL; set spec.baseUrl to the resource endpoint \
                                    (https://NAME.openai.azure.com) or give its first key an endpoint"
                .to_owned(),
            _ => format!(
                "type {} has no base URL; set spec.baseUrl to the server's OpenAI-compatible API, \
                 for example http://vllm.models:8000/v1",
                ty.as_str()
            ),
        });
    }

    let models = if spec.models.is_empty() {
        ty.default_models().iter().map(|m| Pattern::new(*m)).collect()
    } else {
        spec.models.clone()
    };
    if models.is_empty() {
        invalid(format!(
            "declares no models; set spec.models to the model names it serves{} (exact, a prefix ending in `*`, or `*` for all)",
            if ty == ProviderType::Azure { " (your deployment names)" } else { "" }
        ));
    }
    if let Some(bad) = invalid_patterns(&models) {
        invalid(format!("spec.models has invalid patterns {bad}: {PATTERN_HELP}"));
    }

    let timeout_seconds = spec.timeout_seconds.unwrap_or(DEFAULT_TIMEOUT_SECONDS);
    if !TIMEOUT_RANGE.contains(&timeout_seconds) {
        invalid(format!(
            "spec.timeoutSeconds is {timeout_seconds}; set it between {} and {} seconds, or leave it unset for {DEFAULT_TIMEOUT_SECONDS}",
            TIMEOUT_RANGE.start(),
            TIMEOUT_RANGE.end()
        ));
    }

    let prices = compile_prices(spec, &mut invalid);

    let (keys, values) = if ty.needs_key() {
        if spec.keys.is_empty() {
            invalid(format!(
                "type {} needs at least one entry in spec.keys: a label and a secretRef to the Secret key holding the API key",
                ty.as_str()
            ));
        }
        resolve_keys(id, spec, secrets, diags)
    } else {
        (Vec::new(), Vec::new())
    };
    // The key errors already explain why; the provider just cannot be used without a key.
    let usable = usable && (!ty.needs_key() || !keys.is_empty());

    let config = ProviderConfig {
        id: id.clone(),
        provider_type: ty,
        base_url: base_url?,
        api_version: spec.api_version.clone(),
        timeout_seconds,
        models,
        models_explicit: !spec.models.is_empty(),
        keys,
        prices,
    };
    let declared_labels = spec.keys.iter().map(|k| k.label.clone()).collect();
    usable.then(|| (CompiledProvider { config, allowed: spec.allowed_namespaces.clone(), declared_labels }, values))
}

/// `spec.prices`, compiled. A bad entry makes the Provider unusable rather than leaving its
/// models silently unpriced (which would let Budgets under-count); every problem is reported.
fn compile_prices(spec: &ProviderSpec, invalid: &mut impl FnMut(String)) -> Vec<PriceEntry> {
    let mut seen = BTreeSet::new();
    let mut prices = Vec::new();
    for (i, declared) in spec.prices.iter().enumerate() {
        if !seen.insert(declared.model.as_str().to_ascii_lowercase()) {
            invalid(format!(
                "spec.prices[{i}]: model `{}` is priced more than once; keep one entry per pattern",
                declared.model
            ));
            continue;
        }
        match compile_price(declared) {
            Ok(entry) => prices.push(entry),
            Err(problems) => {
                for problem in problems {
                    invalid(format!("spec.prices[{i}] (`{}`): {problem}", declared.model));
                }
            }
        }
    }
    prices
}

/// `spec.baseUrl`, else the type's default, else (Azure) the first key's endpoint; without a
/// trailing `/` so the gateway can append paths.
fn base_url(spec: &ProviderSpec) -> Option<String> {
    let first_endpoint = || match spec.provider_type {
        ProviderType::Azure => spec.keys.first().and_then(|k| trim_url(k.endpoint.as_deref())),
        _ => None,
    };
    trim_url(spec.base_url.as_deref())
        .or_else(|| trim_url(spec.provider_type.default_base_url()))
        .or_else(first_endpoint)
}

fn trim_url(url: Option<&str>) -> Option<String> {
    url.map(|u| u.trim().trim_end_matches('/')).filter(|u| !u.is_empty()).map(str::to_owned)
}

/// Resolves every key from its Secret: the configs sorted by priority (highest first) then
/// label, and the values by key id. Keys that fail are reported and left out.
fn resolve_keys(
    id: &ObjectId,
    spec: &ProviderSpec,
    secrets: &SecretIndex<'_>,
    diags: &mut Diagnostics,
) -> (Vec<KeyConfig>, Vec<(String, SecretString)>) {
    let mut labels = BTreeSet::new();
    let mut keys = Vec::new();
    let mut values = Vec::new();
    for key in &spec.keys {
        if !labels.insert(key.label.as_str()) {
            diags.error(
                PROVIDER,
                id,
                reason::INVALID_SPEC,
                format!(
                    "spec.keys has the label `{}` more than once, so all but the first are ignored; give every key a unique label",
                    key.label
                ),
            );
            continue;
        }
        let secret = ObjectId::new(&id.namespace, &key.secret_ref.name);
        match secrets.value(&secret, &key.secret_ref.key) {
            Ok(value) => {
                let key_id = format!("{}/{}/{}", id.namespace, id.name, key.label);
                keys.push(KeyConfig {
                    id: key_id.clone(),
                    label: key.label.clone(),
                    priority: key.priority,
                    endpoint: trim_url(key.endpoint.as_deref()),
                });
                values.push((key_id, value));
            }
            Err(problem) => {
                let (reason, message) = problem.describe(&secret, &key.secret_ref.key);
                diags.error(PROVIDER, id, reason, format!("key `{}`: {message}", key.label));
            }
        }
    }
    keys.sort_by(|a, b| b.priority.cmp(&a.priority).then_with(|| a.label.cmp(&b.label)));
    (keys, values)
}
