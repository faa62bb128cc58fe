//! The uprox operator: watches the five uprox.dev kinds and the Secrets they name, compiles them
//! with [`uprox_crds::compile`] once per burst of changes, writes the compiled config and the
//! sealed provider keys for the gateways, issues machine tokens into Secrets, and keeps every
//! resource's status and Events current. See [`reconciler`] for the loop.

pub mod admin;
pub mod budget_schedule;
pub mod budget_status;
pub mod budgets;
pub mod leader;
pub mod ledger;
pub mod metrics;
pub mod outputs;
pub mod preflight;
pub mod provider_secrets;
pub mod reconciler;
pub mod status;
pub mod status_writer;
pub mod stores;
pub mod tokens;
