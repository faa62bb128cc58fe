//! Token issuance in standalone mode: a MachineToken without a current token gets one —
//! `uprox_live_` and 32 bytes from the operating system's CSPRNG — written as a `v1/Secret`
//! manifest into the state folder (atomically, mode 0600) so restarts keep it, and printed once.
//!
//! A Secret supplied in the config folder under the token's `secretName` takes precedence; one
//! without the `uprox.dev/machine-token` label is never overwritten or adopted.

use std::path::{Path, PathBuf};

use k8s_openapi::api::core::v1::Secret;
use uprox_crds::token;
use uprox_crds::{MachineToken, TokenSecretState};

/// Could not issue a token.
#[derive(Debug, thiserror::Error)]
pub enum IssueError {
    /// The OS random source failed.
    #[error("the operating system's random source failed: {0}")]
    Random(getrandom::Error),
    /// The state folder could not be written.
    #[error("cannot write {path}: {source}")]
    Write {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The manifest could not be rendered.
    #[error("cannot render the token Secret: {0}")]
    Render(#[from] serde_yaml::Error),
}

/// A token just issued.
#[derive(Debug)]
pub struct Issued {
    /// `namespace/name` of the MachineToken.
    pub token: String,
    /// The plaintext, to print once.
    pub plaintext: String,
    /// The Secret holding it.
    pub secret: Secret,
}

/// Issues a token for every MachineToken (not revoked) whose Secret is missing or older than its
/// `spec.rotation`, writing each into `state_dir/tokens/`. `secrets` gains the new Secrets and
/// loses the ones they replace.
pub fn issue_missing(
    tokens: &[MachineToken],
    secrets: &mut Vec<Secret>,
    state_dir: &Path,
    now: &str,
) -> Result<Vec<Issued>, IssueError> {
    let mut issued = Vec::new();
    for mt in tokens.iter().filter(|t| !t.spec.revoked) {
        let namespace = mt.metadata.namespace.clone().unwrap_or_default();
        let secret_name = mt.secret_name();
        let existing = secrets.iter().position(|s| {
            s.metadata.namespace.as_deref() == Some(&namespace) && s.metadata.name.as_deref() == Some(&secret_name)
        });
        match mt.secret_state(existing.map(|i| &secrets[i])) {
            // Current, or a Secret of that name uprox did not issue: leave it (compile reports it).
            TokenSecretState::Current | TokenSecretState::Foreign => continue,
            TokenSecretState::Stale => {
                if let Some(i) = existing {
                    secrets.remove(i);
                }
            }
            TokenSecretState::Missing => {}
        }
        let mut random = [0u8; 32];
        getrandom::fill(&mut random).map_err(IssueError::Random)?;
        let plaintext = token::format(&random);
        let name = mt.metadata.name.clone().unwrap_or_default();
        let secret = mt.issued_secret(&plaintext, now);
        write_manifest(&state_dir.join("tokens").join(format!("{namespace}.{secret_name}.yaml")), &secret)?;
        secrets.push(secret.clone());
        issued.push(Issued { token: format!("{namespace}/{name}"), plaintext, secret });
    }
    Ok(issued)
}

fn write_manifest(path: &Path, secret: &Secret) -> Result<(), IssueError> {
    let mut value = serde_json::to_value(secret).unwrap_or_default();
    if let Some(map) = value.as_object_mut() {
        map.insert("apiVersion".into(), "v1".into());
        map.insert("kind".into(), "Secret".into());
    }
    let yaml = format!(
        "# Issued by uprox-gateway (standalone mode). Keep this file private.\n{}",
        serde_yaml::to_string(&value)?
    );
    super::write_private(path, "yaml.tmp", yaml.as_bytes())
        .map_err(|source| IssueError::Write { path: path.to_path_buf(), source })
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
    use uprox_crds::MachineTokenSpec;
    use uprox_crds::machine_token::issued_rotation;

    fn mt(name: &str, rotation: u32) -> MachineToken {
        let mut t = MachineToken::new(
            name,
            MachineTokenSpec { service: "svc".into(), rotation, ..MachineTokenSpec::default() },
        );
        t.metadata.namespace = Some("default".into());
        t
    }

    #[test]
    fn issues_once_and_persists() {
        let dir = tempfile::tempdir().unwrap();
        let mut secrets = Vec::new();
        let issued = issue_missing(&[mt("a", 0)], &mut secrets, dir.path(), "2026-01-01T00:00:00Z").unwrap();
        assert_eq!(issued.len(), 1);
        assert!(token::is_well_formed(&issued[0].plaintext));
        let file = dir.path().join("tokens/default.a-token.yaml");
        let text = std::fs::read_to_string(&file).unwrap();
        assert!(text.contains(&issued[0].plaintext));
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt as _;
            assert_eq!(std::fs::metadata(&file).unwrap().permissions().mode() & 0o777, 0o600);
        }
        // Reloading the written manifest yields a current Secret: nothing new is issued.
        let mut resources = crate::standalone::manifests::Manifests::default();
        assert!(crate::standalone::manifests::load_dir(dir.path(), &mut resources).is_empty());
        let again = issue_missing(&[mt("a", 0)], &mut resources.resources.secrets, dir.path(), "later").unwrap();
        assert!(again.is_empty());
    }

    #[test]
    fn rotation_reissues_and_revoked_tokens_are_skipped() {
        let dir = tempfile::tempdir().unwrap();
        let mut secrets = Vec::new();
        let first = issue_missing(&[mt("a", 0)], &mut secrets, dir.path(), "t0").unwrap();
        let second = issue_missing(&[mt("a", 1)], &mut secrets, dir.path(), "t1").unwrap();
        assert_eq!(second.len(), 1);
        assert_ne!(first[0].plaintext, second[0].plaintext);
        assert_eq!(secrets.len(), 1);
        assert_eq!(issued_rotation(&secrets[0]), 1);
        let mut revoked = mt("b", 0);
        revoked.spec.revoked = true;
        assert!(issue_missing(&[revoked], &mut Vec::new(), dir.path(), "t").unwrap().is_empty());
    }

    #[test]
    fn foreign_secrets_are_not_overwritten() {
        let dir = tempfile::tempdir().unwrap();
        let foreign = Secret {
            metadata: ObjectMeta {
                name: Some("a-token".into()),
                namespace: Some("default".into()),
                ..ObjectMeta::default()
            },
            ..Secret::default()
        };
        let mut secrets = vec![foreign];
        assert!(issue_missing(&[mt("a", 0)], &mut secrets, dir.path(), "t").unwrap().is_empty());
        assert_eq!(secrets.len(), 1);
    }
}
