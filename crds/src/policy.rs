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
    /// `Ready`.
    #[serde(default)]
    pub conditions: Vec<Condition>,
}
