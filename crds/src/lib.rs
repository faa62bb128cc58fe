//! The uprox API: the custom resources of group `uprox.dev`, the condition vocabulary, the
//! `GatewayConfig` contract between the operator and the gateway, and the pure
//! [`compile()`](compile::compile) that turns the first into the last.
//!
//! This crate owns every wire type of the project and nothing else defines them. It has no
//! tokio and no Kubernetes client: the operator and the gateway add the IO around it.

#![expect(
    clippy::duplicated_attributes,
    reason = "kube's printcolumn(...) attributes repeat `type_ = \"string\"` by design"
)]

pub mod budget;
pub mod bundle;
pub mod cluster;
pub mod common;
pub mod compile;
pub mod conditions;
pub mod config;
pub mod crdgen;
pub mod machine_token;
pub mod policy;
pub mod prices;
pub mod provider;
pub mod sealed;
pub mod secret;
pub mod service;
pub mod token;
pub mod usage;

pub use budget::{Budget, BudgetAlert, BudgetSpec, BudgetSpend, BudgetStatus, BudgetWindow};
pub use compile::{Compiled, Diagnostic, Inputs, Resources, Severity, compile};
pub use config::GatewayConfig;
pub use machine_token::{MachineToken, MachineTokenSpec, MachineTokenStatus, TokenSecretState, TokenState};
pub use policy::{Policy, PolicySpec, PolicyStatus};
pub use provider::{Provider, ProviderSpec, ProviderStatus, ProviderType};
pub use service::{Service, ServiceSpec, ServiceStatus};

/// The API group of every uprox resource.
pub const GROUP: &str = "uprox.dev";
/// The API version served by this crate.
pub const VERSION: &str = "v1alpha1";
/// `apiVersion` as written in manifests.
pub const API_VERSION: &str = "uprox.dev/v1alpha1";
