//! Writing the compiled config and the sealed provider keys into the gateway's namespace, with
//! server-side apply under the field manager `uprox-operator` (see `uprox_crds::cluster` for the
//! objects and their order), and the master key they are sealed with.
//!
//! Writes are skipped when nothing changed: the config by the SHA-256 of its JSON, the keys by
//! their keyed fingerprint. Both are read back from the objects at start-up, so a restarted
//! operator does not rewrite (and re-seal) an unchanged config.
//!
//! Rotating the master key: delete the Secret `uprox-master-key`. The next pass makes a new
//! key and seals the provider keys under it; gateways keep serving their last good keys until
//! they see both the new master key and the keys sealed under it.

use std::collections::BTreeSet;

use k8s_openapi::api::core::v1::{ConfigMap, Secret};
use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams, PostParams};
use kube::{Client, ResourceExt as _};
use uprox_crds::bundle::MAX_PART_BYTES;
use uprox_crds::cluster::{self, COMPILED_CONFIG, COMPILED_LABEL, CONFIG_DIGEST_ANNOTATION, CONFIG_NAME};
use uprox_crds::sealed::{self, MasterKey, NONCE_LEN};
use uprox_crds::{Compiled, GatewayConfig};

/// What a write did.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Written {
    /// Bytes of config JSON.
    pub config_bytes: usize,
    /// Whether the config objects were written (false: unchanged).
    pub config_changed: bool,
    /// Whether the sealed keys were written (false: unchanged).
    pub keys_changed: bool,
    /// Config parts.
    pub parts: usize,
}

/// Why a write failed.
#[derive(Debug, thiserror::Error)]
pub enum WriteError {
    /// The API refused or could not be reached.
    #[error("{what}: {source}")]
    Api {
        /// What was being written.
        what: String,
        /// Why.
        source: kube::Error,
    },
    /// The operating system's random source failed.
    #[error("the random source failed: {0}")]
    Random(getrandom::Error),
    /// The config could not be serialized or sealed.
    #[error("{0}")]
    Encode(String),
}

/// The writer of the compiled objects in one namespace.
#[derive(Debug)]
pub struct Outputs {
    namespace: String,
    config_maps: Api<ConfigMap>,
    secrets: Api<Secret>,
    master: MasterKey,
    max_part: usize,
    config_digest: Option<String>,
    keys_fingerprint: Option<String>,
    parts: BTreeSet<String>,
}

impl Outputs {
    /// Loads (or creates, on first start) the master key and what is already written.
    pub async fn open(client: Client, namespace: &str) -> Result<Self, WriteError> {
        let config_maps: Api<ConfigMap> = Api::namespaced(client.clone(), namespace);
        let secrets: Api<Secret> = Api::namespaced(client, namespace);
        let master = ensure_master_key(&secrets, namespace).await?;
        let manifest = config_maps.get_opt(CONFIG_NAME).await.map_err(api("reading the config manifest"))?;
        let config_digest = manifest.and_then(|m| m.annotations().get(CONFIG_DIGEST_ANNOTATION).cloned());
        let keys = secrets.get_opt(cluster::KEYS_SECRET).await.map_err(api("reading the sealed keys"))?;
        let keys_fingerprint = keys.as_ref().and_then(cluster::fingerprint_of).map(str::to_owned);
        let selector = format!("{COMPILED_LABEL}={COMPILED_CONFIG}");
        let existing = config_maps
            .list_metadata(&ListParams::default().labels(&selector))
            .await
            .map_err(api("listing config parts"))?;
        let parts = existing.items.iter().map(|m| m.name_any()).filter(|n| n != CONFIG_NAME).collect();
        Ok(Self {
            namespace: namespace.to_owned(),
            config_maps,
            secrets,
            master,
            max_part: MAX_PART_BYTES,
            config_digest,
            keys_fingerprint,
            parts,
        })
    }

    /// The gateway namespace it writes into.
    pub fn namespace(&self) -> &str {
        &self.namespace
    }

    /// Overrides the part size (tests and the scale bench split small configs).
    pub fn with_max_part(mut self, max_part: usize) -> Self {
        self.max_part = max_part;
        self
    }

    /// Writes what changed: parts, then keys, then the manifest, then removes parts the new
    /// manifest no longer lists. The master key is read first: when it is gone (deleted to
    /// rotate it) a new one is made, and when it changed the keys are sealed anew under it.
    pub async fn write(&mut self, compiled: &Compiled) -> Result<Written, WriteError> {
        let master = ensure_master_key(&self.secrets, &self.namespace).await?;
        if master != self.master {
            tracing::info!("the master key changed; sealing the provider keys under the new one");
            self.master = master;
            self.keys_fingerprint = None;
        }
        let json = config_json(&compiled.config)?;
        let (manifest, parts) = cluster::config_maps(&self.namespace, &json, self.max_part);
        let digest = manifest.annotations().get(CONFIG_DIGEST_ANNOTATION).cloned();
        let mut written = Written { config_bytes: json.len(), parts: parts.len(), ..Written::default() };
        let config_changed = digest != self.config_digest;
        let part_names: BTreeSet<String> = parts.iter().map(|p| p.name_any()).collect();

        if config_changed {
            for part in &parts {
                apply(&self.config_maps, part).await?;
            }
        }
        let fingerprint = cluster::keys_fingerprint(&self.master, &compiled.keys);
        if self.keys_fingerprint.as_deref() != Some(fingerprint.as_str()) {
            let sealed = seal(&self.master, compiled)?;
            apply(&self.secrets, &cluster::keys_secret(&self.namespace, &sealed, &fingerprint)).await?;
            self.keys_fingerprint = Some(fingerprint);
            written.keys_changed = true;
        }
        if config_changed {
            apply(&self.config_maps, &manifest).await?;
            self.config_digest = digest;
            written.config_changed = true;
        }
        for stale in self.parts.difference(&part_names) {
            match self.config_maps.delete(stale, &DeleteParams::default()).await {
                Ok(_) => {}
                Err(kube::Error::Api(s)) if s.code == 404 => {}
                Err(source) => return Err(WriteError::Api { what: format!("deleting ConfigMap {stale}"), source }),
            }
        }
        self.parts = part_names;
        Ok(written)
    }
}

/// The config as the gateway reads it.
pub fn config_json(config: &GatewayConfig) -> Result<Vec<u8>, WriteError> {
    serde_json::to_vec(config).map_err(|e| WriteError::Encode(format!("cannot serialize the config: {e}")))
}

fn seal(master: &MasterKey, compiled: &Compiled) -> Result<std::collections::BTreeMap<String, String>, WriteError> {
    let mut random_failed = None;
    let sealed = sealed::seal_keys(master, &compiled.keys, || {
        let mut nonce = [0u8; NONCE_LEN];
        if let Err(e) = getrandom::fill(&mut nonce) {
            random_failed = Some(e);
        }
        nonce
    });
    if let Some(e) = random_failed {
        return Err(WriteError::Random(e));
    }
    sealed.map_err(|e| WriteError::Encode(format!("cannot seal the provider keys: {e}")))
}

/// Reads the master key, creating it when absent. Created with a plain create (not apply) so
/// that two operators starting at once cannot overwrite each other's key: the loser re-reads.
pub async fn ensure_master_key(secrets: &Api<Secret>, namespace: &str) -> Result<MasterKey, WriteError> {
    let what = || format!("the master key Secret {namespace}/{}", cluster::MASTER_KEY_SECRET);
    for _ in 0..2 {
        if let Some(existing) = secrets.get_opt(cluster::MASTER_KEY_SECRET).await.map_err(api(&what()))? {
            return cluster::read_master_key(&existing)
                .map_err(|e| WriteError::Encode(format!("{} is unusable ({e}); delete it to have a new one made (the gateway's sealed keys are then re-sealed)", what())));
        }
        let mut bytes = [0u8; 32];
        getrandom::fill(&mut bytes).map_err(WriteError::Random)?;
        let key = MasterKey::from_bytes(bytes);
        match secrets.create(&PostParams::default(), &cluster::master_key_secret(namespace, &key)).await {
            Ok(_) => {
                tracing::info!(secret = %what(), "created the master key");
                return Ok(key);
            }
            Err(kube::Error::Api(s)) if s.code == 409 => continue,
            Err(source) => return Err(WriteError::Api { what: format!("creating {}", what()), source }),
        }
    }
    Err(WriteError::Encode(format!("{} keeps changing; retrying", what())))
}

async fn apply<K>(api: &Api<K>, object: &K) -> Result<(), WriteError>
where
    K: kube::Resource<DynamicType = ()> + Clone + serde::Serialize + serde::de::DeserializeOwned + std::fmt::Debug,
{
    let name = object.meta().name.clone().unwrap_or_default();
    let params = PatchParams::apply(cluster::FIELD_MANAGER).force();
    api.patch(&name, &params, &Patch::Apply(object))
        .await
        .map(|_| ())
        .map_err(|source| WriteError::Api { what: format!("applying {} {name}", K::kind(&())), source })
}

fn api(what: &str) -> impl Fn(kube::Error) -> WriteError + '_ {
    move |source| WriteError::Api { what: what.to_owned(), source }
}
