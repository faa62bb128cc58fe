//! The `Service` resource: a workload's identity. Its Policies decide which providers and
//! models it may call; it may pin one provider key and set its response-cache TTL. Budgets
//! name the Services they count.

use kube::{CustomResource, KubeSchema};
use serde::{Deserialize, Serialize};

use crate::conditions::Condition;

/// A workload that calls models through uprox with MachineTokens.
#[derive(CustomResource, KubeSchema, Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[kube(
    group = "uprox.dev",
    version = "v1alpha1",
    kind = "Service",
    plural = "services",
    namespaced,
    doc = "A workload identity that calls models through uprox with MachineTokens.",
    status = "ServiceStatus",
    shortname = "usvc",
    category = "uprox",
    printcolumn(name = "Providers", type_ = "integer", json_path = ".status.providers"),
    printcolumn(name = "Tokens", type_ = "integer", json_path = ".status.tokens"),
    printcolumn(name = "Cache TTL", type_ = "integer", json_path = ".spec.cacheTtlSeconds"),
    printcolumn(name = "Ready", type_ = "string", json_path = ".status.conditions[?(@.type==\"Ready\")].status"),
    printcolumn(name = "Age", type_ = "date", json_path = ".metadata.creationTimestamp")
)]
#[serde(rename_all = "camelCase")]
pub struct ServiceSpec {
    /// What this workload is, for people reading `kubectl describe`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 1024))]
    pub description: Option<String>,
    /// Names of Policies in this namespace that apply to every request of this Service. Their
    /// allowlists intersect and all their limits apply. A name that does not exist denies every
    /// request (fail closed) until it is created or removed.
    #[serde(default)]
    #[schemars(length(max = 32))]
    pub policies: Vec<String>,
    /// Pins one provider key: requests this Service sends to that Provider use this key
    /// instead of the highest-priority one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub provider_key: Option<KeyPin>,
    /// Seconds a cached response may be replayed to this Service (deterministic requests only,
    /// unless a Policy sets `cache.mode`). 0 or unset: off, unless a Policy sets `cache.ttlSeconds`;
    /// where both set one, the shortest applies.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(max = 2592000))]
    pub cache_ttl_seconds: Option<u32>,
}

/// A reference to one key of one Provider.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct KeyPin {
    /// Name of the Provider.
    #[schemars(length(min = 1, max = 253))]
    pub provider: String,
    /// Namespace of the Provider; defaults to this Service's namespace. The Provider must
    /// allow this namespace.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 63))]
    pub namespace: Option<String>,
    /// The `label` of the key within the Provider.
    #[schemars(length(min = 1, max = 63))]
    pub label: String,
}

/// Observed state of a Service.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ServiceStatus {
    /// The `metadata.generation` this status describes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// How many Providers this Service may reach.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub providers: Option<u32>,
    /// How many live tokens act for it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tokens: Option<u32>,
    /// `Ready`, and `ReferencesResolved`.
    #[serde(default)]
    pub conditions: Vec<Condition>,
}
