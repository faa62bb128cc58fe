//! Services: resolving each Service's Policies, the Providers it may reach, its key pin and its
//! Budgets into a [`ServiceConfig`].
//!
//! A Service with a valid name is always emitted, so its tokens keep authenticating and are
//! refused with a clear message: a broken reference sets `denied` (fail closed) rather than
//! dropping the Service or ignoring the reference.

use std::collections::BTreeMap;

use crate::common::ObjectId;
use crate::conditions::reason;
use crate::config::ServiceConfig;
use crate::service::{KeyPin, Service};

use super::budgets::Budgets;
use super::diagnostics::{Diagnostics, SERVICE};
use super::policies::Policies;
use super::providers::{Lookup, Providers};

/// Compiles every Service, sorted by id.
pub(super) fn compile(
    services: &BTreeMap<ObjectId, &Service>,
    providers: &Providers,
    policies: &Policies,
    budgets: &Budgets,
    diags: &mut Diagnostics,
) -> Vec<ServiceConfig> {
    services
        .iter()
        .map(|(id, service)| {
            let spec = &service.spec;
            let resolved = policies.resolve(SERVICE, id, &spec.policies, diags);
            let mut denied: Vec<String> = resolved.denied.into_iter().collect();

            let reachable = providers.accessible_from(&id.namespace);
            if reachable.is_empty() {
                diags.warning(
                    SERVICE,
                    id,
                    reason::NO_PROVIDERS,
                    format!(
                        "no Provider is available to namespace {ns}, so every request fails; create a Provider \
                         in {ns}, or add {ns} to spec.allowedNamespaces of a Provider in another namespace",
                        ns = id.namespace
                    ),
                );
            }

            let pinned_key = match &spec.provider_key {
                None => None,
                Some(pin) => match resolve_pin(id, pin, providers) {
                    Ok(key_id) => Some(key_id),
                    Err((reason, message, refusal)) => {
                        diags.error(SERVICE, id, reason, message);
                        denied.push(refusal);
                        None
                    }
                },
            };

            ServiceConfig {
                id: id.clone(),
                providers: reachable,
                policies: resolved.ids,
                pinned_key,
                cache_ttl_seconds: spec.cache_ttl_seconds.unwrap_or(0),
                budgets: budgets.counting(id),
                denied: (!denied.is_empty()).then(|| denied.join("; ")),
            }
        })
        .collect()
}

/// The key id a pin resolves to, or the reason, the diagnostic message and the refusal text.
fn resolve_pin(
    service: &ObjectId,
    pin: &KeyPin,
    providers: &Providers,
) -> Result<String, (&'static str, String, String)> {
    let provider = ObjectId::new(pin.namespace.as_deref().unwrap_or(&service.namespace), &pin.provider);
    let label = &pin.label;
    let not_found = |state: String| {
        Err((
            reason::PROVIDER_NOT_FOUND,
            format!(
                "spec.providerKey pins Provider {provider}, which {state}; every request of this Service is refused \
                 until you fix that or remove spec.providerKey"
            ),
            format!("Service {service} is pinned to Provider {provider}, which it cannot use"),
        ))
    };
    let compiled = match providers.lookup(&provider) {
        Lookup::Missing => return not_found("does not exist".to_owned()),
        Lookup::Excluded => return not_found("is not usable (see its status)".to_owned()),
        Lookup::Compiled(p) if !p.grants(&service.namespace) => {
            return not_found(format!(
                "does not grant namespace {ns}: add {ns} to its spec.allowedNamespaces",
                ns = service.namespace
            ));
        }
        Lookup::Compiled(p) => p,
    };
    if let Some(key) = compiled.config.keys.iter().find(|k| &k.label == label) {
        return Ok(key.id.clone());
    }
    let state = if compiled.declared_labels.contains(label) {
        "did not resolve (see the Provider's status)".to_owned()
    } else if compiled.config.keys.is_empty() {
        "does not exist (the Provider has no keys)".to_owned()
    } else {
        let usable: Vec<&str> = compiled.config.keys.iter().map(|k| k.label.as_str()).collect();
        format!("does not exist (usable labels: {})", usable.join(", "))
    };
    Err((
        reason::KEY_NOT_FOUND,
        format!(
            "spec.providerKey pins key `{label}` of Provider {provider}, which {state}; every request of this \
             Service is refused until you pin an existing label or remove spec.providerKey"
        ),
        format!("Service {service} is pinned to key `{label}` of Provider {provider}, which is not usable"),
    ))
}
