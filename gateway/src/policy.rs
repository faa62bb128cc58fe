//! The access decision for one request: the token's scopes, then every Policy attached to its
//! Service and to the token itself. Allowlists intersect (each Policy must allow), which makes
//! adding a Policy only ever narrow access. Pure functions over the snapshot; no IO, no lock.
//!
//! Denial messages name the rule and the Policy (always in the caller's own namespace), never a
//! key or another team's resources.

use uprox_crds::common::{Scope, allowed_by};

use crate::auth::Caller;
use crate::error::GatewayError;
use crate::snapshot::{ProviderEntry, Snapshot};

/// Whether the caller holds `scope`.
pub fn check_scope(snapshot: &Snapshot, caller: &Caller<'_>, scope: Scope) -> Result<(), GatewayError> {
    if !caller.token.scopes.is_empty() && !caller.token.scopes.contains(&scope) {
        return Err(GatewayError::Forbidden(format!(
            "MachineToken {} does not hold the scope \"{}\"",
            caller.token.id,
            scope.as_str()
        )));
    }
    for &p in caller.token.policies.iter() {
        let policy = &snapshot.policies[p];
        if !policy.scopes.is_empty() && !policy.scopes.contains(&scope) {
            return Err(GatewayError::Forbidden(format!(
                "Policy {} does not allow the scope \"{}\"",
                policy.id,
                scope.as_str()
            )));
        }
    }
    Ok(())
}

/// Whether every attached Policy allows this provider.
pub fn allows_provider(snapshot: &Snapshot, caller: &Caller<'_>, provider: &ProviderEntry) -> Result<(), GatewayError> {
    for &p in caller.token.policies.iter() {
        let policy = &snapshot.policies[p];
        if !allowed_by(&policy.providers, &provider.config.id.name) {
            return Err(GatewayError::Forbidden(format!(
                "Policy {} does not allow the provider serving this model",
                policy.id
            )));
        }
    }
    Ok(())
}

/// Whether every attached Policy allows this model.
pub fn allows_model(snapshot: &Snapshot, caller: &Caller<'_>, model: &str) -> Result<(), GatewayError> {
    for &p in caller.token.policies.iter() {
        let policy = &snapshot.policies[p];
        if !allowed_by(&policy.models, model) {
            return Err(GatewayError::Forbidden(format!("Policy {} does not allow the model \"{model}\"", policy.id)));
        }
    }
    Ok(())
}
