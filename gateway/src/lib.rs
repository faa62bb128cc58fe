//! The uprox gateway: one OpenAI-compatible endpoint in front of every provider. It authenticates
//! machine tokens, applies Policies, routes by model and relays upstream answers, all from one
//! immutable snapshot of the compiled config that config sources swap in atomically.
//!
//! Config sources: [`standalone`] (a folder of manifests, compiled in-process) and [`cluster`]
//! (the config the operator compiled, watched through the Kubernetes API).

pub mod admin;
pub mod app;
pub mod audit;
pub mod auth;
pub mod body;
pub mod cache;
pub mod clock;
pub mod cluster;
pub mod error;
pub mod files;
pub mod handlers;
pub mod limits;
pub mod metrics;
pub mod models_cache;
pub mod policy;
pub mod providers;
pub mod relay;
pub mod request_id;
pub mod router;
pub mod server;
pub mod snapshot;
pub mod spend;
pub mod standalone;
pub mod trace;
pub mod upstream;
