//! The `Provider` resource: one upstream (OpenAI, Anthropic, Azure OpenAI, any OpenAI-compatible
//! server, or the built-in mock), its keys as references to Secrets, the models it serves and
//! the namespaces besides its own that may use it.

use kube::{CustomResource, KubeSchema};
use serde::{Deserialize, Serialize};

use crate::common::{Pattern, SecretKeyRef};
use crate::conditions::Condition;

/// The wire protocol of an upstream.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "kebab-case")]
pub enum ProviderType {
    /// OpenAI's API (`https://api.openai.com/v1` by default).
    Openai,
    /// Anthropic's Messages API (`https://api.anthropic.com` by default).
    Anthropic,
    /// Azure OpenAI; needs `baseUrl` or an `endpoint` on every key.
    Azure,
    /// Any server that speaks OpenAI's API (vLLM, Ollama, LM Studio, …); needs `baseUrl`.
    OpenaiCompatible,
    /// Answers itself with deterministic text and realistic usage, at no cost and offline.
    Mock,
}

impl ProviderType {
    /// The name used in manifests.
    pub fn as_str(self) -> &'static str {
        match self {
            ProviderType::Openai => "openai",
            ProviderType::Anthropic => "anthropic",
            ProviderType::Azure => "azure",
            ProviderType::OpenaiCompatible => "openai-compatible",
            ProviderType::Mock => "mock",
        }
    }

    /// The base URL used when the spec names none.
    pub fn default_base_url(self) -> Option<&'static str> {
        match self {
            ProviderType::Openai => Some("https://api.openai.com/v1"),
            ProviderType::Anthropic => Some("https://api.anthropic.com"),
            ProviderType::Mock => Some("mock://local"),
            ProviderType::Azure | ProviderType::OpenaiCompatible => None,
        }
    }

    /// The models served when the spec lists none.
    pub fn default_models(self) -> &'static [&'static str] {
        match self {
            ProviderType::Openai => &[
                "gpt-*",
                "chatgpt-*",
                "o1*",
                "o3*",
                "o4*",
                "text-embedding-*",
                "dall-e-*",
                "whisper-*",
                "tts-*",
                "omni-moderation-*",
            ],
            ProviderType::Anthropic => &["claude-*"],
            ProviderType::Mock => &["mock-*"],
            ProviderType::Azure | ProviderType::OpenaiCompatible => &[],
        }
    }

    /// Whether requests need a key.
    pub fn needs_key(self) -> bool {
        !matches!(self, ProviderType::Mock)
    }
}

/// An upstream that Services may call.
#[derive(CustomResource, KubeSchema, Clone, Debug, PartialEq, Serialize, Deserialize)]
#[kube(
    group = "uprox.dev",
    version = "v1alpha1",
    kind = "Provider",
    namespaced,
    doc = "An upstream (OpenAI, Anthropic, Azure OpenAI, an OpenAI-compatible server or the built-in mock) and its keys.",
    status = "ProviderStatus",
    shortname = "uprov",
    category = "uprox",
    printcolumn(name = "Type", type_ = "string", json_path = ".spec.type"),
    printcolumn(name = "Keys", type_ = "integer", json_path = ".status.keys"),
    printcolumn(name = "Models", type_ = "string", json_path = ".status.models"),
    printcolumn(name = "Ready", type_ = "string", json_path = ".status.conditions[?(@.type==\"Ready\")].status"),
    printcolumn(name = "Age", type_ = "date", json_path = ".metadata.creationTimestamp")
)]
#[x_kube(
    validation = Rule::new("self.type != 'openai-compatible' || has(self.baseUrl)").message("type openai-compatible needs spec.baseUrl"),
    validation = Rule::new("self.type != 'azure' || has(self.baseUrl) || (size(self.keys) > 0 && self.keys.all(k, has(k.endpoint)))").message("type azure needs spec.baseUrl or an endpoint on every key"),
    validation = Rule::new("self.type == 'mock' || size(self.keys) > 0").message("this provider type needs at least one entry in spec.keys"),
    validation = Rule::new("self.type != 'azure' || size(self.models) > 0").message("type azure needs spec.models: list your deployment names (or '*')"),
    validation = Rule::new("self.type != 'openai-compatible' || size(self.models) > 0").message("type openai-compatible needs spec.models: the model names it serves (or '*')")
)]
#[serde(rename_all = "camelCase")]
pub struct ProviderSpec {
    /// The wire protocol: openai, anthropic, azure, openai-compatible or mock.
    #[serde(rename = "type")]
    pub provider_type: ProviderType,
    /// Base URL of the API. Defaults: openai `https://api.openai.com/v1`, anthropic
    /// `https://api.anthropic.com`. Required for openai-compatible; for azure the resource
    /// endpoint (`https://NAME.openai.azure.com`) unless every key names its own.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(regex(pattern = r"^https?://[^\s]+$"), length(max = 2048))]
    pub base_url: Option<String>,
    /// Azure OpenAI `api-version` query value sent upstream (for example `2024-10-21`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 64))]
    pub api_version: Option<String>,
    /// API keys, each from a Secret in this namespace. The highest `priority` is used unless a
    /// Service pins another by label.
    #[serde(default)]
    #[schemars(length(max = 32))]
    #[x_kube(validation = Rule::new("self.all(k, self.exists_one(j, j.label == k.label))").message("key labels must be unique"))]
    pub keys: Vec<ProviderKey>,
    /// Models this provider serves: exact names or prefixes ending in `*`, case-insensitive.
    /// When empty: openai `gpt-*`, `o1*`, `o3*`, `o4*`, `chatgpt-*`, `text-embedding-*`, …;
    /// anthropic `claude-*`; mock `mock-*`. When two providers match a model, the most specific
    /// pattern wins (exact, then longest prefix), then the provider in the Service's namespace,
    /// then the first by namespace/name.
    #[serde(default)]
    #[schemars(length(max = 256))]
    pub models: Vec<Pattern>,
    /// Namespaces other than this one whose Services may use this provider and its keys;
    /// `*` allows every namespace. Empty: only this namespace.
    #[serde(default)]
    #[schemars(length(max = 256))]
    pub allowed_namespaces: Vec<String>,
    /// Seconds to wait for the upstream's response headers before answering 504.
    /// Streams may run longer; this bounds the wait for the first byte. Default 300.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 3600))]
    pub timeout_seconds: Option<u32>,
    /// Prices for models called through this Provider, in USD per million tokens, for models
    /// the built-in catalog does not know or where your contract differs (negotiated rates,
    /// fine-tunes, self-hosted models, Azure deployment names). The most specific matching
    /// `model` wins (exact name, then longest prefix); models matched by no entry here use the
    /// built-in catalog (longest prefix), and models in neither are counted as unpriced (cost 0).
    /// An entry replaces the catalog's price for its models entirely.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 64))]
    #[x_kube(validation = Rule::new("self.all(p, self.exists_one(q, q.model == p.model))").message("prices: each model pattern may appear only once"))]
    pub prices: Vec<ModelPrice>,
}

/// The price of the models matching one pattern, in USD per million tokens written as decimal
/// strings (`"2.50"`, up to six digits after the point), so they are exact.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ModelPrice {
    /// The model: an exact name or a prefix ending in `*` (`gpt-4o*`), case-insensitive. For
    /// Azure, the model name the upstream reports (`gpt-4o-2024-08-06`) or the deployment name.
    pub model: Pattern,
    /// USD per million uncached input (prompt) tokens, e.g. `"2.50"`.
    #[schemars(regex(pattern = r"^[0-9]{1,6}(\.[0-9]{1,6})?$"))]
    pub input_per_m_tok: String,
    /// USD per million output (completion) tokens, reasoning tokens included, e.g. `"10.00"`.
    /// `"0"` for embedding models.
    #[schemars(regex(pattern = r"^[0-9]{1,6}(\.[0-9]{1,6})?$"))]
    pub output_per_m_tok: String,
    /// USD per million input tokens read from the prompt cache (OpenAI "cached input",
    /// Anthropic "cache hits"). Unset: billed at `inputPerMTok`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(regex(pattern = r"^[0-9]{1,6}(\.[0-9]{1,6})?$"))]
    pub cached_input_per_m_tok: Option<String>,
    /// USD per million input tokens written to the prompt cache (Anthropic: the 5-minute
    /// cache, usually 1.25 × input). Unset: billed at `inputPerMTok`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(regex(pattern = r"^[0-9]{1,6}(\.[0-9]{1,6})?$"))]
    pub cache_write_per_m_tok: Option<String>,
    /// USD per million input tokens written to Anthropic's 1-hour cache (usually 2 × input).
    /// Unset: billed at `cacheWritePerMTok`, else `inputPerMTok`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(regex(pattern = r"^[0-9]{1,6}(\.[0-9]{1,6})?$"))]
    pub cache_write1h_per_m_tok: Option<String>,
    /// Other prices for requests with long prompts, when the provider charges more for them.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub long_context: Option<LongContextPrice>,
}

/// Prices that apply to every token of a request (output included) whose prompt — uncached
/// input plus cache reads plus cache writes — is longer than `aboveInputTokens`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct LongContextPrice {
    /// The tier applies when the prompt has strictly more tokens than this, e.g. `200000`.
    #[schemars(range(min = 1))]
    pub above_input_tokens: u64,
    /// USD per million uncached input tokens in this tier.
    #[schemars(regex(pattern = r"^[0-9]{1,6}(\.[0-9]{1,6})?$"))]
    pub input_per_m_tok: String,
    /// USD per million output tokens in this tier.
    #[schemars(regex(pattern = r"^[0-9]{1,6}(\.[0-9]{1,6})?$"))]
    pub output_per_m_tok: String,
    /// USD per million cache-read input tokens in this tier. Unset: this tier's input price.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(regex(pattern = r"^[0-9]{1,6}(\.[0-9]{1,6})?$"))]
    pub cached_input_per_m_tok: Option<String>,
    /// USD per million 5-minute cache-write tokens in this tier. Unset: this tier's input price.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(regex(pattern = r"^[0-9]{1,6}(\.[0-9]{1,6})?$"))]
    pub cache_write_per_m_tok: Option<String>,
    /// USD per million 1-hour cache-write tokens in this tier. Unset: this tier's 5-minute
    /// cache-write price, else its input price.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(regex(pattern = r"^[0-9]{1,6}(\.[0-9]{1,6})?$"))]
    pub cache_write1h_per_m_tok: Option<String>,
}

/// One API key of a Provider.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ProviderKey {
    /// A name for this key, unique within the Provider; Services pin keys by it.
    #[schemars(regex(pattern = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$"), length(min = 1, max = 63))]
    pub label: String,
    /// Where the key's value is: a Secret in this namespace and the key within it.
    pub secret_ref: SecretKeyRef,
    /// Higher is preferred. Default 0.
    #[serde(default)]
    pub priority: i32,
    /// Azure: the resource endpoint this key belongs to (`https://NAME.openai.azure.com`), when
    /// it differs from `spec.baseUrl`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(regex(pattern = r"^https?://[^\s]+$"), length(max = 2048))]
    pub endpoint: Option<String>,
}

/// Observed state of a Provider.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ProviderStatus {
    /// The `metadata.generation` this status describes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// How many keys resolved to a value.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub keys: Option<u32>,
    /// The model patterns it serves (its `spec.models`, else its type's defaults), joined by
    /// `, ` and cut to about 40 characters with `…`: the `Models` column of `kubectl get uprov`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub models: Option<String>,
    /// `Ready`, and `KeysResolved`.
    #[serde(default)]
    pub conditions: Vec<Condition>,
}
