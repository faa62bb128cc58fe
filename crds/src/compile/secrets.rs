//! Reading values out of Secrets: the lookup by namespace and name, the `stringData`-over-`data`
//! rule, trimming, and the [`Problem`]s a reference can run into, each with a message that says
//! how to fix it.
//!
//! It knows nothing about who refers to a Secret: providers and tokens add their own context
//! around a [`Problem`]. No message here ever contains a value, only Secret and key names.

use std::collections::{BTreeMap, BTreeSet};

use k8s_openapi::api::core::v1::Secret;

use crate::common::ObjectId;
use crate::conditions::reason;
use crate::secret::SecretString;

/// Why a Secret key did not give a usable value.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(super) enum Problem {
    /// No Secret of that name in the namespace.
    NotFound,
    /// More than one Secret manifest with that namespace and name (standalone mode only).
    Duplicate,
    /// The Secret lacks the key; these are the keys it has.
    KeyNotFound { available: Vec<String> },
    /// The value is empty or white space only.
    Empty,
    /// The value is not UTF-8 text.
    NotUtf8,
}

impl Problem {
    /// The condition reason and a message for a reference to `key` of Secret `secret`.
    pub(super) fn describe(&self, secret: &ObjectId, key: &str) -> (&'static str, String) {
        let ObjectId { namespace, name } = secret;
        match self {
            Problem::NotFound => (
                reason::SECRET_NOT_FOUND,
                format!(
                    "Secret {secret} does not exist; create it with \
                     `kubectl create secret generic {name} -n {namespace} --from-literal={key}=…`"
                ),
            ),
            Problem::Duplicate => (
                reason::SECRET_VALUE_INVALID,
                format!("Secret {secret} is defined more than once; keep exactly one manifest for it"),
            ),
            Problem::KeyNotFound { available } => {
                let has = if available.is_empty() {
                    "it has no keys".to_owned()
                } else {
                    format!("it has: {}", available.join(", "))
                };
                (
                    reason::SECRET_KEY_NOT_FOUND,
                    format!(
                        "Secret {secret} has no key `{key}` ({has}); add the key to the Secret or refer to one it has"
                    ),
                )
            }
            Problem::Empty => (
                reason::SECRET_VALUE_INVALID,
                format!("the value of key `{key}` in Secret {secret} is empty; put the value there"),
            ),
            Problem::NotUtf8 => (
                reason::SECRET_VALUE_INVALID,
                format!("the value of key `{key}` in Secret {secret} is not UTF-8 text; store it as plain text"),
            ),
        }
    }
}

/// The Secrets by namespace and name. A Secret without a namespace or name cannot be referred
/// to and is ignored.
pub(super) struct SecretIndex<'a> {
    /// `None` marks an id with several Secrets: there is no telling which one is meant.
    by_id: BTreeMap<ObjectId, Option<&'a Secret>>,
}

impl<'a> SecretIndex<'a> {
    /// Indexes `secrets`.
    pub(super) fn new(secrets: &'a [Secret]) -> Self {
        let mut by_id = BTreeMap::new();
        for secret in secrets {
            let (Some(namespace), Some(name)) = (&secret.metadata.namespace, &secret.metadata.name) else {
                continue;
            };
            if namespace.is_empty() || name.is_empty() {
                continue;
            }
            by_id.entry(ObjectId::new(namespace, name)).and_modify(|slot| *slot = None).or_insert(Some(secret));
        }
        Self { by_id }
    }

    /// The Secret `id`.
    pub(super) fn get(&self, id: &ObjectId) -> Result<&'a Secret, Problem> {
        match self.by_id.get(id) {
            None => Err(Problem::NotFound),
            Some(None) => Err(Problem::Duplicate),
            Some(Some(secret)) => Ok(secret),
        }
    }

    /// The trimmed value of `key` in the Secret `id`.
    pub(super) fn value(&self, id: &ObjectId, key: &str) -> Result<SecretString, Problem> {
        value_of(self.get(id)?, key)
    }
}

/// The value of `key`: `stringData` wins over `data`, as the API server merges them. Trimmed,
/// because `echo value | kubectl create secret …` and YAML block scalars add a newline.
pub(super) fn value_of(secret: &Secret, key: &str) -> Result<SecretString, Problem> {
    let text = if let Some(text) = secret.string_data.as_ref().and_then(|m| m.get(key)) {
        text.as_str()
    } else if let Some(bytes) = secret.data.as_ref().and_then(|m| m.get(key)) {
        std::str::from_utf8(&bytes.0).map_err(|_| Problem::NotUtf8)?
    } else {
        return Err(Problem::KeyNotFound { available: keys_of(secret) });
    };
    match text.trim() {
        "" => Err(Problem::Empty),
        trimmed => Ok(SecretString::new(trimmed)),
    }
}

/// The key names of a Secret, sorted, without duplicates.
fn keys_of(secret: &Secret) -> Vec<String> {
    let data = secret.data.iter().flat_map(|m| m.keys());
    let string_data = secret.string_data.iter().flat_map(|m| m.keys());
    data.chain(string_data).cloned().collect::<BTreeSet<_>>().into_iter().collect()
}
