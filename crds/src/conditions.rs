//! The condition vocabulary of every uprox resource, and the pure function that folds a new
//! condition into a status while keeping `lastTransitionTime` when nothing changed.
//!
//! Condition *types* say what aspect is described; *reasons* are CamelCase identifiers a script
//! may match on. Both are constants here and nowhere else.

pub use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;

/// The summary condition on every resource.
pub const READY: &str = "Ready";
/// Provider: every key resolved to a Secret value.
pub const KEYS_RESOLVED: &str = "KeysResolved";
/// Service, MachineToken, Budget: every reference resolved.
pub const REFERENCES_RESOLVED: &str = "ReferencesResolved";
/// MachineToken: a token has been issued into its Secret.
pub const ISSUED: &str = "Issued";
/// Budget: a window's spend reached an alert threshold below its ceiling.
pub const WARNING: &str = "Warning";
/// Budget: a window's spend reached its ceiling.
pub const EXCEEDED: &str = "Exceeded";
/// Budget: every request counted this month had a price.
pub const PRICED: &str = "Priced";
/// Budget: the usage ledger could be read.
pub const SPEND_KNOWN: &str = "SpendKnown";

/// Reasons.
pub mod reason {
    /// Everything resolved; the resource is in the compiled config.
    pub const COMPILED: &str = "Compiled";
    /// A referenced Secret does not exist.
    pub const SECRET_NOT_FOUND: &str = "SecretNotFound";
    /// A referenced Secret exists but lacks the key.
    pub const SECRET_KEY_NOT_FOUND: &str = "SecretKeyNotFound";
    /// A Secret value is empty or not UTF-8.
    pub const SECRET_VALUE_INVALID: &str = "SecretValueInvalid";
    /// The spec is invalid in a way the schema could not catch.
    pub const INVALID_SPEC: &str = "InvalidSpec";
    /// A referenced Service does not exist.
    pub const SERVICE_NOT_FOUND: &str = "ServiceNotFound";
    /// A referenced Policy does not exist.
    pub const POLICY_NOT_FOUND: &str = "PolicyNotFound";
    /// A referenced Provider does not exist or does not grant this namespace.
    pub const PROVIDER_NOT_FOUND: &str = "ProviderNotFound";
    /// A pinned key label does not exist on the Provider.
    pub const KEY_NOT_FOUND: &str = "KeyNotFound";
    /// The token has not been issued yet.
    pub const NOT_ISSUED: &str = "NotIssued";
    /// The token is revoked.
    pub const REVOKED: &str = "Revoked";
    /// The token's expiry has passed.
    pub const EXPIRED: &str = "Expired";
    /// A new token was written into the token's Secret.
    pub const ISSUED: &str = "Issued";
    /// A Service has no Provider it may use.
    pub const NO_PROVIDERS: &str = "NoProviders";
    /// Budget: spend is below every alert threshold.
    pub const BELOW_THRESHOLDS: &str = "BelowThresholds";
    /// Budget: an alert threshold below the ceiling was reached.
    pub const THRESHOLD_REACHED: &str = "ThresholdReached";
    /// Budget: spend is below every ceiling.
    pub const WITHIN_LIMITS: &str = "WithinLimits";
    /// Budget: a ceiling was reached.
    pub const LIMIT_REACHED: &str = "LimitReached";
    /// Budget: every request counted had a price.
    pub const PRICED: &str = "Priced";
    /// Budget: some requests went to models without a price and were counted at $0.
    pub const UNPRICED_MODELS: &str = "UnpricedModels";
    /// Budget: spend was read from the usage ledger.
    pub const LEDGER_READ: &str = "LedgerRead";
    /// Budget: no usage ledger exists yet (nothing was spent through a gateway).
    pub const NO_USAGE_YET: &str = "NoUsageYet";
    /// Budget: the usage ledger exists but cannot be read.
    pub const LEDGER_UNREADABLE: &str = "LedgerUnreadable";
    /// Event: a Budget window reached an alert threshold below its ceiling.
    pub const BUDGET_THRESHOLD: &str = "BudgetThreshold";
    /// Event: a Budget window reached its ceiling.
    pub const BUDGET_EXCEEDED: &str = "BudgetExceeded";
}

/// `True`, `False` or `Unknown`.
pub fn status_str(ok: bool) -> &'static str {
    if ok { "True" } else { "False" }
}

/// Puts `new` into `conditions`, replacing the one of the same type. When its status did not
/// change, the old `lastTransitionTime` is kept, so a status patch is a no-op when nothing
/// happened.
pub fn upsert(conditions: &mut Vec<Condition>, mut new: Condition) {
    match conditions.iter_mut().find(|c| c.type_ == new.type_) {
        Some(existing) => {
            if existing.status == new.status {
                new.last_transition_time = existing.last_transition_time.clone();
            }
            *existing = new;
        }
        None => conditions.push(new),
    }
}

/// Builds a condition.
pub fn new(
    type_: &str,
    ok: bool,
    reason: &str,
    message: impl Into<String>,
    generation: Option<i64>,
    now: Time,
) -> Condition {
    Condition {
        type_: type_.to_owned(),
        status: status_str(ok).to_owned(),
        reason: reason.to_owned(),
        message: message.into(),
        observed_generation: generation,
        last_transition_time: now,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::jiff::Timestamp;

    fn at(secs: i64) -> Time {
        Time(Timestamp::from_second(secs).unwrap_or(Timestamp::UNIX_EPOCH))
    }

    #[test]
    fn unchanged_status_keeps_transition_time() {
        let mut conds = vec![new(READY, true, reason::COMPILED, "ok", Some(1), at(10))];
        upsert(&mut conds, new(READY, true, reason::COMPILED, "still ok", Some(2), at(20)));
        assert_eq!(conds.len(), 1);
        assert_eq!(conds[0].last_transition_time, at(10));
        assert_eq!(conds[0].message, "still ok");
        assert_eq!(conds[0].observed_generation, Some(2));
    }

    #[test]
    fn changed_status_moves_transition_time() {
        let mut conds = vec![new(READY, true, reason::COMPILED, "ok", Some(1), at(10))];
        upsert(&mut conds, new(READY, false, reason::SECRET_NOT_FOUND, "gone", Some(1), at(20)));
        assert_eq!(conds[0].last_transition_time, at(20));
        assert_eq!(conds[0].status, "False");
    }

    #[test]
    fn new_types_are_appended() {
        let mut conds = vec![new(READY, true, reason::COMPILED, "ok", None, at(1))];
        upsert(&mut conds, new(ISSUED, true, reason::COMPILED, "ok", None, at(1)));
        assert_eq!(conds.len(), 2);
    }
}
