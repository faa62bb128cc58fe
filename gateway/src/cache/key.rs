//! The response cache's key and eligibility (issue 8, groundwork): which requests may be
//! answered from the cache, and the SHA-256 that names an answer.
//!
//! **The key** covers everything that decides the answer and nothing that does not: the tenant
//! (namespace and Service — one team never reads another's entries), the endpoint, the provider
//! that serves the request and the model, and the body in canonical form: parsed, with the
//! fields that do not change the answer removed ([`IGNORED_FIELDS`]: who asks, what is stored,
//! whether it streams), and written back with every object's keys sorted. `stream` is among the
//! ignored fields on purpose: a streamed and a non-streamed request for the same content share
//! an entry, and the cache answers each in its own shape.
//!
//! **Eligibility**: only deterministic requests — `temperature` 0 or a `seed` for chat
//! completions and Responses; embeddings always.

use serde_json::{Map, Value};
use sha2::{Digest as _, Sha256};

/// Body fields that do not change the answer: left out of the key.
pub const IGNORED_FIELDS: &[&str] =
    &["user", "metadata", "store", "stream", "stream_options", "safety_identifier", "prompt_cache_key"];

/// Which API an entry answers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Endpoint {
    /// Chat completions.
    Chat,
    /// The Responses API.
    Responses,
    /// Embeddings.
    Embeddings,
}

impl Endpoint {
    fn name(self) -> &'static str {
        match self {
            Endpoint::Chat => "chat.completions",
            Endpoint::Responses => "responses",
            Endpoint::Embeddings => "embeddings",
        }
    }
}

/// Whom an entry belongs to.
#[derive(Debug, Clone, Copy)]
pub struct Tenant<'a> {
    /// The Service's namespace.
    pub namespace: &'a str,
    /// The Service.
    pub service: &'a str,
}

/// The SHA-256 naming one cached answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct CacheKey(pub [u8; 32]);

/// Why a request is not looked up in the cache.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ineligible {
    /// Sampling may change the answer: neither `temperature: 0` nor a `seed`.
    NotDeterministic,
    /// The body is not a JSON object.
    NotAnObject,
}

/// The key of a request, or why it is not cached.
pub fn key(
    tenant: Tenant<'_>,
    endpoint: Endpoint,
    provider: &str,
    model: &str,
    body: &[u8],
) -> Result<CacheKey, Ineligible> {
    let Ok(Value::Object(mut object)) = serde_json::from_slice::<Value>(body) else {
        return Err(Ineligible::NotAnObject);
    };
    if !deterministic(endpoint, &object) {
        return Err(Ineligible::NotDeterministic);
    }
    for field in IGNORED_FIELDS {
        object.remove(*field);
    }
    // serde_json's map is ordered by key, at every depth: this is the canonical form.
    let canonical = serde_json::to_vec(&object).map_err(|_| Ineligible::NotAnObject)?;
    let mut hash = Sha256::new();
    for part in ["uprox-cache-v1", tenant.namespace, tenant.service, endpoint.name(), provider, model] {
        hash.update(part.as_bytes());
        // A separator no name contains, so ("ab", "c") and ("a", "bc") differ.
        hash.update([0u8]);
    }
    hash.update(&canonical);
    Ok(CacheKey(hash.finalize().into()))
}

/// Whether the same request always gets the same answer: embeddings do; chat completions and
/// Responses when `temperature` is 0 or a `seed` is set.
pub fn deterministic(endpoint: Endpoint, body: &Map<String, Value>) -> bool {
    match endpoint {
        Endpoint::Embeddings => true,
        Endpoint::Chat | Endpoint::Responses => {
            body.get("temperature").and_then(Value::as_f64) == Some(0.0)
                || body.get("seed").is_some_and(|seed| seed.is_i64() || seed.is_u64())
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    const TEAM: Tenant<'static> = Tenant { namespace: "team", service: "app" };

    fn chat(body: &str) -> Result<CacheKey, Ineligible> {
        key(TEAM, Endpoint::Chat, "team/openai", "gpt-4o", body.as_bytes())
    }

    #[test]
    fn the_key_ignores_order_whitespace_and_fields_that_do_not_change_the_answer() {
        let a = chat(r#"{"model":"gpt-4o","temperature":0,"messages":[{"role":"user","content":"hi"}]}"#).unwrap();
        let b = chat(
            r#"{ "messages": [ {"content":"hi", "role":"user"} ], "temperature": 0, "model":"gpt-4o",
                 "user":"u1", "metadata":{"k":"v"}, "store":true, "stream":true,
                 "stream_options":{"include_usage":true} }"#,
        )
        .unwrap();
        assert_eq!(a, b);
        let other = chat(r#"{"model":"gpt-4o","temperature":0,"messages":[{"role":"user","content":"hello"}]}"#);
        assert_ne!(a, other.unwrap());
    }

    #[test]
    fn tenants_endpoints_providers_and_models_never_share() {
        let body = br#"{"model":"m","input":"x"}"#;
        let base = key(TEAM, Endpoint::Embeddings, "team/p", "m", body).unwrap();
        let variants = [
            key(Tenant { namespace: "team", service: "other" }, Endpoint::Embeddings, "team/p", "m", body),
            key(Tenant { namespace: "other", service: "app" }, Endpoint::Embeddings, "team/p", "m", body),
            key(TEAM, Endpoint::Embeddings, "team/q", "m", body),
            key(TEAM, Endpoint::Embeddings, "team/p", "m2", body),
            // The separator keeps ("team", "app") apart from ("tea", "mapp").
            key(Tenant { namespace: "tea", service: "mapp" }, Endpoint::Embeddings, "team/p", "m", body),
        ];
        for variant in variants {
            assert_ne!(variant.unwrap(), base);
        }
        let responses = key(TEAM, Endpoint::Responses, "team/p", "m", br#"{"model":"m","input":"x","seed":1}"#);
        let chat_twin = key(TEAM, Endpoint::Chat, "team/p", "m", br#"{"model":"m","input":"x","seed":1}"#);
        assert_ne!(responses.unwrap(), chat_twin.unwrap());
    }

    #[test]
    fn only_deterministic_requests_are_cached() {
        assert!(chat(r#"{"temperature":0.0}"#).is_ok());
        assert!(chat(r#"{"seed":42,"temperature":1}"#).is_ok());
        assert_eq!(chat(r#"{"temperature":0.2}"#), Err(Ineligible::NotDeterministic));
        assert_eq!(chat(r#"{"messages":[]}"#), Err(Ineligible::NotDeterministic), "the default temperature is 1");
        assert_eq!(chat(r#"{"seed":"42"}"#), Err(Ineligible::NotDeterministic));
        assert_eq!(chat("[1]"), Err(Ineligible::NotAnObject));
        assert!(key(TEAM, Endpoint::Embeddings, "p", "m", br#"{"input":"x"}"#).is_ok(), "embeddings always");
    }
}
