//! Issuing machine tokens in the cluster: a MachineToken whose Secret is missing, or holds an
//! older rotation, gets a new `uprox_live_` token from the operating system's CSPRNG, written
//! into its Secret (owned by the MachineToken, so deleting the token deletes the Secret). The
//! plaintext exists only in that Secret; the compiled config gets its digest on the next pass,
//! when the Secret's watch event arrives.
//!
//! A missing Secret is created (a plain create: a token is issued once, and a create that
//! races another write fails rather than overwrites). A stale one is replaced with its
//! `resourceVersion` as a precondition. A Secret of that name uprox did not issue is never
//! touched. Rotation: increase `spec.rotation`.

use k8s_openapi::api::core::v1::Secret;
use kube::api::{Api, PostParams};
use uprox_crds::{MachineToken, TokenSecretState, token};

/// What issuing did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Issue {
    /// Nothing to do.
    Unchanged,
    /// A first token was written.
    Issued {
        /// What may be shown of it.
        display: String,
    },
    /// A new token replaced an older rotation's.
    Rotated {
        /// What may be shown of it.
        display: String,
    },
}

/// Why a token could not be issued.
#[derive(Debug, thiserror::Error)]
pub enum IssueError {
    /// The random source failed.
    #[error("the random source failed: {0}")]
    Random(getrandom::Error),
    /// The API refused.
    #[error("writing Secret {secret}: {source}")]
    Api {
        /// `namespace/name`.
        secret: String,
        /// Why.
        source: kube::Error,
    },
}

/// Issues a token for `mt` when its Secret (`existing`, as the stores see it) calls for one.
pub async fn issue(
    client: &kube::Client,
    mt: &MachineToken,
    existing: Option<&Secret>,
    now: &str,
) -> Result<Issue, IssueError> {
    if mt.spec.revoked {
        return Ok(Issue::Unchanged);
    }
    let state = mt.secret_state(existing);
    if matches!(state, TokenSecretState::Current | TokenSecretState::Foreign) {
        return Ok(Issue::Unchanged);
    }
    let namespace = mt.metadata.namespace.clone().unwrap_or_default();
    let api: Api<Secret> = Api::namespaced(client.clone(), &namespace);
    let mut random = [0u8; 32];
    getrandom::fill(&mut random).map_err(IssueError::Random)?;
    let plaintext = token::format(&random);
    let mut secret = mt.issued_secret(&plaintext, now);
    let err = |source| IssueError::Api { secret: format!("{namespace}/{}", mt.secret_name()), source };
    let display = token::display(&plaintext);
    match (state, existing) {
        (TokenSecretState::Stale, Some(old)) => {
            secret.metadata.resource_version = old.metadata.resource_version.clone();
            api.replace(&mt.secret_name(), &PostParams::default(), &secret).await.map_err(err)?;
            Ok(Issue::Rotated { display })
        }
        _ => match api.create(&PostParams::default(), &secret).await {
            Ok(_) => Ok(Issue::Issued { display }),
            // Written meanwhile (the store lags): the next pass sees it and decides again.
            Err(kube::Error::Api(s)) if s.code == 409 => Ok(Issue::Unchanged),
            Err(e) => Err(err(e)),
        },
    }
}
