//! Endpoint handlers. Each takes the request [`Context`](crate::router::Context) built by the
//! router (snapshot, authenticated caller, request id) and returns a response or an error.

pub mod chat;
pub mod embeddings;
pub mod files;
pub mod health;
pub mod messages;
pub mod models;
pub mod responses;
pub(crate) mod routing;
