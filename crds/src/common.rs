//! Types shared by several resources and by the compiled config: object identities, scopes,
//! name and model patterns (exact or trailing `*`, case-insensitive), and Secret key references.
//!
//! Pattern *matching* lives here too, so the gateway and `compile()` agree on it to the letter.

use std::fmt;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// Identity of a namespaced object: `namespace/name`.
#[derive(Clone, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct ObjectId {
    /// The namespace.
    pub namespace: String,
    /// The name.
    pub name: String,
}

impl ObjectId {
    /// Builds an identity.
    pub fn new(namespace: impl Into<String>, name: impl Into<String>) -> Self {
        Self { namespace: namespace.into(), name: name.into() }
    }
}

impl fmt::Display for ObjectId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.namespace, self.name)
    }
}

/// What a token may be used for; every endpoint needs exactly one: `chat` (chat completions,
/// Azure's included), `messages` (Anthropic's `/v1/messages` and `/v1/messages/count_tokens`),
/// `responses`, `embeddings`, `models` (`/v1/models` and `/v1/models/{id}`), `files`, `images`,
/// `transcriptions`, `realtime`. A token or Policy with no scopes may do everything.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum Scope {
    /// Chat completions (`/v1/chat/completions` and the Azure chat completion URLs).
    Chat,
    /// Anthropic's Messages API (`/v1/messages`, `/v1/messages/count_tokens`), for Anthropic
    /// SDKs and coding agents.
    Messages,
    /// The Responses API (`/v1/responses`).
    Responses,
    /// Embeddings (`/v1/embeddings`).
    Embeddings,
    /// Image generation and edits.
    Images,
    /// Audio transcriptions.
    Transcriptions,
    /// Realtime session tokens.
    Realtime,
    /// Model listings (`/v1/models`, `/v1/models/{id}`).
    Models,
    /// The Files API (`/v1/files`).
    Files,
}

impl Scope {
    /// The lowercase name used in manifests and error messages.
    pub fn as_str(self) -> &'static str {
        match self {
            Scope::Chat => "chat",
            Scope::Messages => "messages",
            Scope::Responses => "responses",
            Scope::Embeddings => "embeddings",
            Scope::Images => "images",
            Scope::Transcriptions => "transcriptions",
            Scope::Realtime => "realtime",
            Scope::Models => "models",
            Scope::Files => "files",
        }
    }
}

/// A reference to one key of a Secret in the referrer's namespace.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct SecretKeyRef {
    /// Name of the Secret, in the same namespace as the resource that refers to it.
    #[schemars(length(min = 1, max = 253))]
    pub name: String,
    /// Key inside the Secret's `data` (or `stringData`) whose value is used.
    #[schemars(length(min = 1, max = 253))]
    pub key: String,
}

/// The regular expression every name or model pattern must match: any characters but `*` and
/// white space, optionally ending in one `*`; or `*` alone.
pub const PATTERN_REGEX: &str = r"^(\*|[^*\s]+\*?)$";

/// An exact name or a prefix ending in `*`, compared case-insensitively.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
#[serde(transparent)]
pub struct Pattern(#[schemars(regex(pattern = r"^(\*|[^*\s]+\*?)$"), length(min = 1, max = 253))] pub String);

impl Pattern {
    /// Builds a pattern from text (no validation: the schema validates manifests).
    pub fn new(text: impl Into<String>) -> Self {
        Self(text.into())
    }

    /// The text as written.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// Whether the pattern is valid: see [`PATTERN_REGEX`].
    pub fn is_valid(&self) -> bool {
        let s = self.0.as_str();
        if s == "*" {
            return true;
        }
        let body = s.strip_suffix('*').unwrap_or(s);
        !body.is_empty() && !body.contains('*') && !body.chars().any(char::is_whitespace)
    }

    /// The literal part and whether it is a prefix (`*` at the end).
    pub fn parts(&self) -> (&str, bool) {
        match self.0.strip_suffix('*') {
            Some(prefix) => (prefix, true),
            None => (self.0.as_str(), false),
        }
    }

    /// Whether `candidate` is matched: exactly, or by prefix, ignoring ASCII case.
    pub fn matches(&self, candidate: &str) -> bool {
        match self.parts() {
            (prefix, true) => {
                candidate.len() >= prefix.len()
                    && candidate.as_bytes()[..prefix.len()].eq_ignore_ascii_case(prefix.as_bytes())
            }
            (exact, false) => candidate.eq_ignore_ascii_case(exact),
        }
    }

    /// How specific a match is: exact names beat every prefix, longer prefixes beat shorter.
    pub fn specificity(&self) -> usize {
        match self.parts() {
            (_, false) => usize::MAX,
            (prefix, true) => prefix.len(),
        }
    }
}

impl fmt::Display for Pattern {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// Whether `candidate` passes an allowlist. An empty list allows everything.
pub fn allowed_by(list: &[Pattern], candidate: &str) -> bool {
    list.is_empty() || list.iter().any(|p| p.matches(candidate))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exact_patterns_ignore_case() {
        let p = Pattern::new("GPT-4o");
        assert!(p.matches("gpt-4o"));
        assert!(!p.matches("gpt-4o-mini"));
        assert!(!p.matches("gpt-4"));
    }

    #[test]
    fn trailing_star_is_a_prefix() {
        let p = Pattern::new("claude-*");
        assert!(p.matches("claude-sonnet-4"));
        assert!(p.matches("CLAUDE-"));
        assert!(!p.matches("claud"));
        assert!(Pattern::new("*").matches("anything"));
    }

    #[test]
    fn validity() {
        assert!(Pattern::new("gpt-*").is_valid());
        assert!(Pattern::new("*").is_valid());
        assert!(Pattern::new("a/b:c").is_valid());
        assert!(!Pattern::new("*gpt").is_valid());
        assert!(!Pattern::new("g*pt*").is_valid());
        assert!(!Pattern::new("").is_valid());
        assert!(!Pattern::new("a b").is_valid());
        assert!(!Pattern::new("**").is_valid());
    }

    #[test]
    fn specificity_orders_exact_then_longest_prefix() {
        assert!(Pattern::new("gpt-4o").specificity() > Pattern::new("gpt-4o*").specificity());
        assert!(Pattern::new("gpt-4*").specificity() > Pattern::new("gpt-*").specificity());
        assert!(Pattern::new("gpt-*").specificity() > Pattern::new("*").specificity());
    }

    #[test]
    fn empty_allowlist_allows_all() {
        assert!(allowed_by(&[], "x"));
        assert!(!allowed_by(&[Pattern::new("a*")], "b"));
        assert!(allowed_by(&[Pattern::new("a*"), Pattern::new("b")], "B"));
    }

    #[test]
    fn scope_names_round_trip() {
        for scope in [Scope::Chat, Scope::Messages, Scope::Files, Scope::Models] {
            let json = serde_json::to_string(&scope).unwrap_or_default();
            assert_eq!(json, format!("\"{}\"", scope.as_str()));
        }
    }
}
