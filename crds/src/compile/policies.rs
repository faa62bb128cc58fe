//! Policies: compiling each valid Policy into a [`PolicyConfig`], and resolving the Policy
//! names that Services and MachineTokens list, failing closed when one is missing.
//!
//! Pattern checks shared with Providers live here too ([`invalid_patterns`]). What the gateway
//! does with a Policy (intersecting allowlists, applying limits) is not decided here.

use std::collections::{BTreeMap, BTreeSet};

use crate::common::{ObjectId, Pattern};
use crate::conditions::reason;
use crate::config::PolicyConfig;
use crate::policy::Policy;

use super::diagnostics::{Diagnostics, POLICY};

/// The compiled Policies, and the ids of those left out as invalid (so a referrer can be told
/// why it cannot use one that exists).
pub(super) struct Policies {
    compiled: BTreeMap<ObjectId, PolicyConfig>,
    invalid: BTreeSet<ObjectId>,
}

/// The Policies one referrer ends up with.
pub(super) struct Resolved {
    /// The compiled Policies it names, in the order it names them, without repeats.
    pub(super) ids: Vec<ObjectId>,
    /// Set when a name did not resolve: the referrer must then refuse every request.
    pub(super) denied: Option<String>,
}

/// Compiles every Policy. One with an invalid pattern is left out, so that whoever refers to it
/// fails closed instead of running with a looser allowlist than its author wrote.
pub(super) fn compile(objects: BTreeMap<ObjectId, &Policy>, diags: &mut Diagnostics) -> Policies {
    let mut policies = Policies { compiled: BTreeMap::new(), invalid: BTreeSet::new() };
    for (id, policy) in objects {
        let spec = &policy.spec;
        let mut valid = true;
        for (field, patterns) in [("spec.providers", &spec.providers), ("spec.models", &spec.models)] {
            if let Some(bad) = invalid_patterns(patterns) {
                valid = false;
                diags.error(
                    POLICY,
                    &id,
                    reason::INVALID_SPEC,
                    format!(
                        "{field} has invalid patterns {bad}: {PATTERN_HELP}; until this is fixed every Service \
                         and MachineToken using this Policy refuses all requests"
                    ),
                );
            }
        }
        if !valid {
            policies.invalid.insert(id);
            continue;
        }
        let limits = spec.rate_limits.clone().unwrap_or_default();
        let config = PolicyConfig {
            id: id.clone(),
            providers: spec.providers.clone(),
            models: spec.models.clone(),
            scopes: spec.scopes.clone(),
            requests_per_minute: limits.requests_per_minute.map(|n| n.get()),
            tokens_per_minute: limits.tokens_per_minute.map(|n| n.get()),
            max_concurrent_requests: limits.max_concurrent_requests.map(|n| n.get()),
            cache_mode: spec.cache.as_ref().map(|c| c.mode),
            cache_ttl_seconds: spec.cache.as_ref().and_then(|c| c.ttl_seconds),
        };
        policies.compiled.insert(id, config);
    }
    policies
}

impl Policies {
    /// Resolves `names` (Policies in the referrer's namespace) for the `kind` object `referrer`.
    /// Each name that does not resolve is an error, and the referrer is denied.
    pub(super) fn resolve(
        &self,
        kind: &'static str,
        referrer: &ObjectId,
        names: &[String],
        diags: &mut Diagnostics,
    ) -> Resolved {
        let mut ids = Vec::new();
        let mut missing = Vec::new();
        for name in names {
            let id = ObjectId::new(&referrer.namespace, name);
            if ids.contains(&id) || missing.contains(&id) {
                continue;
            }
            if self.compiled.contains_key(&id) {
                ids.push(id);
                continue;
            }
            let (state, fix) = if self.invalid.contains(&id) {
                ("is invalid (see its status)", "fix the Policy")
            } else {
                ("does not exist", "create the Policy")
            };
            diags.error(
                kind,
                referrer,
                reason::POLICY_NOT_FOUND,
                format!(
                    "spec.policies names Policy {id}, which {state}; every request of this {kind} is refused \
                     until you {fix} or remove it from spec.policies"
                ),
            );
            missing.push(id);
        }
        let denied = match missing.as_slice() {
            [] => None,
            [one] => Some(format!("{kind} {referrer} names Policy {one}, which does not exist or is invalid")),
            many => Some(format!(
                "{kind} {referrer} names Policies that do not exist or are invalid: {}",
                many.iter().map(ToString::to_string).collect::<Vec<_>>().join(", ")
            )),
        };
        Resolved { ids, denied }
    }

    /// The Policies as written in the config, sorted by id.
    pub(super) fn into_config(self) -> Vec<PolicyConfig> {
        self.compiled.into_values().collect()
    }
}

/// How a valid pattern looks, for messages.
pub(super) const PATTERN_HELP: &str =
    "a pattern is an exact name or a prefix ending in `*` (for example `gpt-4o`, `gpt-*` or `*`), without spaces";

/// The invalid patterns of a list, quoted and joined, or `None` when all are valid.
pub(super) fn invalid_patterns(patterns: &[Pattern]) -> Option<String> {
    let bad: Vec<String> = patterns.iter().filter(|p| !p.is_valid()).map(|p| format!("`{p}`")).collect();
    (!bad.is_empty()).then(|| bad.join(", "))
}
