//! Start-up checks: the API server answers, and the uprox CRDs are installed. A missing CRD is
//! reported by name with the command that installs it, instead of a watch failing in a loop.

use kube::Client;
use kube::api::{Api, ListParams};
use uprox_crds::{Budget, MachineToken, Policy, Provider, Service};

/// Why the operator cannot start.
#[derive(Debug, thiserror::Error)]
pub enum PreflightError {
    /// One or more CRDs are missing.
    #[error(
        "the uprox CRDs are not installed in this cluster (missing: {0}); install them with \
         `kubectl apply -f crds/` or `uprox-operator crds | kubectl apply -f -` (the Helm chart installs them too)"
    )]
    CrdsMissing(String),
    /// The API refused or could not be reached.
    #[error("cannot list {kind}: {source}")]
    Api {
        /// The kind being listed.
        kind: &'static str,
        /// Why.
        source: kube::Error,
    },
}

/// Lists one object of every kind, across the cluster or in `namespace` (when the operator is
/// limited to some namespaces it may not list cluster-wide).
pub async fn check(client: &Client, namespace: Option<&str>) -> Result<(), PreflightError> {
    let mut missing = Vec::new();
    probe::<Provider>(client, namespace, "providers.uprox.dev", &mut missing).await?;
    probe::<Service>(client, namespace, "services.uprox.dev", &mut missing).await?;
    probe::<MachineToken>(client, namespace, "machinetokens.uprox.dev", &mut missing).await?;
    probe::<Policy>(client, namespace, "policies.uprox.dev", &mut missing).await?;
    probe::<Budget>(client, namespace, "budgets.uprox.dev", &mut missing).await?;
    if missing.is_empty() { Ok(()) } else { Err(PreflightError::CrdsMissing(missing.join(", "))) }
}

async fn probe<K>(
    client: &Client,
    namespace: Option<&str>,
    crd: &'static str,
    missing: &mut Vec<&'static str>,
) -> Result<(), PreflightError>
where
    K: kube::Resource<DynamicType = (), Scope = k8s_openapi::NamespaceResourceScope>
        + Clone
        + serde::de::DeserializeOwned
        + std::fmt::Debug,
{
    let api: Api<K> = match namespace {
        Some(ns) => Api::namespaced(client.clone(), ns),
        None => Api::all(client.clone()),
    };
    match api.list_metadata(&ListParams::default().limit(1)).await {
        Ok(_) => Ok(()),
        Err(kube::Error::Api(s)) if s.code == 404 => {
            missing.push(crd);
            Ok(())
        }
        Err(source) => Err(PreflightError::Api { kind: crd, source }),
    }
}
