//! The response cache (issue 8, in progress): exact-match answers for deterministic chat
//! completions, Responses and embeddings, per tenant. [`key`] decides which requests are
//! eligible and names their answers; storing and replaying them comes next.

pub mod key;
