//! Where the usage ledger is kept: a file in the state directory (standalone mode) or the
//! ConfigMap `uprox-usage` in the gateway namespace (cluster mode). Both offer the same two
//! operations — read, and apply one delta atomically with respect to every other writer — so
//! several gateway processes sharing either enforce one budget together.
//!
//! - **File**: an exclusive lock on `usage.lock` around read → apply → write a temporary file →
//!   `fsync` → rename over `usage.json` (mode 0600). Readers take the lock shared, so they never
//!   see a half-written file (the rename makes that impossible anyway).
//! - **ConfigMap**: read, apply, then `replace` with the `resourceVersion` that was read (or
//!   `create` when there is none); a conflict means someone wrote in between, so read again.

use std::io::Write as _;
use std::path::{Path, PathBuf};

use k8s_openapi::api::core::v1::ConfigMap;
use kube::Api;
use kube::api::PostParams;
use uprox_crds::usage::{Delta, LEDGER_NAME, Ledger, LedgerError};

/// The ledger file in a state directory.
pub const LEDGER_FILE: &str = "usage.json";
/// The lock file beside it.
const LOCK_FILE: &str = "usage.lock";
/// Which delta of a writer, when it was spent and when it is written.
#[derive(Debug, Clone, Copy)]
pub struct Stamp {
    /// The writer's sequence number of the delta.
    pub sequence: u64,
    /// When the spend was made, Unix seconds: the windows it counts in.
    pub spent_at: i64,
    /// Now, Unix seconds.
    pub now: i64,
}

/// Conflicting writes retried before giving up until the next flush.
const MAX_CONFLICTS: u32 = 16;

/// Why the ledger could not be read or written.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The stored ledger is not readable; it is left as it is for a person to look at.
    #[error(transparent)]
    Ledger(#[from] LedgerError),
    /// File IO.
    #[error("the usage ledger file {path}: {source}")]
    Io {
        /// Which file.
        path: String,
        /// The error.
        source: std::io::Error,
    },
    /// The Kubernetes API.
    #[error("the usage ledger ConfigMap: {0}")]
    Api(#[from] kube::Error),
    /// Other writers kept winning.
    #[error("the usage ledger changed under {MAX_CONFLICTS} writes in a row")]
    Contended,
    /// The blocking task failed.
    #[error("the usage ledger task failed: {0}")]
    Task(String),
}

/// A ledger store.
#[derive(Clone)]
pub enum Store {
    /// A file in a state directory.
    File(FileStore),
    /// The ConfigMap in a namespace.
    ConfigMap(Box<ConfigMapStore>),
}

/// The ledger ConfigMap of one namespace.
#[derive(Clone)]
pub struct ConfigMapStore {
    api: Api<ConfigMap>,
    namespace: String,
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Store::File(file) => write!(f, "file {}", file.path.display()),
            Store::ConfigMap(_) => write!(f, "ConfigMap {LEDGER_NAME}"),
        }
    }
}

impl Store {
    /// The ledger ConfigMap in `namespace`.
    pub fn config_map(client: kube::Client, namespace: &str) -> Self {
        Store::ConfigMap(Box::new(ConfigMapStore {
            api: Api::namespaced(client, namespace),
            namespace: namespace.to_owned(),
        }))
    }

    /// The current ledger; `None` when none was written yet.
    pub async fn read(&self) -> Result<Option<Ledger>, StoreError> {
        match self {
            Store::File(file) => {
                let file = file.clone();
                blocking(move || file.read()).await
            }
            Store::ConfigMap(store) => match store.api.get_opt(LEDGER_NAME).await? {
                Some(config_map) => Ok(Some(Ledger::from_config_map(&config_map)?)),
                None => Ok(None),
            },
        }
    }

    /// Applies delta `sequence` of `writer`, spent at `spent_at` and written at `now` (Unix
    /// seconds; see [`Ledger::apply_at`]), and returns the ledger as written (or as found, when
    /// that delta was applied already).
    pub async fn apply(
        &self,
        writer: &str,
        sequence: u64,
        delta: &Delta,
        spent_at: i64,
        now: i64,
    ) -> Result<Ledger, StoreError> {
        let stamp = Stamp { sequence, spent_at, now };
        match self {
            Store::File(file) => {
                let (file, writer, delta) = (file.clone(), writer.to_owned(), delta.clone());
                blocking(move || file.apply(&writer, stamp, &delta)).await
            }
            Store::ConfigMap(store) => apply_config_map(&store.api, &store.namespace, writer, stamp, delta).await,
        }
    }
}

async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, StoreError> + Send + 'static,
) -> Result<T, StoreError> {
    tokio::task::spawn_blocking(f).await.map_err(|e| StoreError::Task(e.to_string()))?
}

async fn apply_config_map(
    api: &Api<ConfigMap>,
    namespace: &str,
    writer: &str,
    stamp: Stamp,
    delta: &Delta,
) -> Result<Ledger, StoreError> {
    let params = PostParams { field_manager: Some("uprox-gateway".to_owned()), ..PostParams::default() };
    for attempt in 0..MAX_CONFLICTS {
        if attempt > 0 {
            // Writers that collided spread out: a random pause growing with the attempts.
            let mut random = [0u8; 1];
            let _ = getrandom::fill(&mut random);
            let pause = u64::from(attempt) * (5 + u64::from(random[0] % 20));
            tokio::time::sleep(std::time::Duration::from_millis(pause)).await;
        }
        let current = api.get_opt(LEDGER_NAME).await?;
        let mut ledger = match &current {
            Some(config_map) => Ledger::from_config_map(config_map)?,
            None => Ledger::new(),
        };
        if !ledger.apply_at(writer, stamp.sequence, delta, stamp.spent_at, stamp.now) {
            return Ok(ledger);
        }
        let mut object = ledger.to_config_map(namespace);
        let written = match current {
            Some(found) => {
                object.metadata.resource_version = found.metadata.resource_version;
                api.replace(LEDGER_NAME, &params, &object).await
            }
            None => api.create(&params, &object).await,
        };
        match written {
            Ok(_) => return Ok(ledger),
            Err(kube::Error::Api(status)) if status.code == 409 => continue,
            Err(e) => return Err(e.into()),
        }
    }
    Err(StoreError::Contended)
}

/// The ledger file of a state directory.
#[derive(Debug, Clone)]
pub struct FileStore {
    path: PathBuf,
    lock: PathBuf,
}

impl FileStore {
    /// The ledger of state directory `dir` (created when missing).
    pub fn new(dir: &Path) -> Result<Self, StoreError> {
        std::fs::create_dir_all(dir).map_err(|source| io(dir, source))?;
        Ok(Self { path: dir.join(LEDGER_FILE), lock: dir.join(LOCK_FILE) })
    }

    fn locked(&self, exclusive: bool) -> Result<std::fs::File, StoreError> {
        let lock = std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&self.lock)
            .map_err(|source| io(&self.lock, source))?;
        let locked = if exclusive { lock.lock() } else { lock.lock_shared() };
        locked.map_err(|source| io(&self.lock, source))?;
        Ok(lock)
    }

    fn read_unlocked(&self) -> Result<Option<Ledger>, StoreError> {
        match std::fs::read_to_string(&self.path) {
            Ok(text) => Ok(Some(Ledger::parse(&text)?)),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(source) => Err(io(&self.path, source)),
        }
    }

    /// The current ledger.
    pub fn read(&self) -> Result<Option<Ledger>, StoreError> {
        let _lock = self.locked(false)?;
        self.read_unlocked()
    }

    /// Applies one delta under the exclusive lock.
    pub fn apply(&self, writer: &str, stamp: Stamp, delta: &Delta) -> Result<Ledger, StoreError> {
        let _lock = self.locked(true)?;
        let mut ledger = self.read_unlocked()?.unwrap_or_else(Ledger::new);
        if !ledger.apply_at(writer, stamp.sequence, delta, stamp.spent_at, stamp.now) {
            return Ok(ledger);
        }
        let tmp = self.path.with_extension(format!("json.tmp-{}", std::process::id()));
        let write = || -> std::io::Result<()> {
            let mut options = std::fs::OpenOptions::new();
            options.create(true).truncate(true).write(true);
            #[cfg(unix)]
            std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
            let mut file = options.open(&tmp)?;
            file.write_all(ledger.to_json().as_bytes())?;
            file.sync_all()?;
            std::fs::rename(&tmp, &self.path)
        };
        write().map_err(|source| io(&self.path, source))?;
        Ok(ledger)
    }
}

fn io(path: &Path, source: std::io::Error) -> StoreError {
    StoreError::Io { path: path.display().to_string(), source }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use std::collections::BTreeMap;

    use uprox_crds::usage::{ServiceDelta, Windows};

    use super::*;

    const NOW: i64 = 1_795_802_400;

    fn delta(pico: u128) -> Delta {
        Delta {
            services: BTreeMap::from([(
                "team/svc".to_owned(),
                ServiceDelta { pico_usd: pico, requests: 1, unpriced: BTreeMap::new() },
            )]),
        }
    }

    #[test]
    fn two_writers_of_one_file_add_up_exactly_once() {
        let dir = tempfile::tempdir().unwrap();
        let a = FileStore::new(dir.path()).unwrap();
        let b = FileStore::new(dir.path()).unwrap();
        assert!(a.read().unwrap().is_none());
        let threads: Vec<_> = [("a", a.clone()), ("b", b.clone())]
            .into_iter()
            .map(|(name, store)| {
                std::thread::spawn(move || {
                    let stamp = |sequence| Stamp { sequence, spent_at: NOW, now: NOW };
                    for seq in 1..=50 {
                        store.apply(name, stamp(seq), &delta(1_000_000)).unwrap();
                    }
                    // A retry of a delta already applied changes nothing.
                    store.apply(name, stamp(50), &delta(1_000_000)).unwrap();
                })
            })
            .collect();
        for t in threads {
            t.join().unwrap();
        }
        let ledger = b.read().unwrap().unwrap();
        assert_eq!(ledger.spent("team/svc", &Windows::at(NOW)), (100_000_000, 100_000_000));
        assert_eq!(ledger.revision, 100);
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt as _;
            let mode = std::fs::metadata(dir.path().join(LEDGER_FILE)).unwrap().permissions().mode();
            assert_eq!(mode & 0o777, 0o600);
        }
    }

    #[test]
    fn a_damaged_file_is_an_error_and_left_alone() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join(LEDGER_FILE), "{not json").unwrap();
        let store = FileStore::new(dir.path()).unwrap();
        let stamp = Stamp { sequence: 1, spent_at: NOW, now: NOW };
        assert!(matches!(store.apply("a", stamp, &delta(1)), Err(StoreError::Ledger(_))));
        assert_eq!(std::fs::read_to_string(dir.path().join(LEDGER_FILE)).unwrap(), "{not json");
    }
}
