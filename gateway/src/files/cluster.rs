//! Cluster mode's ownership store: one ConfigMap per Service in the gateway's namespace,
//! shared by every replica.
//!
//! **Layout.** ConfigMap `uprox-files-<h>`, where `<h>` is the first 16 hex digits of the
//! SHA-256 of `namespace/name`; labelled [`FILES_LABEL`]`=<h>` and annotated
//! [`SERVICE_ANNOTATION`]`=namespace/name` (the Service, since a hash cannot be read back). Each
//! data key is a file id; its value the small JSON `{"uploaded_at", "purpose"}`.
//!
//! **Writes.** `record` sends a JSON merge patch adding the key (labels and annotation
//! included); when the ConfigMap does not exist yet it creates it (and patches again if another
//! replica created it first). `forget` merge-patches the key to `null`. Patches touch only
//! their own key, so concurrent writers (replicas, uploads) never overwrite each other.
//!
//! **Reads.** A watch of the labelled ConfigMaps (kube's watcher, re-listing after a lost
//! watch) keeps a map per ConfigMap; every change rebuilds an immutable [`Owners`] swapped into
//! an `ArcSwap`, which requests read without locking. A replica sees its own writes at once
//! (the object the API server returns is applied like a watch event); others' within the watch
//! latency. Events older than what is applied (by `resourceVersion`) are skipped. Until the
//! first list completes the store is not [`ready`](FileOwners::ready).
//!
//! **Bound.** A ConfigMap holds at most 1 MiB: with ~90 bytes per file (id and value), about
//! ten thousand files per Service. Beyond it the API server refuses the patch, the upload's
//! ownership cannot be recorded, and the gateway deletes the just-uploaded file upstream and
//! answers 503 — delete files (or raise the bound by sharding, not done) to upload more.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::pin::pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use arc_swap::ArcSwap;
use futures_util::StreamExt as _;
use futures_util::future::BoxFuture;
use k8s_openapi::api::core::v1::ConfigMap;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::api::{Patch, PatchParams, PostParams};
use kube::runtime::watcher::{self, Event};
use kube::runtime::{WatchStreamExt as _, watcher as watch_objects};
use kube::{Api, Client, ResourceExt as _};
use sha2::{Digest as _, Sha256};
use uprox_crds::common::ObjectId;

use super::{FileOwners, FileRecord, Owners, OwnersError, ServiceId};

/// The label on every ownership ConfigMap; its value is the Service hash.
pub const FILES_LABEL: &str = "uprox.dev/files";
/// The annotation naming the Service (`namespace/name`).
pub const SERVICE_ANNOTATION: &str = "uprox.dev/files-service";
/// Name prefix of the ownership ConfigMaps.
pub const NAME_PREFIX: &str = "uprox-files-";

/// The hash naming a Service's ConfigMap.
pub fn service_hash(service: &ServiceId) -> String {
    let digest = Sha256::digest(service.to_string().as_bytes());
    hex::encode(&digest[..8])
}

/// The ConfigMap of a Service.
pub fn config_map_name(service: &ServiceId) -> String {
    format!("{NAME_PREFIX}{}", service_hash(service))
}

/// What is known of one ConfigMap.
#[derive(Debug)]
struct Held {
    service: ServiceId,
    resource_version: Option<u64>,
    files: BTreeMap<String, FileRecord>,
}

#[derive(Debug, Default)]
struct State {
    /// By ConfigMap name.
    maps: HashMap<String, Held>,
    /// An initial list in progress.
    listing: Option<HashMap<String, Held>>,
}

/// See the module documentation.
#[derive(Debug)]
pub struct ConfigMapOwners {
    api: Api<ConfigMap>,
    namespace: String,
    view: ArcSwap<Owners>,
    /// Held only to apply one change and rebuild the view; never across IO nor by readers.
    state: Mutex<State>,
    /// Whether the first list completed.
    listed: AtomicBool,
}

impl ConfigMapOwners {
    /// A store in `namespace`. Nothing is known until [`run`](Self::run) has listed.
    pub fn new(client: Client, namespace: &str) -> Arc<Self> {
        Arc::new(Self {
            api: Api::namespaced(client, namespace),
            namespace: namespace.to_owned(),
            view: ArcSwap::from_pointee(Owners::default()),
            state: Mutex::new(State::default()),
            listed: AtomicBool::new(false),
        })
    }

    /// Watches the ownership ConfigMaps until dropped.
    pub async fn run(self: Arc<Self>) {
        let config = watcher::Config::default().labels(FILES_LABEL);
        let mut events = pin!(watch_objects(self.api.clone(), config).default_backoff());
        while let Some(event) = events.next().await {
            match event {
                Ok(event) => self.apply(event),
                Err(e) => {
                    tracing::warn!(namespace = %self.namespace, "watching the file ownership ConfigMaps failed (retrying): {e}")
                }
            }
        }
    }

    fn apply(&self, event: Event<ConfigMap>) {
        let Ok(mut state) = self.state.lock() else { return };
        match event {
            Event::Init => state.listing = Some(HashMap::new()),
            Event::InitApply(cm) => {
                if let Some((name, held)) = read(&cm) {
                    state.listing.get_or_insert_default().insert(name, held);
                }
            }
            Event::InitDone => {
                state.maps = state.listing.take().unwrap_or_default();
                self.listed.store(true, Ordering::Release);
            }
            Event::Apply(cm) => upsert(&mut state.maps, &cm),
            Event::Delete(cm) => {
                state.maps.remove(&cm.name_any());
            }
        }
        self.rebuild(&state);
    }

    /// Applies an object the API server returned to this replica's own write.
    fn observe(&self, cm: &ConfigMap) {
        let Ok(mut state) = self.state.lock() else { return };
        upsert(&mut state.maps, cm);
        self.rebuild(&state);
    }

    fn rebuild(&self, state: &State) {
        let owners = Owners::from_services(state.maps.values().map(|h| (h.service.clone(), h.files.clone())));
        self.view.store(Arc::new(owners));
    }

    async fn patch(&self, name: &str, patch: &serde_json::Value) -> Result<ConfigMap, kube::Error> {
        self.api.patch(name, &PatchParams::default(), &Patch::Merge(patch)).await
    }

    async fn write_record(&self, owner: &ServiceId, file_id: &str, record: FileRecord) -> Result<(), OwnersError> {
        let name = config_map_name(owner);
        let hash = service_hash(owner);
        let value = serde_json::to_string(&record).map_err(|e| OwnersError::Api(e.to_string()))?;
        let patch = serde_json::json!({
            "metadata": {
                "labels": {FILES_LABEL: hash},
                "annotations": {SERVICE_ANNOTATION: owner.to_string()},
            },
            "data": {file_id: value},
        });
        let written = match self.patch(&name, &patch).await {
            Err(kube::Error::Api(status)) if status.code == 404 => {
                let cm = ConfigMap {
                    metadata: ObjectMeta {
                        name: Some(name.clone()),
                        namespace: Some(self.namespace.clone()),
                        labels: Some(BTreeMap::from([(FILES_LABEL.to_owned(), hash)])),
                        annotations: Some(BTreeMap::from([(SERVICE_ANNOTATION.to_owned(), owner.to_string())])),
                        ..ObjectMeta::default()
                    },
                    data: Some(BTreeMap::from([(file_id.to_owned(), value)])),
                    ..ConfigMap::default()
                };
                match self.api.create(&PostParams::default(), &cm).await {
                    Err(kube::Error::Api(status)) if status.code == 409 => self.patch(&name, &patch).await,
                    other => other,
                }
            }
            other => other,
        };
        let cm = written.map_err(|e| api_error(&name, &e))?;
        self.observe(&cm);
        Ok(())
    }

    async fn write_forget(&self, owner: &ServiceId, file_id: &str) -> Result<(), OwnersError> {
        let name = config_map_name(owner);
        let patch = serde_json::json!({"data": {file_id: null}});
        match self.patch(&name, &patch).await {
            Ok(cm) => {
                self.observe(&cm);
                Ok(())
            }
            Err(kube::Error::Api(status)) if status.code == 404 => Ok(()),
            Err(e) => Err(api_error(&name, &e)),
        }
    }
}

fn api_error(name: &str, error: &kube::Error) -> OwnersError {
    let hint = match error {
        kube::Error::Api(s) if s.code == 401 || s.code == 403 => {
            " (the gateway's ServiceAccount needs get, create and patch on configmaps in its namespace)"
        }
        kube::Error::Api(s) if s.code == 413 || s.code == 422 => {
            " (the Service's ConfigMap is full: about ten thousand files; delete some)"
        }
        _ => "",
    };
    OwnersError::Api(format!("ConfigMap {name}: {error}{hint}"))
}

/// Replaces the entry of `cm` unless it is older than what is held.
fn upsert(maps: &mut HashMap<String, Held>, cm: &ConfigMap) {
    let Some((name, held)) = read(cm) else { return };
    if let (Some(current), Some(new)) = (maps.get(&name).and_then(|h| h.resource_version), held.resource_version)
        && new < current
    {
        return;
    }
    maps.insert(name, held);
}

/// The Service and files of an ownership ConfigMap; `None` (with a warning) when it names no
/// Service.
fn read(cm: &ConfigMap) -> Option<(String, Held)> {
    let name = cm.name_any();
    let service = cm.annotations().get(SERVICE_ANNOTATION).and_then(|s| s.split_once('/'));
    let Some((namespace, service_name)) = service else {
        tracing::warn!(configmap = %name, "file ownership ConfigMap without a valid {SERVICE_ANNOTATION} annotation; ignored");
        return None;
    };
    let service = ObjectId::new(namespace, service_name);
    let files = cm
        .data
        .iter()
        .flatten()
        .filter_map(|(id, value)| match serde_json::from_str::<FileRecord>(value) {
            Ok(record) => Some((id.clone(), record)),
            Err(_) => {
                tracing::warn!(configmap = %name, file = %id, "unreadable file ownership entry; ignored");
                None
            }
        })
        .collect();
    let resource_version = cm.resource_version().and_then(|v| v.parse().ok());
    Some((name, Held { service, resource_version, files }))
}

impl FileOwners for ConfigMapOwners {
    fn owner(&self, file_id: &str) -> Option<ServiceId> {
        self.view.load().owner(file_id).cloned()
    }

    fn owned_by(&self, service: &ServiceId) -> HashSet<String> {
        self.view.load().file_ids_of(service)
    }

    fn record<'a>(
        &'a self,
        owner: &'a ServiceId,
        file_id: &'a str,
        record: FileRecord,
    ) -> BoxFuture<'a, Result<(), OwnersError>> {
        Box::pin(self.write_record(owner, file_id, record))
    }

    fn forget<'a>(&'a self, owner: &'a ServiceId, file_id: &'a str) -> BoxFuture<'a, Result<(), OwnersError>> {
        Box::pin(self.write_forget(owner, file_id))
    }

    fn ready(&self) -> bool {
        self.listed.load(Ordering::Acquire)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_stable_and_valid() {
        let name = config_map_name(&ObjectId::new("team", "app"));
        assert!(name.starts_with(NAME_PREFIX));
        assert_eq!(name.len(), NAME_PREFIX.len() + 16);
        assert_eq!(name, config_map_name(&ObjectId::new("team", "app")));
        assert_ne!(name, config_map_name(&ObjectId::new("team", "app2")));
    }
}
