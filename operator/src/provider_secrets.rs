//! The values of the Secrets that Providers name, read on demand and cached by
//! `resourceVersion`: a Secret is fetched again only when its metadata (watched for every
//! Secret) says it changed, and dropped when it is gone. A rotated key or a deleted Secret thus
//! reaches the compiled config without anyone touching the Provider.

use std::collections::{BTreeSet, HashMap};

use k8s_openapi::api::core::v1::Secret;
use kube::Api;
use kube::api::PartialObjectMeta;
use uprox_crds::Provider;
use uprox_crds::common::ObjectId;

use crate::stores::Watched;

/// Cached provider-key Secrets.
#[derive(Debug, Default)]
pub struct ProviderSecrets {
    cache: HashMap<ObjectId, Secret>,
}

/// The Secrets the Providers name, by id.
pub fn wanted(providers: &[Provider]) -> BTreeSet<ObjectId> {
    providers
        .iter()
        .flat_map(|p| {
            let namespace = p.metadata.namespace.clone().unwrap_or_default();
            p.spec.keys.iter().map(move |k| ObjectId::new(namespace.clone(), k.secret_ref.name.clone()))
        })
        .collect()
}

impl ProviderSecrets {
    /// The current value of every wanted Secret that exists. Reads through `client` only what
    /// is new or changed; a failed read keeps the cached value and returns `false` so the caller
    /// retries soon.
    pub async fn refresh(
        &mut self,
        client: &kube::Client,
        wanted: &BTreeSet<ObjectId>,
        meta: &Watched<PartialObjectMeta<Secret>>,
    ) -> (Vec<Secret>, bool) {
        self.cache.retain(|id, _| wanted.contains(id));
        let mut complete = true;
        for id in wanted {
            let Some(current) = meta.get(&id.namespace, &id.name) else {
                self.cache.remove(id);
                continue;
            };
            let cached_version = self.cache.get(id).and_then(|s| s.metadata.resource_version.as_deref());
            if cached_version.is_some() && cached_version == current.metadata.resource_version.as_deref() {
                continue;
            }
            let api: Api<Secret> = Api::namespaced(client.clone(), &id.namespace);
            match api.get_opt(&id.name).await {
                Ok(Some(secret)) => {
                    self.cache.insert(id.clone(), secret);
                }
                Ok(None) => {
                    self.cache.remove(id);
                }
                Err(e) => {
                    tracing::warn!(secret = %id, error = %e, "cannot read a provider-key Secret; keeping its last value");
                    complete = false;
                }
            }
        }
        (self.cache.values().cloned().collect(), complete)
    }
}
