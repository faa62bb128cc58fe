//! The response cache (issue 8, in progress): exact-match answers for deterministic chat
//! completions, Responses and embeddings, per tenant. [`key`] decides which requests are
//! eligible and names their answers; [`store`] holds them, bounded by bytes, each for its TTL.
//! Recording, replaying and the `x-uprox-cache` header come next.

pub mod key;
pub mod store;
