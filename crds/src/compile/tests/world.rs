//! The world a test compiles ([`World`], a chainable bag of resources and Secrets) and lookups
//! into the output ([`Compiled`] methods that find one object or the only diagnostic).
//!
//! Building single resources is [`super::fixtures`]' job; this module only gathers and looks up.

use k8s_openapi::api::core::v1::Secret;

use crate::budget::Budget;
use crate::common::ObjectId;
use crate::compile::{Compiled, Diagnostic, Resources, compile};
use crate::config::{BudgetConfig, PolicyConfig, ProviderConfig, ServiceConfig, TokenConfig};
use crate::machine_token::MachineToken;
use crate::policy::Policy;
use crate::provider::Provider;
use crate::service::Service;

/// A set of resources and Secrets, compiled with [`World::compile`]; its fields are those of
/// [`Resources`] (through `Deref`).
#[derive(Clone, Debug, Default)]
pub struct World(Resources);

impl std::ops::Deref for World {
    type Target = Resources;
    fn deref(&self) -> &Resources {
        &self.0
    }
}

impl std::ops::DerefMut for World {
    fn deref_mut(&mut self) -> &mut Resources {
        &mut self.0
    }
}

impl World {
    pub fn new() -> Self {
        Self::default()
    }
    pub fn provider(mut self, provider: impl Into<Provider>) -> Self {
        self.providers.push(provider.into());
        self
    }
    pub fn service(mut self, service: impl Into<Service>) -> Self {
        self.services.push(service.into());
        self
    }
    pub fn token(mut self, token: impl Into<MachineToken>) -> Self {
        self.tokens.push(token.into());
        self
    }
    pub fn policy(mut self, policy: impl Into<Policy>) -> Self {
        self.policies.push(policy.into());
        self
    }
    pub fn budget(mut self, budget: impl Into<Budget>) -> Self {
        self.budgets.push(budget.into());
        self
    }
    pub fn secret(mut self, secret: impl Into<Secret>) -> Self {
        self.secrets.push(secret.into());
        self
    }
    pub fn compile(&self) -> Compiled {
        compile(&self.inputs())
    }
}

/// Lookups into a compilation result that panic with the whole output when something is absent.
impl Compiled {
    pub fn provider(&self, namespace: &str, name: &str) -> Option<&ProviderConfig> {
        let id = ObjectId::new(namespace, name);
        self.config.providers.iter().find(|p| p.id == id)
    }
    pub fn service(&self, namespace: &str, name: &str) -> &ServiceConfig {
        let id = ObjectId::new(namespace, name);
        match self.config.services.iter().find(|s| s.id == id) {
            Some(found) => found,
            None => panic!("no Service {id} in {:#?}", self.config.services),
        }
    }
    pub fn token(&self, namespace: &str, name: &str) -> Option<&TokenConfig> {
        let id = ObjectId::new(namespace, name);
        self.config.tokens.iter().find(|t| t.id == id)
    }
    pub fn policy(&self, namespace: &str, name: &str) -> Option<&PolicyConfig> {
        let id = ObjectId::new(namespace, name);
        self.config.policies.iter().find(|p| p.id == id)
    }
    pub fn budget(&self, namespace: &str, name: &str) -> Option<&BudgetConfig> {
        let id = ObjectId::new(namespace, name);
        self.config.budgets.iter().find(|b| b.id == id)
    }
    /// The only diagnostic of the whole compilation; panics unless there is exactly one.
    pub fn only_diagnostic(&self) -> &Diagnostic {
        match self.diagnostics.as_slice() {
            [only] => only,
            all => panic!("expected exactly one diagnostic, got {all:#?}"),
        }
    }
    /// The value of a provider key, by key id.
    pub fn key_value(&self, id: &str) -> Option<&str> {
        self.keys.get(id).map(|v| v.expose())
    }
}
