//! What every resource's `status` should say after a compilation: pure functions from the
//! resource, the [`Compiled`] output and the clock to the status the operator patches.
//!
//! `Ready` is true when the resource is in the compiled config and serving as written; the
//! specific conditions (`KeysResolved`, `ReferencesResolved`, `Issued`) say which part is
//! wrong. Error diagnostics make `Ready` false with the diagnostic's reason and message, so
//! `kubectl describe` tells a person what to fix. Conditions keep their `lastTransitionTime`
//! while their status holds ([`conditions::upsert`]), so an unchanged resource yields a status
//! equal to the one it has and no patch is sent.

use std::collections::HashMap;

use k8s_openapi::api::core::v1::Secret;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use kube::ResourceExt as _;
use uprox_crds::common::{ObjectId, Pattern};
use uprox_crds::conditions::{self, ISSUED, KEYS_RESOLVED, READY, REFERENCES_RESOLVED, reason};
use uprox_crds::config::TokenConfig;
use uprox_crds::policy::RateLimits;
use uprox_crds::{
    Budget, BudgetStatus, Compiled, Diagnostic, MachineToken, MachineTokenStatus, Policy, PolicyStatus, Provider,
    ProviderStatus, Service, ServiceStatus, TokenSecretState, TokenState, token,
};

/// Reasons that mean a Secret a Provider names cannot be read.
const KEY_REASONS: &[&str] = &[reason::SECRET_NOT_FOUND, reason::SECRET_KEY_NOT_FOUND, reason::SECRET_VALUE_INVALID];

/// Lookups over one compilation, built once and shared by every status computation.
#[derive(Debug, Default)]
pub struct Index<'a> {
    compiled: Option<&'a Compiled>,
    provider_keys: HashMap<&'a ObjectId, usize>,
    service_providers: HashMap<&'a ObjectId, usize>,
    service_tokens: HashMap<&'a ObjectId, u32>,
    tokens: HashMap<&'a ObjectId, &'a TokenConfig>,
    policy_attachments: HashMap<&'a ObjectId, u32>,
    policy_services: HashMap<&'a ObjectId, Vec<&'a str>>,
    policy_tokens: HashMap<&'a ObjectId, u32>,
}

/// Services listed by name in a Policy's status; `attached` counts them all.
const LISTED_SERVICES: usize = 100;

impl<'a> Index<'a> {
    /// Indexes one compilation.
    pub fn new(compiled: &'a Compiled) -> Self {
        let config = &compiled.config;
        let mut index = Self { compiled: Some(compiled), ..Self::default() };
        for p in &config.providers {
            index.provider_keys.insert(&p.id, p.keys.len());
        }
        for s in &config.services {
            index.service_providers.insert(&s.id, s.providers.len());
            for p in &s.policies {
                *index.policy_attachments.entry(p).or_default() += 1;
                index.policy_services.entry(p).or_default().push(s.id.name.as_str());
            }
        }
        for t in &config.tokens {
            index.tokens.insert(&t.id, t);
            *index.service_tokens.entry(&t.service).or_default() += 1;
            for p in &t.policies {
                *index.policy_attachments.entry(p).or_default() += 1;
                *index.policy_tokens.entry(p).or_default() += 1;
            }
        }
        index
    }

    fn diagnostics(&self, kind: &'a str, id: &'a ObjectId) -> Vec<&'a Diagnostic> {
        self.compiled.map(|c| c.diagnostics_for(kind, id).collect()).unwrap_or_default()
    }
}

/// The identity of a namespaced resource.
pub fn id_of(object: &impl kube::Resource) -> ObjectId {
    ObjectId::new(object.meta().namespace.clone().unwrap_or_default(), object.meta().name.clone().unwrap_or_default())
}

/// A Provider's status.
pub fn provider(object: &Provider, index: &Index<'_>, now: &Time) -> ProviderStatus {
    let id = id_of(object);
    let generation = object.metadata.generation;
    let diags = index.diagnostics("Provider", &id);
    let mut conds = object.status.as_ref().map(|s| s.conditions.clone()).unwrap_or_default();
    let key_problems: Vec<&Diagnostic> = diags.iter().copied().filter(|d| KEY_REASONS.contains(&d.reason)).collect();
    set(&mut conds, KEYS_RESOLVED, &key_problems, "every key resolved to a Secret value", generation, now);
    let keys = index.provider_keys.get(&id).copied();
    set_ready(&mut conds, &diags, keys.is_some(), "in the compiled config", generation, now);
    ProviderStatus {
        observed_generation: generation,
        keys: Some(keys.unwrap_or_default() as u32),
        models: Some(served_models(object)),
        conditions: conds,
    }
}

/// A Service's status.
pub fn service(object: &Service, index: &Index<'_>, now: &Time) -> ServiceStatus {
    let id = id_of(object);
    let generation = object.metadata.generation;
    let diags = index.diagnostics("Service", &id);
    let mut conds = object.status.as_ref().map(|s| s.conditions.clone()).unwrap_or_default();
    let errors: Vec<&Diagnostic> = diags.iter().copied().filter(|d| d.is_error()).collect();
    set(&mut conds, REFERENCES_RESOLVED, &errors, "every Policy, Provider and pinned key resolved", generation, now);
    let providers = index.service_providers.get(&id).copied();
    set_ready(&mut conds, &diags, providers.is_some(), "in the compiled config", generation, now);
    ServiceStatus {
        observed_generation: generation,
        providers: Some(providers.unwrap_or_default() as u32),
        tokens: Some(index.service_tokens.get(&id).copied().unwrap_or_default()),
        conditions: conds,
    }
}

/// A Policy's status.
pub fn policy(object: &Policy, index: &Index<'_>, now: &Time) -> PolicyStatus {
    let id = id_of(object);
    let generation = object.metadata.generation;
    let diags = index.diagnostics("Policy", &id);
    let mut conds = object.status.as_ref().map(|s| s.conditions.clone()).unwrap_or_default();
    let compiled = index.compiled.is_some_and(|c| c.config.policies.iter().any(|p| p.id == id));
    set_ready(&mut conds, &diags, compiled, "in the compiled config", generation, now);
    let services = index.policy_services.get(&id).map(|names| {
        let mut names: Vec<String> = names.iter().map(|n| (*n).to_owned()).collect();
        names.sort_unstable();
        names.truncate(LISTED_SERVICES);
        names
    });
    PolicyStatus {
        observed_generation: generation,
        attached: Some(index.policy_attachments.get(&id).copied().unwrap_or_default()),
        services: services.unwrap_or_default(),
        tokens: Some(index.policy_tokens.get(&id).copied().unwrap_or_default()),
        limits: Some(limits(object.spec.rate_limits.as_ref())),
        conditions: conds,
    }
}

/// A Budget's status. Spend fields belong to the usage ledger and are left as they are.
pub fn budget(object: &Budget, index: &Index<'_>, now: &Time) -> BudgetStatus {
    let id = id_of(object);
    let generation = object.metadata.generation;
    let diags = index.diagnostics("Budget", &id);
    let current = object.status.clone().unwrap_or_default();
    let mut conds = current.conditions.clone();
    let errors: Vec<&Diagnostic> = diags.iter().copied().filter(|d| d.is_error()).collect();
    set(&mut conds, REFERENCES_RESOLVED, &errors, "every Service it names exists", generation, now);
    let compiled = index.compiled.is_some_and(|c| c.config.budgets.iter().any(|b| b.id == id));
    set_ready(&mut conds, &diags, compiled, "in the compiled config", generation, now);
    BudgetStatus { observed_generation: generation, conditions: conds, ..current }
}

/// A MachineToken's status. `secret` is the token's Secret when uprox issued it.
pub fn machine_token(
    object: &MachineToken,
    secret: Option<&Secret>,
    index: &Index<'_>,
    now: &Time,
) -> MachineTokenStatus {
    let id = id_of(object);
    let generation = object.metadata.generation;
    let diags = index.diagnostics("MachineToken", &id);
    let mut conds = object.status.as_ref().map(|s| s.conditions.clone()).unwrap_or_default();
    let current = match object.secret_state(secret) {
        TokenSecretState::Current => secret,
        _ => None,
    };
    let live = index.tokens.get(&id);

    let (issued_ok, issued_reason, issued_message) = match (current, object.spec.revoked) {
        (_, true) => (false, reason::REVOKED, "revoked: every request with this token is refused".to_owned()),
        (Some(s), false) => {
            (true, reason::ISSUED, format!("issued into Secret {}", s.metadata.name.as_deref().unwrap_or_default()))
        }
        (None, false) => {
            let why = diags
                .iter()
                .find(|d| d.reason == reason::NOT_ISSUED)
                .map_or_else(|| "not issued yet".to_owned(), |d| d.message.clone());
            (false, reason::NOT_ISSUED, why)
        }
    };
    upsert(&mut conds, ISSUED, issued_ok, issued_reason, issued_message, generation, now);

    let reference_errors: Vec<&Diagnostic> =
        diags.iter().copied().filter(|d| d.is_error() && d.reason != reason::NOT_ISSUED).collect();
    set(&mut conds, REFERENCES_RESOLVED, &reference_errors, "its Service and Policies exist", generation, now);

    let expires_at = object.spec.expires_at.clone();
    let expired = expires_at.as_ref().is_some_and(|t| t.0 <= now.0);
    let active = live.is_some_and(|t| t.denied.is_none());
    let state = token_state(object.spec.revoked, expired, active);
    if object.spec.revoked {
        upsert(&mut conds, READY, false, reason::REVOKED, "revoked", generation, now);
    } else if expired {
        upsert(
            &mut conds,
            READY,
            false,
            reason::EXPIRED,
            "expired: set spec.expiresAt later, or remove it",
            generation,
            now,
        );
    } else if active {
        upsert(&mut conds, READY, true, reason::COMPILED, "accepted by the gateway", generation, now);
    } else {
        let first = diags.iter().find(|d| d.is_error()).or(diags.first());
        let (r, message) =
            first.map_or((reason::NOT_ISSUED, "not issued yet".to_owned()), |d| (d.reason, joined(&diags)));
        upsert(&mut conds, READY, false, r, message, generation, now);
    }

    MachineTokenStatus {
        observed_generation: generation,
        display: current.and_then(token_display),
        secret_name: Some(object.secret_name()),
        issued_at: current.and_then(issued_at),
        expires_at,
        state: Some(state),
        conditions: conds,
    }
}

/// A token's one-word state, in the order the `Ready` condition decides: revoked wins over
/// expired, expired over not (yet) accepted; only a token the gateway accepts is `Active`.
fn token_state(revoked: bool, expired: bool, accepted: bool) -> TokenState {
    if revoked {
        TokenState::Revoked
    } else if expired {
        TokenState::Expired
    } else if accepted {
        TokenState::Active
    } else {
        TokenState::Pending
    }
}

/// Widest summary shown in a printer column, in characters.
const SUMMARY_WIDTH: usize = 40;

/// The model patterns a Provider serves, for the `Models` column: its `spec.models`, else its
/// type's defaults, joined by `, ` and cut to [`SUMMARY_WIDTH`] characters.
fn served_models(object: &Provider) -> String {
    let models: Vec<&str> = if object.spec.models.is_empty() {
        object.spec.provider_type.default_models().to_vec()
    } else {
        object.spec.models.iter().map(Pattern::as_str).collect()
    };
    if models.is_empty() { "none".to_owned() } else { summary(&models, SUMMARY_WIDTH) }
}

/// `items` joined by `, `, at most `width` characters: whole items while they fit, then `…`
/// (an item too long on its own is cut inside).
fn summary(items: &[&str], width: usize) -> String {
    let full = items.join(", ");
    if full.chars().count() <= width {
        return full;
    }
    let mut text = String::new();
    for item in items {
        let next = if text.is_empty() { (*item).to_owned() } else { format!("{text}, {item}") };
        // Room for the ", …" that follows.
        if next.chars().count() + 3 > width {
            break;
        }
        text = next;
    }
    if text.is_empty() {
        let mut cut: String = full.chars().take(width.saturating_sub(1)).collect();
        cut.push('…');
        cut
    } else {
        format!("{text}, …")
    }
}

/// A Policy's rate limits in short for the `Limits` column: `60 rpm, 10k tpm, 4 concurrent`,
/// or `none` when it sets none.
fn limits(rate_limits: Option<&RateLimits>) -> String {
    let Some(l) = rate_limits else { return "none".to_owned() };
    let parts: Vec<String> =
        [(l.requests_per_minute, "rpm"), (l.tokens_per_minute, "tpm"), (l.max_concurrent_requests, "concurrent")]
            .into_iter()
            .filter_map(|(n, unit)| n.map(|n| format!("{} {unit}", compact(n.get()))))
            .collect();
    if parts.is_empty() { "none".to_owned() } else { parts.join(", ") }
}

/// A count written short without losing its value: `10k` for 10000, `1.5M` for 1500000, the
/// digits themselves when a short form would round.
fn compact(n: u32) -> String {
    for (size, suffix) in [(1_000_000, "M"), (1_000, "k")] {
        if n >= size {
            if n.is_multiple_of(size) {
                return format!("{}{suffix}", n / size);
            }
            if n.is_multiple_of(size / 10) {
                return format!("{}.{}{suffix}", n / size, n % size / (size / 10));
            }
        }
    }
    n.to_string()
}

/// What may be shown of the token in a Secret: prefix and a few characters.
fn token_display(secret: &Secret) -> Option<String> {
    let from_data = secret.data.as_ref().and_then(|d| d.get(token::SECRET_KEY)).map(|b| b.0.as_slice());
    let from_string_data = secret.string_data.as_ref().and_then(|d| d.get(token::SECRET_KEY)).map(String::as_bytes);
    let text = std::str::from_utf8(from_data.or(from_string_data)?).ok()?;
    token::is_well_formed(text).then(|| token::display(text))
}

/// When the token was issued, to the second: `Time` is stored with second precision, so a
/// finer value would never equal what the API server gives back and would be rewritten on
/// every pass.
fn issued_at(secret: &Secret) -> Option<Time> {
    let text = secret.annotations().get(token::ISSUED_AT_ANNOTATION)?;
    let at: k8s_openapi::jiff::Timestamp = text.parse().ok()?;
    k8s_openapi::jiff::Timestamp::from_second(at.as_second()).ok().map(Time)
}

/// Sets a specific condition: true with `ok_message` when there are no problems, else false
/// with the first problem's reason and every problem's message.
fn set(
    conds: &mut Vec<Condition>,
    type_: &str,
    problems: &[&Diagnostic],
    ok_message: &str,
    generation: Option<i64>,
    now: &Time,
) {
    match problems.first() {
        None => upsert(conds, type_, true, reason::COMPILED, ok_message.to_owned(), generation, now),
        Some(first) => upsert(conds, type_, false, first.reason, joined(problems), generation, now),
    }
}

/// Sets `Ready`: false on any error (or when the resource is absent from the config), true
/// otherwise, with warnings appended to the message so they are not lost.
fn set_ready(
    conds: &mut Vec<Condition>,
    diags: &[&Diagnostic],
    in_config: bool,
    ok_message: &str,
    generation: Option<i64>,
    now: &Time,
) {
    let errors: Vec<&Diagnostic> = diags.iter().copied().filter(|d| d.is_error()).collect();
    if let Some(first) = errors.first() {
        upsert(conds, READY, false, first.reason, joined(&errors), generation, now);
    } else if !in_config {
        upsert(conds, READY, false, reason::INVALID_SPEC, "not in the compiled config".to_owned(), generation, now);
    } else if diags.is_empty() {
        upsert(conds, READY, true, reason::COMPILED, ok_message.to_owned(), generation, now);
    } else {
        upsert(
            conds,
            READY,
            true,
            reason::COMPILED,
            format!("{ok_message}; warning: {}", joined(diags)),
            generation,
            now,
        );
    }
}

fn upsert(
    conds: &mut Vec<Condition>,
    type_: &str,
    ok: bool,
    reason: &str,
    message: impl Into<String>,
    generation: Option<i64>,
    now: &Time,
) {
    conditions::upsert(conds, conditions::new(type_, ok, reason, message, generation, now.clone()));
}

/// Messages joined for one condition; the API server caps a message at 32 KiB.
fn joined(diags: &[&Diagnostic]) -> String {
    let mut text = diags.iter().map(|d| d.message.as_str()).collect::<Vec<_>>().join("; ");
    if text.len() > 32 * 1024 - 16 {
        let mut cut = 32 * 1024 - 16;
        while !text.is_char_boundary(cut) {
            cut -= 1;
        }
        text.truncate(cut);
        text.push_str(" …");
    }
    text
}

#[cfg(test)]
mod tests;
