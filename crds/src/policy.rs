//! The `Policy` resource: provider and model allowlists, scopes and rate limits. Attached to
//! Services and to MachineTokens by name; allowlists of every attached Policy intersect and all
//! their limits apply.

use std::num::NonZeroU32;

use kube::{CustomResource, KubeSchema};
use serde::{Deserialize, Serialize};

use crate::common::{Pattern, Scope};
use crate::conditions::Condition;

/// Who may call what, and how fast.
#[derive(CustomResource, KubeSchema, Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[kube(
    group = "uprox.dev",
    version = "v1alpha1",
    kind = "Policy",
    plural = "policies",
    namespaced,
    doc = "Provider and model allowlists, scopes and rate limits, attached to Services and MachineTokens.",
    status = "PolicyStatus",
    shortname = "upol",
    category = "uprox",
    printcolumn(name = "Attached", type_ = "integer", json_path = ".status.attached"),
    printcolumn(name = "Limits", type_ = "string", json_path = ".status.limits"),
    printcolumn(name = "Ready", type_ = "string", json_path = ".status.conditions[?(@.type==\"Ready\")].status"),
    printcolumn(name = "Age", type_ = "date", json_path = ".metadata.creationTimestamp")
)]
#[serde(rename_all = "camelCase")]
pub struct PolicySpec {
    /// Provider names (the Provider resources' `metadata.name`) that may be called: exact or
    /// ending in `*`, case-insensitive. Empty: any.
    #[serde(default)]
    #[schemars(length(max = 256))]
    pub providers: Vec<Pattern>,
    /// Model names that may be requested: exact or ending in `*`, case-insensitive. Empty: any.
    #[serde(default)]
    #[schemars(length(max = 256))]
    pub models: Vec<Pattern>,
    /// Scopes allowed. Empty: any.
    #[serde(default)]
    pub scopes: Vec<Scope>,
    /// Rate limits; each applies per token when the Policy is attached to a token and per
    /// Service when attached to a Service.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rate_limits: Option<RateLimits>,
    /// The response cache for requests under this Policy: which requests it may answer and
    /// for how long. Unset: the Service's `cacheTtlSeconds` decides, deterministic requests only.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cache: Option<CacheRule>,
}

/// How the response cache treats requests under a Policy. Where several Policies apply, the
/// most restrictive mode and the shortest TTL win.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct CacheRule {
    /// Which requests may be answered from the cache.
    #[serde(default)]
    pub mode: CacheMode,
    /// Seconds a cached answer may be replayed. Sets the TTL for the Services and tokens this
    /// Policy applies to (the shortest of theirs and their Policies' applies); 0 turns the cache
    /// off. Unset: the Service's `cacheTtlSeconds`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(max = 2592000))]
    pub ttl_seconds: Option<u32>,
}

/// Which requests the response cache may answer, from the most to the least restrictive.
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize, schemars::JsonSchema,
)]
pub enum CacheMode {
    /// Never: every request goes upstream and nothing is stored.
    Off,
    /// Requests whose answer does not depend on sampling: chat completions and Responses with
    /// `temperature: 0` or an integer `seed`, and every embeddings request.
    #[default]
    Deterministic,
    /// Every chat completion, Responses and embeddings request, sampled or not: an identical
    /// request gets the first answer again (for test and replay workloads).
    All,
}

/// Rate limits. Unset fields are unlimited.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct RateLimits {
    /// Requests per minute.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub requests_per_minute: Option<NonZeroU32>,
    /// Model tokens (prompt + completion) per minute, charged from real usage.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tokens_per_minute: Option<NonZeroU32>,
    /// Requests in flight at once.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_concurrent_requests: Option<NonZeroU32>,
}

/// Observed state of a Policy.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct PolicyStatus {
    /// The `metadata.generation` this status describes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// How many Services and MachineTokens it is attached to.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub attached: Option<u32>,
    /// The Services it is attached to (names, in this namespace), sorted; at most
    /// 100 are listed, `attached` counts them all.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub services: Vec<String>,
    /// How many MachineTokens name it in `spec.policies`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tokens: Option<u32>,
    /// Its rate limits in short, e.g. `60 rpm, 10k tpm, 4 concurrent`, or `none`: the `Limits`
    /// column of `kubectl get upol`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub limits: Option<String>,
    /// `Ready`.
    #[serde(default)]
    pub conditions: Vec<Condition>,
}
