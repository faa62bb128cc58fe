//! Standalone mode's ownership store: `STATE/files/owners.json`, one JSON document
//! `{"version": 1, "services": {"ns/name": {"file-…": {"uploaded_at", "purpose"}}}}`.
//!
//! Loaded once at start (a file that does not parse refuses the start rather than silently
//! orphaning every file). Each write serializes the whole map to a temporary file with mode
//! 0600, `fsync`s it and renames it over the old one, so a crash leaves the old or the new
//! document, never half of one; writers queue on an async mutex, readers never wait (they read
//! the `ArcSwap`ped view). The state folder's manifest scan reads only `*.yaml`, so this file is
//! not mistaken for config.

use std::collections::{BTreeMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use arc_swap::ArcSwap;
use futures_util::future::BoxFuture;
use serde::{Deserialize, Serialize};
use uprox_crds::common::ObjectId;

use super::{FileOwners, FileRecord, Owners, OwnersError, ServiceId};

/// The file under the state folder's `files/`.
pub const FILE_NAME: &str = "owners.json";
const VERSION: u32 = 1;

#[derive(Serialize, Deserialize)]
struct Document {
    version: u32,
    /// `namespace/name` → file id → record.
    services: BTreeMap<String, BTreeMap<String, FileRecord>>,
}

/// See the module documentation.
#[derive(Debug)]
pub struct JsonFileOwners {
    path: PathBuf,
    view: ArcSwap<Owners>,
    writer: tokio::sync::Mutex<()>,
}

impl JsonFileOwners {
    /// Loads `dir/owners.json` (absent: nothing owned yet). `dir` is created on first write.
    pub fn load(dir: &Path) -> Result<Self, OwnersError> {
        let path = dir.join(FILE_NAME);
        let owners = match std::fs::read(&path) {
            Ok(bytes) => parse(&bytes).map_err(|why| OwnersError::Corrupt { path: path.display().to_string(), why })?,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Owners::default(),
            Err(e) => return Err(OwnersError::Io(format!("{}: {e}", path.display()))),
        };
        Ok(Self { path, view: ArcSwap::from_pointee(owners), writer: tokio::sync::Mutex::new(()) })
    }

    /// Where the document lives.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Persists `change` applied to the current view, then installs it.
    async fn update(&self, change: impl FnOnce(&mut Owners)) -> Result<(), OwnersError> {
        let _writing = self.writer.lock().await;
        let mut next = Owners::clone(&self.view.load());
        change(&mut next);
        let next = Arc::new(next);
        let path = self.path.clone();
        let to_write = next.clone();
        tokio::task::spawn_blocking(move || write(&path, &to_write))
            .await
            .map_err(|e| OwnersError::Io(e.to_string()))??;
        self.view.store(next);
        Ok(())
    }
}

fn parse(bytes: &[u8]) -> Result<Owners, String> {
    let doc: Document = serde_json::from_slice(bytes).map_err(|e| e.to_string())?;
    if doc.version != VERSION {
        return Err(format!("version {} is not supported (this gateway reads version {VERSION})", doc.version));
    }
    let mut services = Vec::with_capacity(doc.services.len());
    for (id, files) in doc.services {
        let (namespace, name) = id.split_once('/').ok_or_else(|| format!("{id:?} is not namespace/name"))?;
        services.push((ObjectId::new(namespace, name), files));
    }
    Ok(Owners::from_services(services))
}

fn write(path: &Path, owners: &Owners) -> Result<(), OwnersError> {
    let doc = Document {
        version: VERSION,
        services: owners.services().map(|(s, files)| (s.to_string(), files.clone())).collect(),
    };
    let bytes = serde_json::to_vec_pretty(&doc).map_err(|e| OwnersError::Io(e.to_string()))?;
    crate::standalone::write_private(path, "json.tmp", &bytes)
        .map_err(|e| OwnersError::Io(format!("{}: {e}", path.display())))
}

impl FileOwners for JsonFileOwners {
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
        Box::pin(self.update(move |o| o.insert(owner, file_id, record)))
    }

    fn forget<'a>(&'a self, owner: &'a ServiceId, file_id: &'a str) -> BoxFuture<'a, Result<(), OwnersError>> {
        Box::pin(self.update(move |o| o.remove(owner, file_id)))
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[tokio::test]
    async fn survives_a_reload_and_is_private() {
        let dir = tempfile::tempdir().unwrap();
        let files = dir.path().join("files");
        let a = ObjectId::new("team", "a");
        let store = JsonFileOwners::load(&files).unwrap();
        store.record(&a, "file-1", FileRecord { uploaded_at: 5, purpose: "batch".into() }).await.unwrap();
        store.record(&a, "file-2", FileRecord { uploaded_at: 6, purpose: "batch".into() }).await.unwrap();
        store.forget(&a, "file-1").await.unwrap();

        let again = JsonFileOwners::load(&files).unwrap();
        assert_eq!(again.owner("file-2"), Some(a.clone()));
        assert_eq!(again.owner("file-1"), None);
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt as _;
            let mode = std::fs::metadata(again.path()).unwrap().permissions().mode();
            assert_eq!(mode & 0o777, 0o600);
        }
    }

    #[test]
    fn a_corrupt_file_refuses_the_load() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join(FILE_NAME), b"{not json").unwrap();
        assert!(matches!(JsonFileOwners::load(dir.path()), Err(OwnersError::Corrupt { .. })));
    }
}
