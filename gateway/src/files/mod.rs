//! The Files API's state: which Service uploaded each file id (so a Service never reads or
//! deletes another's files through uprox), the `mock` provider's in-memory files, and the
//! upstream clients that stream uploads.
//!
//! **Ownership** is a [`FileOwners`]: reads ([`FileOwners::owner`], [`FileOwners::owned_by`])
//! come from an immutable [`Owners`] map behind an `ArcSwap` — no lock, no IO on the request
//! path — and writes ([`FileOwners::record`], [`FileOwners::forget`]) persist first, then swap
//! in a new map. Writes copy the map (O(files)): uploads and deletes are rare next to reads.
//! Three stores:
//! - [`standalone::JsonFileOwners`]: `STATE/files/owners.json`, one JSON document written
//!   atomically (temporary file, `fsync`, rename) with mode 0600, loaded at start;
//! - [`cluster::ConfigMapOwners`]: one ConfigMap per Service in the gateway's namespace, shared
//!   by every replica through a watch;
//! - [`MemoryOwners`]: not durable; the default of a [`Gateway`](crate::app::Gateway) that was
//!   given no store (library use and tests).
//!
//! The HTTP side is `handlers::files`; the streamed upload body is [`upload`].

pub mod cluster;
pub mod standalone;
pub mod upload;

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::{Arc, OnceLock};

use arc_swap::ArcSwap;
use futures_util::future::BoxFuture;
use serde::{Deserialize, Serialize};
use uprox_crds::common::ObjectId;

use crate::providers::mock::files::MockFiles;

/// A Service, as `namespace/name`.
pub type ServiceId = ObjectId;

/// What is kept about an owned file.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct FileRecord {
    /// When it was uploaded (Unix seconds, as the upstream reported it).
    pub uploaded_at: i64,
    /// Its purpose (`assistants`, `batch`, …).
    #[serde(default)]
    pub purpose: String,
}

/// Why ownership could not be persisted or read.
#[derive(Debug, thiserror::Error)]
pub enum OwnersError {
    /// The state file could not be read or written.
    #[error("the file ownership store could not be written: {0}")]
    Io(String),
    /// The state file does not parse.
    #[error("the file ownership store {path} is unreadable: {why}")]
    Corrupt {
        /// The file.
        path: String,
        /// Why.
        why: String,
    },
    /// The Kubernetes API refused or failed a write.
    #[error("the file ownership ConfigMap could not be written: {0}")]
    Api(String),
}

/// An immutable view of who owns what.
#[derive(Debug, Default, Clone)]
pub struct Owners {
    by_file: HashMap<String, ServiceId>,
    by_service: HashMap<ServiceId, BTreeMap<String, FileRecord>>,
}

impl Owners {
    /// A view of these Services' files. A file id claimed by two Services (which a correct
    /// upstream never produces) belongs to the first one seen.
    pub fn from_services(services: impl IntoIterator<Item = (ServiceId, BTreeMap<String, FileRecord>)>) -> Self {
        let mut owners = Self::default();
        for (service, files) in services {
            for (id, record) in files {
                owners.insert(&service, &id, record);
            }
        }
        owners
    }

    /// The owner of a file.
    pub fn owner(&self, file_id: &str) -> Option<&ServiceId> {
        self.by_file.get(file_id)
    }

    /// The files of a Service.
    pub fn files_of(&self, service: &ServiceId) -> Option<&BTreeMap<String, FileRecord>> {
        self.by_service.get(service)
    }

    /// The ids of a Service's files (none for an unknown Service): what every store's
    /// [`FileOwners::owned_by`] answers from its current view.
    pub fn file_ids_of(&self, service: &ServiceId) -> HashSet<String> {
        self.files_of(service).map(|f| f.keys().cloned().collect()).unwrap_or_default()
    }

    /// Every Service with its files.
    pub fn services(&self) -> impl Iterator<Item = (&ServiceId, &BTreeMap<String, FileRecord>)> {
        self.by_service.iter()
    }

    /// How many files are owned.
    pub fn len(&self) -> usize {
        self.by_file.len()
    }

    /// Whether no file is owned.
    pub fn is_empty(&self) -> bool {
        self.by_file.is_empty()
    }

    /// Records `file_id` as `service`'s (a no-op when another Service holds it).
    pub fn insert(&mut self, service: &ServiceId, file_id: &str, record: FileRecord) {
        match self.by_file.get(file_id) {
            Some(owner) if owner != service => return,
            _ => {}
        }
        self.by_file.insert(file_id.to_owned(), service.clone());
        self.by_service.entry(service.clone()).or_default().insert(file_id.to_owned(), record);
    }

    /// Forgets `file_id` if `service` holds it.
    pub fn remove(&mut self, service: &ServiceId, file_id: &str) {
        if self.by_file.get(file_id) != Some(service) {
            return;
        }
        self.by_file.remove(file_id);
        if let Some(files) = self.by_service.get_mut(service) {
            files.remove(file_id);
            if files.is_empty() {
                self.by_service.remove(service);
            }
        }
    }
}

/// Who uploaded which file. See the module documentation.
pub trait FileOwners: Send + Sync + std::fmt::Debug {
    /// The Service that uploaded `file_id`, if uprox recorded one. Lock-free.
    fn owner(&self, file_id: &str) -> Option<ServiceId>;

    /// The file ids `service` uploaded. Lock-free.
    fn owned_by(&self, service: &ServiceId) -> HashSet<String>;

    /// Durably records that `owner` uploaded `file_id`.
    fn record<'a>(
        &'a self,
        owner: &'a ServiceId,
        file_id: &'a str,
        record: FileRecord,
    ) -> BoxFuture<'a, Result<(), OwnersError>>;

    /// Durably forgets `file_id` (after it was deleted).
    fn forget<'a>(&'a self, owner: &'a ServiceId, file_id: &'a str) -> BoxFuture<'a, Result<(), OwnersError>>;

    /// Whether the store has loaded what it knows (a cluster store before its first list has
    /// not: every file would look foreign).
    fn ready(&self) -> bool {
        true
    }
}

/// A store that keeps ownership in memory only: lost on restart.
#[derive(Debug, Default)]
pub struct MemoryOwners {
    view: ArcSwap<Owners>,
}

impl FileOwners for MemoryOwners {
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
        self.view.rcu(|current| {
            let mut next = Owners::clone(current);
            next.insert(owner, file_id, record.clone());
            next
        });
        Box::pin(std::future::ready(Ok(())))
    }

    fn forget<'a>(&'a self, owner: &'a ServiceId, file_id: &'a str) -> BoxFuture<'a, Result<(), OwnersError>> {
        self.view.rcu(|current| {
            let mut next = Owners::clone(current);
            next.remove(owner, file_id);
            next
        });
        Box::pin(std::future::ready(Ok(())))
    }
}

/// The Files API's share of the gateway's state.
pub struct FilesState {
    owners: OnceLock<Arc<dyn FileOwners>>,
    /// The `mock` provider's files.
    pub mock: MockFiles,
    /// One streaming-upload client per thread (see `Gateway::client`).
    clients: thread_local::ThreadLocal<upload::UploadClient>,
}

impl std::fmt::Debug for FilesState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FilesState").field("owners", &self.owners.get()).finish_non_exhaustive()
    }
}

impl Default for FilesState {
    fn default() -> Self {
        Self::new()
    }
}

impl FilesState {
    /// No store yet, no files.
    pub fn new() -> Self {
        Self { owners: OnceLock::new(), mock: MockFiles::default(), clients: thread_local::ThreadLocal::new() }
    }

    /// Sets the ownership store, once, at start-up (before serving). Refused when one is set
    /// already (or was defaulted by a request).
    pub fn set_owners(&self, owners: Arc<dyn FileOwners>) -> Result<(), Arc<dyn FileOwners>> {
        self.owners.set(owners)
    }

    /// The ownership store: the one set at start-up, else an in-memory one.
    pub fn owners(&self) -> &Arc<dyn FileOwners> {
        self.owners.get_or_init(|| Arc::new(MemoryOwners::default()))
    }

    /// The upload client of the current thread.
    pub fn client(&self, connect_timeout: std::time::Duration) -> &upload::UploadClient {
        self.clients.get_or(|| crate::upstream::client(connect_timeout, std::time::Duration::from_secs(90)))
    }
}

pub(crate) use crate::clock::unix_now;

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn svc(n: &str) -> ServiceId {
        ObjectId::new("team", n)
    }

    fn rec() -> FileRecord {
        FileRecord { uploaded_at: 1, purpose: "batch".into() }
    }

    #[test]
    fn a_file_has_one_owner() {
        let mut o = Owners::default();
        o.insert(&svc("a"), "file-1", rec());
        o.insert(&svc("b"), "file-1", rec());
        assert_eq!(o.owner("file-1"), Some(&svc("a")));
        assert!(o.files_of(&svc("b")).is_none());
        o.remove(&svc("b"), "file-1");
        assert_eq!(o.len(), 1, "only the owner forgets");
        o.remove(&svc("a"), "file-1");
        assert!(o.is_empty() && o.files_of(&svc("a")).is_none());
    }

    #[tokio::test]
    async fn memory_store_records_and_forgets() {
        let m = MemoryOwners::default();
        m.record(&svc("a"), "file-1", rec()).await.unwrap();
        assert_eq!(m.owner("file-1"), Some(svc("a")));
        assert_eq!(m.owned_by(&svc("a")), HashSet::from(["file-1".to_owned()]));
        m.forget(&svc("a"), "file-1").await.unwrap();
        assert_eq!(m.owner("file-1"), None);
    }
}
