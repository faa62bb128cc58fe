//! The pure half of cluster mode: from the compiled objects the watch has seen, a [`Snapshot`]
//! ready to install, or the reason there is none yet. No client, no clock, no logging.
//!
//! [`Objects`] holds the labelled ConfigMaps and Secrets by name. [`assemble`] reads the
//! manifest and its parts, the master key and the sealed keys through
//! [`uprox_crds::cluster`], checks that the keys cover every key id the config names, and builds
//! the snapshot. [`Revision`] names what was assembled, so the watch can skip events that change
//! nothing it serves.

use std::collections::BTreeMap;
use std::fmt;

use k8s_openapi::api::core::v1::{ConfigMap, Secret};
use uprox_crds::bundle::BundleError;
use uprox_crds::cluster::{
    self, CONFIG_DIGEST_ANNOTATION, CONFIG_NAME, KEYS_SECRET, MANIFEST_KEY, MASTER_KEY_SECRET, ReadError,
};
use uprox_crds::config::GatewayConfig;

use crate::snapshot::{Snapshot, SnapshotError};

/// The compiled objects of one namespace, by name. Its `Debug` lists names only: Secrets hold
/// the master key.
#[derive(Clone, Default)]
pub struct Objects {
    config_maps: BTreeMap<String, ConfigMap>,
    secrets: BTreeMap<String, Secret>,
}

impl Objects {
    /// Adds or replaces a ConfigMap. One without a name is ignored.
    pub fn put_config_map(&mut self, config_map: ConfigMap) {
        if let Some(name) = config_map.metadata.name.clone() {
            self.config_maps.insert(name, config_map);
        }
    }

    /// Forgets a ConfigMap.
    pub fn remove_config_map(&mut self, name: &str) {
        self.config_maps.remove(name);
    }

    /// Replaces every ConfigMap (after a full list).
    pub fn set_config_maps(&mut self, config_maps: BTreeMap<String, ConfigMap>) {
        self.config_maps = config_maps;
    }

    /// Adds or replaces a Secret. One without a name is ignored.
    pub fn put_secret(&mut self, secret: Secret) {
        if let Some(name) = secret.metadata.name.clone() {
            self.secrets.insert(name, secret);
        }
    }

    /// Forgets a Secret.
    pub fn remove_secret(&mut self, name: &str) {
        self.secrets.remove(name);
    }

    /// Replaces every Secret (after a full list).
    pub fn set_secrets(&mut self, secrets: BTreeMap<String, Secret>) {
        self.secrets = secrets;
    }

    /// What [`assemble`] would build from, or `None` while the manifest is absent.
    pub fn revision(&self) -> Option<Revision> {
        let manifest = self.config_maps.get(CONFIG_NAME)?;
        let annotated = manifest.metadata.annotations.as_ref().and_then(|a| a.get(CONFIG_DIGEST_ANNOTATION)).cloned();
        // Without the annotation the manifest itself names the config: it lists every part's
        // SHA-256.
        let config = annotated.unwrap_or_else(|| {
            let text = manifest.data.as_ref().and_then(|d| d.get(MANIFEST_KEY)).map_or("", String::as_str);
            format!("manifest-{}", sha256_hex(text.as_bytes()))
        });
        let version = |name: &str| self.secrets.get(name).and_then(|s| s.metadata.resource_version.clone());
        Some(Revision { config, keys: version(KEYS_SECRET), master_key: version(MASTER_KEY_SECRET) })
    }
}

impl fmt::Debug for Objects {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Objects")
            .field("config_maps", &self.config_maps.keys().collect::<Vec<_>>())
            .field("secrets", &self.secrets.keys().collect::<Vec<_>>())
            .finish()
    }
}

/// Which compiled objects a snapshot was built from: the config's SHA-256 (the manifest's
/// annotation) and the `resourceVersion`s of the two Secrets.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Revision {
    /// The config's SHA-256 from the manifest's annotation (or, without one, `manifest-` and
    /// the manifest's own SHA-256).
    pub config: String,
    /// The sealed-keys Secret's `resourceVersion`.
    pub keys: Option<String>,
    /// The master-key Secret's `resourceVersion`.
    pub master_key: Option<String>,
}

impl Revision {
    /// Whether `other` certainly holds the same config and keys. A Secret without a
    /// `resourceVersion` (never the case from an API server) is never the same.
    pub fn same_as(&self, other: &Revision) -> bool {
        self.config == other.config
            && self.keys.is_some()
            && self.keys == other.keys
            && self.master_key.is_some()
            && self.master_key == other.master_key
    }
}

/// What the config holds, for the log.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Counts {
    /// Providers.
    pub providers: usize,
    /// Provider keys.
    pub keys: usize,
    /// Services.
    pub services: usize,
    /// Live tokens.
    pub tokens: usize,
    /// Policies.
    pub policies: usize,
    /// Budgets.
    pub budgets: usize,
}

impl Counts {
    fn of(config: &GatewayConfig) -> Self {
        Self {
            providers: config.providers.len(),
            keys: config.providers.iter().map(|p| p.keys.len()).sum(),
            services: config.services.len(),
            tokens: config.tokens.len(),
            policies: config.policies.len(),
            budgets: config.budgets.len(),
        }
    }
}

impl fmt::Display for Counts {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} providers ({} keys), {} services, {} tokens, {} policies, {} budgets",
            self.providers, self.keys, self.services, self.tokens, self.policies, self.budgets
        )
    }
}

/// A snapshot ready to install.
#[derive(Debug)]
pub struct Assembled {
    /// The snapshot.
    pub snapshot: Snapshot,
    /// What it was built from.
    pub revision: Revision,
    /// What it holds.
    pub counts: Counts,
}

/// Why the compiled objects give no snapshot. No variant carries a secret value.
#[derive(Debug, thiserror::Error)]
pub enum AssembleError {
    /// The operator has not written the manifest ConfigMap (yet).
    #[error("ConfigMap {CONFIG_NAME} is not there (yet)")]
    NoManifest,
    /// The manifest and its parts do not read back into a config.
    #[error("the compiled config cannot be read: {0}")]
    Config(#[source] ReadError),
    /// The master-key Secret is absent.
    #[error("Secret {MASTER_KEY_SECRET} is not there (yet)")]
    NoMasterKey,
    /// The master-key Secret does not hold a master key.
    #[error("Secret {MASTER_KEY_SECRET} cannot be read: {0}")]
    MasterKey(#[source] ReadError),
    /// The sealed-keys Secret is absent.
    #[error("Secret {KEYS_SECRET} is not there (yet)")]
    NoKeys,
    /// The sealed keys do not open with the master key.
    #[error("Secret {KEYS_SECRET} cannot be opened: {0}")]
    Keys(#[source] ReadError),
    /// The config names a provider key the sealed map does not hold: the keys Secret is of an
    /// older generation than the manifest.
    #[error("the config uses provider key {id}, which Secret {KEYS_SECRET} does not hold (yet)")]
    KeyNotSealed {
        /// The key id (`namespace/provider/label`; not secret).
        id: String,
    },
    /// The config is refused by [`Snapshot::build`].
    #[error("the compiled config is refused: {0}")]
    Snapshot(#[from] SnapshotError),
}

impl AssembleError {
    /// Whether the objects look half-written, which the operator's write order makes a normal,
    /// passing state (an object not there yet, a part or the keys of another generation), as
    /// opposed to a config this gateway will not serve however long it waits.
    pub fn is_pending(&self) -> bool {
        match self {
            Self::NoManifest | Self::NoMasterKey | Self::NoKeys | Self::KeyNotSealed { .. } => true,
            Self::Config(ReadError::Bundle(BundleError::MissingPart(_) | BundleError::Corrupt(_))) => true,
            Self::Config(_) | Self::MasterKey(_) | Self::Keys(_) | Self::Snapshot(_) => false,
        }
    }
}

/// Builds the snapshot the objects describe, or says why they describe none (yet).
pub fn assemble(objects: &Objects) -> Result<Assembled, AssembleError> {
    let revision = objects.revision().ok_or(AssembleError::NoManifest)?;
    let manifest = objects.config_maps.get(CONFIG_NAME).ok_or(AssembleError::NoManifest)?;
    let config = cluster::read_config(manifest, &objects.config_maps).map_err(AssembleError::Config)?;
    let master = objects.secrets.get(MASTER_KEY_SECRET).ok_or(AssembleError::NoMasterKey)?;
    let master = cluster::read_master_key(master).map_err(AssembleError::MasterKey)?;
    let keys = objects.secrets.get(KEYS_SECRET).ok_or(AssembleError::NoKeys)?;
    let keys = cluster::read_keys(keys, &master).map_err(AssembleError::Keys)?;
    // The operator seals the keys before it writes the manifest that uses them, so a key id
    // missing here means the keys Secret is still of the previous generation.
    if let Some(id) = config.providers.iter().flat_map(|p| &p.keys).map(|k| &k.id).find(|id| keys.get(id).is_none()) {
        return Err(AssembleError::KeyNotSealed { id: id.clone() });
    }
    let snapshot = Snapshot::build(&config, &keys)?;
    Ok(Assembled { snapshot, revision, counts: Counts::of(&config) })
}

fn sha256_hex(bytes: &[u8]) -> String {
    use sha2::Digest as _;
    hex::encode(sha2::Sha256::digest(bytes))
}
