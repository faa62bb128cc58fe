//! `compile()`: the pure function that turns the uprox resources and the Secrets they refer to
//! into one [`GatewayConfig`], the provider key values beside it ([`KeyMaterial`]), and a
//! [`Diagnostic`] for everything a person has to fix.
//!
//! It owns resolution (Secrets, Policies, Providers, pins, Budgets, token Secrets), defaults and
//! the ordering that makes its output deterministic. It does no IO, reads no clock and draws no
//! randomness: the operator and standalone mode bring the inputs and act on the outputs
//! (writing the config, sealing keys, turning diagnostics into conditions and Events).
//!
//! Each kind is compiled by its own submodule; this one orders them, because later kinds refer
//! to earlier ones: Policies, Providers, Budgets, Services, then MachineTokens.

mod budgets;
mod diagnostics;
mod policies;
mod providers;
mod secrets;
mod services;
mod tokens;

#[cfg(test)]
mod tests;

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::Secret;
use kube::Resource;

use self::diagnostics::Diagnostics;
pub use self::diagnostics::{Diagnostic, Severity};
use crate::budget::Budget;
use crate::common::ObjectId;
use crate::conditions::reason;
use crate::config::{CONFIG_VERSION, GatewayConfig, KeyMaterial};
use crate::machine_token::MachineToken;
use crate::policy::Policy;
use crate::provider::Provider;
use crate::service::Service;

/// Everything `compile()` reads: the resources of every watched namespace and their Secrets.
#[derive(Clone, Copy, Debug, Default)]
pub struct Inputs<'a> {
    /// Provider resources.
    pub providers: &'a [Provider],
    /// Service resources.
    pub services: &'a [Service],
    /// MachineToken resources.
    pub tokens: &'a [MachineToken],
    /// Policy resources.
    pub policies: &'a [Policy],
    /// Budget resources.
    pub budgets: &'a [Budget],
    /// Secrets that provider keys and machine tokens may live in.
    pub secrets: &'a [Secret],
}

/// The resources and Secrets `compile()` reads, owned: what a config source (a folder of
/// manifests, the operator's watch stores) collects before compiling.
#[derive(Clone, Debug, Default)]
pub struct Resources {
    /// Provider resources.
    pub providers: Vec<Provider>,
    /// Service resources.
    pub services: Vec<Service>,
    /// MachineToken resources.
    pub tokens: Vec<MachineToken>,
    /// Policy resources.
    pub policies: Vec<Policy>,
    /// Budget resources.
    pub budgets: Vec<Budget>,
    /// Secrets.
    pub secrets: Vec<Secret>,
}

impl Resources {
    /// Borrows everything as [`Inputs`].
    pub fn inputs(&self) -> Inputs<'_> {
        Inputs {
            providers: &self.providers,
            services: &self.services,
            tokens: &self.tokens,
            policies: &self.policies,
            budgets: &self.budgets,
            secrets: &self.secrets,
        }
    }
}

/// What `compile()` produces.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Compiled {
    /// The config every gateway replica serves; it holds no secret value.
    pub config: GatewayConfig,
    /// Provider key values by [`KeyConfig::id`](crate::config::KeyConfig::id).
    pub keys: KeyMaterial,
    /// What is wrong, sorted by (kind, object, message).
    pub diagnostics: Vec<Diagnostic>,
}

impl Compiled {
    /// Whether any diagnostic is an error.
    pub fn has_errors(&self) -> bool {
        self.diagnostics.iter().any(Diagnostic::is_error)
    }

    /// The diagnostics about one object.
    pub fn diagnostics_for<'s>(&'s self, kind: &'s str, object: &'s ObjectId) -> impl Iterator<Item = &'s Diagnostic> {
        self.diagnostics.iter().filter(move |d| d.kind == kind && &d.object == object)
    }
}

/// Compiles the resources into a gateway config. See the module documentation.
pub fn compile(inputs: &Inputs<'_>) -> Compiled {
    let mut diags = Diagnostics::default();
    let secrets = secrets::SecretIndex::new(inputs.secrets);

    let policies = policies::compile(index(diagnostics::POLICY, inputs.policies, &mut diags), &mut diags);
    let providers =
        providers::compile(index(diagnostics::PROVIDER, inputs.providers, &mut diags), &secrets, &mut diags);
    let services = index(diagnostics::SERVICE, inputs.services, &mut diags);
    let budgets = budgets::compile(index(diagnostics::BUDGET, inputs.budgets, &mut diags), &services, &mut diags);
    let service_configs = services::compile(&services, &providers, &policies, &budgets, &mut diags);
    let tokens = tokens::compile(
        index(diagnostics::MACHINE_TOKEN, inputs.tokens, &mut diags),
        &services,
        &policies,
        &secrets,
        &mut diags,
    );

    let (provider_configs, keys) = providers.into_config();
    Compiled {
        config: GatewayConfig {
            version: CONFIG_VERSION,
            providers: provider_configs,
            services: service_configs,
            tokens,
            policies: policies.into_config(),
            budgets: budgets.into_config(),
        },
        keys,
        diagnostics: diags.into_sorted(),
    }
}

/// The objects of one kind by id. Objects without a namespace or name are reported and left
/// out. Two objects with one id cannot exist in a cluster but can in a folder of manifests
/// (standalone mode); then every copy is left out, since keeping either would make the output
/// depend on the order the files were read in.
fn index<'a, K: Resource>(kind: &'static str, objects: &'a [K], diags: &mut Diagnostics) -> BTreeMap<ObjectId, &'a K> {
    let mut seen: BTreeMap<ObjectId, Vec<&'a K>> = BTreeMap::new();
    for object in objects {
        let meta = object.meta();
        let namespace = meta.namespace.as_deref().unwrap_or_default();
        let name = meta.name.as_deref().unwrap_or_default();
        let id = ObjectId::new(namespace, name);
        if namespace.is_empty() || name.is_empty() {
            let missing = match (namespace.is_empty(), name.is_empty()) {
                (true, true) => "metadata.namespace and metadata.name are",
                (true, false) => "metadata.namespace is",
                _ => "metadata.name is",
            };
            diags.error(
                kind,
                &id,
                reason::INVALID_SPEC,
                format!(
                    "{missing} missing, so it is ignored; every uprox resource is namespaced and named: \
                     set both in the manifest"
                ),
            );
            continue;
        }
        seen.entry(id).or_default().push(object);
    }
    let mut unique = BTreeMap::new();
    for (id, copies) in seen {
        match copies.as_slice() {
            [only] => {
                unique.insert(id, *only);
            }
            _ => diags.error(
                kind,
                &id,
                reason::INVALID_SPEC,
                format!(
                    "is defined {} times, so every copy is ignored; keep exactly one manifest for it",
                    copies.len()
                ),
            ),
        }
    }
    unique
}
