//! The response cache's key and eligibility: which requests may be answered from the cache,
//! and the SHA-256 that names an answer.
//!
//! **The key** covers everything that decides the answer and nothing that does not: the tenant
//! (namespace and Service — one team never reads another's entries), the endpoint, the provider
//! that serves the request and the model, and the body in canonical form: parsed, with the
//! fields that do not change the answer removed ([`IGNORED_FIELDS`]: who asks, what is stored,
//! whether it streams), and written back with every object's keys sorted. `stream` is among the
//! ignored fields on purpose: a streamed and a non-streamed request for the same content share
//! an entry, and the cache answers each in its own shape.
//!
//! **Eligibility** ([`eligible`]): in the default mode only deterministic requests —
//! `temperature` 0 or an integer `seed` for chat completions and Responses; embeddings always.

use serde_json::Value;
use sha2::{Digest as _, Sha256};
use uprox_crds::policy::CacheMode;

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

/// The key of a request; `None` when the body is not a JSON object.
pub fn key(tenant: Tenant<'_>, endpoint: Endpoint, provider: &str, model: &str, body: &[u8]) -> Option<CacheKey> {
    let Ok(Value::Object(mut object)) = serde_json::from_slice::<Value>(body) else {
        return None;
    };
    for field in IGNORED_FIELDS {
        object.remove(*field);
    }
    for value in object.values_mut() {
        integral_numbers(value);
    }
    // serde_json's map is ordered by key, at every depth: this is the canonical form.
    let canonical = serde_json::to_vec(&object).ok()?;
    let mut hash = Sha256::new();
    for part in ["uprox-cache-v1", tenant.namespace, tenant.service, endpoint.name(), provider, model] {
        hash.update(part.as_bytes());
        // A separator no name contains, so ("ab", "c") and ("a", "bc") differ.
        hash.update([0u8]);
    }
    hash.update(&canonical);
    Some(CacheKey(hash.finalize().into()))
}

/// Writes every number with an integral value as an integer, at every depth: `0.0` and `0`,
/// `1e3` and `1000` mean the same to every provider.
fn integral_numbers(value: &mut Value) {
    match value {
        Value::Number(n) if n.is_f64() => {
            if let Some(f) = n.as_f64()
                && f.fract() == 0.0
                && f.abs() < 9.0e15
            {
                // Exact: |f| < 2^53.
                *value = Value::from(f as i64);
            }
        }
        Value::Array(items) => items.iter_mut().for_each(integral_numbers),
        Value::Object(fields) => fields.values_mut().for_each(integral_numbers),
        _ => {}
    }
}

/// Whether a request may be answered from the cache under `mode`: in `Deterministic` mode,
/// embeddings always, chat completions and Responses when `deterministic` (`temperature` 0 or
/// an integer `seed`); in `All` mode every request; in `Off` mode none.
pub fn eligible(mode: CacheMode, endpoint: Endpoint, deterministic: bool) -> bool {
    match mode {
        CacheMode::Off => false,
        CacheMode::All => true,
        CacheMode::Deterministic => endpoint == Endpoint::Embeddings || deterministic,
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    const TEAM: Tenant<'static> = Tenant { namespace: "team", service: "app" };

    fn chat(body: &str) -> Option<CacheKey> {
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
        // Numbers are compared by value.
        let floats = chat(r#"{"model":"gpt-4o","temperature":0.0,"messages":[{"role":"user","content":"hi"}]}"#);
        assert_eq!(floats.unwrap(), a);
        let x = chat(r#"{"temperature":0,"max_tokens":1e3,"top_p":0.5}"#).unwrap();
        assert_eq!(x, chat(r#"{"temperature":0,"max_tokens":1000,"top_p":0.5}"#).unwrap());
        assert_ne!(x, chat(r#"{"temperature":0,"max_tokens":1000,"top_p":0.25}"#).unwrap());
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
    fn modes_decide_which_requests_are_eligible() {
        use CacheMode::*;
        assert!(eligible(Deterministic, Endpoint::Chat, true));
        assert!(!eligible(Deterministic, Endpoint::Chat, false), "sampled requests are not cached by default");
        assert!(!eligible(Deterministic, Endpoint::Responses, false));
        assert!(eligible(Deterministic, Endpoint::Embeddings, false), "embeddings always");
        assert!(eligible(All, Endpoint::Chat, false));
        assert!(!eligible(Off, Endpoint::Embeddings, true));
        assert!(chat("[1]").is_none(), "not an object");
    }
}
