//! Money on the request path: what every answer cost and whether a Budget still allows the
//! next request.
//!
//! - [`scan`] reads the token usage and the model a provider reports in its answer (JSON or
//!   SSE, frames split anywhere); [`strip`] removes from an OpenAI chat stream the usage-only
//!   chunk the gateway asked for on behalf of a client that did not.
//! - [`meter`] is one request's account: created after routing ([`budget`] checked, an
//!   estimate reserved), fed by the relay, settled once when the answer ends or is dropped.
//! - [`state`] holds the spend per Service and the reservations per Budget across snapshots;
//!   [`flush`] writes them to the shared usage ledger in a [`store`] (a file in standalone mode,
//!   a ConfigMap in cluster mode) and reads back everybody's spend; [`metrics`] exposes the
//!   cost on the admin port.
//!
//! Prices and exact cost arithmetic are [`uprox_crds::prices`]'; the ledger's shape is
//! [`uprox_crds::usage`].

pub mod budget;
pub mod flush;
pub mod meter;
pub mod metrics;
pub mod scan;
pub mod state;
pub mod store;
pub mod strip;
