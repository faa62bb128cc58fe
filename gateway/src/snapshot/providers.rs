//! The providers of a snapshot: each with its keys (header pre-rendered, cool-down state) and
//! its parsed URLs, built from a `ProviderConfig` and its key material.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use http::uri::{Authority, Scheme};
use http::{HeaderName, HeaderValue, Uri};
use uprox_crds::config::{KeyMaterial, ProviderConfig};
use uprox_crds::provider::ProviderType;

use super::SnapshotError;

/// One provider key, ready to send.
pub struct KeyEntry {
    /// The label.
    pub label: String,
    /// The header the provider reads its key from: `authorization`, `x-api-key` or `api-key`.
    pub header: HeaderName,
    /// Its value (`Bearer <key>` or the bare key), marked sensitive.
    pub auth: HeaderValue,
    /// The key's own endpoint (Azure: one resource per key), replacing the scheme and host of
    /// the provider's URLs when this key is used.
    pub endpoint: Option<(Scheme, Authority)>,
    /// Unix milliseconds until which the key is skipped after a failure (0: healthy). Runtime
    /// state, shared with the same key of the next snapshot (see [`Snapshot::carry_cooldowns`]).
    cooldown_until_ms: Arc<AtomicU64>,
}

impl KeyEntry {
    /// Whether the key is cooling down at `now_ms`.
    pub fn cooling(&self, now_ms: u64) -> bool {
        self.cooldown_until_ms.load(Ordering::Relaxed) > now_ms
    }

    /// Skips the key until `until_ms`.
    pub fn cool_down(&self, until_ms: u64) {
        self.cooldown_until_ms.fetch_max(until_ms, Ordering::Relaxed);
    }
}

impl std::fmt::Debug for KeyEntry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KeyEntry").field("label", &self.label).field("auth", &"<redacted>").finish()
    }
}

/// One provider.
#[derive(Debug)]
pub struct ProviderEntry {
    /// `namespace/name`, for metrics.
    pub name: Arc<str>,
    /// Its compiled config.
    pub config: ProviderConfig,
    /// Its keys, highest priority first.
    pub keys: Vec<KeyEntry>,
    /// Where a chat completion goes: `{base}/chat/completions` for OpenAI-shaped providers,
    /// `{base}/v1/messages` for Anthropic; none for providers without an HTTP upstream.
    pub chat_url: Option<Uri>,
    /// Where an embeddings request goes: `{base}/embeddings` for OpenAI-shaped providers; none
    /// for the others (Azure URLs name the deployment and are built per request).
    pub embeddings_url: Option<Uri>,
    /// The model listing: `{base}/models`, or `{base}/v1/models` for Anthropic.
    pub models_url: Option<Uri>,
    /// Where a Responses API request goes: `{base}/responses` for OpenAI-shaped providers,
    /// `{endpoint}/openai/v1/responses` for Azure; none for the others (Anthropic's is
    /// [`chat_url`](Self::chat_url), translated) or when the Azure endpoint is not a URL.
    pub responses_url: Option<Uri>,
    /// Headers every request to this provider carries (for example `anthropic-version`).
    pub fixed_headers: Vec<(HeaderName, HeaderValue)>,
    /// The last price looked up, by model: most traffic names few models, and a hit saves a
    /// walk over the catalog. Lock-free; a miss replaces it.
    pub(crate) last_price: arc_swap::ArcSwapOption<(Box<str>, Option<uprox_crds::prices::Price>)>,
}

impl ProviderEntry {
    /// The price of `model` through this provider (`spec.prices`, else the built-in catalog);
    /// `None` when unpriced.
    pub fn price(&self, model: &str) -> Option<uprox_crds::prices::Price> {
        if let Some(last) = &*self.last_price.load()
            && &*last.0 == model
        {
            return last.1;
        }
        let price = self.config.price(crate::spend::meter::catalog(), model).copied();
        self.last_price.store(Some(Arc::new((model.into(), price))));
        price
    }

    /// The provider's kind.
    pub fn kind(&self) -> ProviderType {
        self.config.provider_type
    }

    /// Shares the cool-downs of `previous`'s keys (the same Provider in the last snapshot) with
    /// the unchanged keys here: same label, value, header and endpoint.
    pub(super) fn share_cooldowns(&mut self, previous: &ProviderEntry) {
        for key in &mut self.keys {
            let same = previous.keys.iter().find(|k| {
                k.label == key.label && k.auth == key.auth && k.header == key.header && k.endpoint == key.endpoint
            });
            if let Some(same) = same {
                key.cooldown_until_ms = same.cooldown_until_ms.clone();
            }
        }
    }
}

pub(super) fn build_provider(config: &ProviderConfig, material: &KeyMaterial) -> Result<ProviderEntry, SnapshotError> {
    let mut keys = Vec::with_capacity(config.keys.len());
    for key in &config.keys {
        let value = material
            .get(&key.id)
            .ok_or_else(|| SnapshotError::Dangling(format!("no key material for key {}", key.id)))?;
        let (header, rendered) = match config.provider_type {
            ProviderType::Anthropic => (HeaderName::from_static("x-api-key"), value.expose().to_owned()),
            ProviderType::Azure => (HeaderName::from_static("api-key"), value.expose().to_owned()),
            ProviderType::Openai | ProviderType::OpenaiCompatible | ProviderType::Mock => {
                (http::header::AUTHORIZATION, format!("Bearer {}", value.expose()))
            }
        };
        let mut auth = HeaderValue::from_str(&rendered).map_err(|_| {
            SnapshotError::Invalid(format!("key {} contains characters not allowed in an HTTP header", key.id))
        })?;
        auth.set_sensitive(true);
        let endpoint = match &key.endpoint {
            None => None,
            Some(text) => {
                let uri: Uri = text
                    .parse()
                    .map_err(|_| SnapshotError::Invalid(format!("key {} has an invalid endpoint {text:?}", key.id)))?;
                match (uri.scheme().cloned(), uri.authority().cloned()) {
                    (Some(scheme), Some(authority)) => Some((scheme, authority)),
                    _ => {
                        return Err(SnapshotError::Invalid(format!(
                            "key {} has an endpoint without scheme or host: {text:?}",
                            key.id
                        )));
                    }
                }
            }
        };
        keys.push(KeyEntry { label: key.label.clone(), header, auth, endpoint, cooldown_until_ms: Arc::default() });
    }
    let url = |suffix: &str| -> Result<Option<Uri>, SnapshotError> {
        let text = format!("{}/{suffix}", config.base_url.trim_end_matches('/'));
        let invalid = |why: String| {
            SnapshotError::Invalid(format!(
                "Provider {} has an invalid base URL {:?}: {why}",
                config.id, config.base_url
            ))
        };
        let uri: Uri = text.parse().map_err(|e: http::uri::InvalidUri| invalid(e.to_string()))?;
        match (uri.scheme_str(), uri.authority()) {
            (Some("http" | "https"), Some(_)) => Ok(Some(uri)),
            _ => Err(invalid("it must be an absolute http:// or https:// URL".to_owned())),
        }
    };
    let (chat_url, embeddings_url, models_url, fixed_headers) = match config.provider_type {
        ProviderType::Openai | ProviderType::OpenaiCompatible => {
            (url("chat/completions")?, url("embeddings")?, url("models")?, Vec::new())
        }
        ProviderType::Anthropic => (
            url("v1/messages")?,
            None,
            url("v1/models")?,
            vec![(
                HeaderName::from_static("anthropic-version"),
                HeaderValue::from_static(crate::providers::anthropic::API_VERSION),
            )],
        ),
        // Azure URLs name the deployment: built per request (providers::azure).
        ProviderType::Azure | ProviderType::Mock => (None, None, None, Vec::new()),
    };
    let responses_url = match config.provider_type {
        ProviderType::Openai | ProviderType::OpenaiCompatible => url("responses")?,
        // Reported per request (as for deployment URLs) rather than refusing the config.
        ProviderType::Azure => crate::providers::azure::responses_url(config),
        ProviderType::Anthropic | ProviderType::Mock => None,
    };
    Ok(ProviderEntry {
        name: Arc::from(config.id.to_string()),
        config: config.clone(),
        keys,
        chat_url,
        embeddings_url,
        models_url,
        responses_url,
        fixed_headers,
        last_price: arc_swap::ArcSwapOption::empty(),
    })
}
