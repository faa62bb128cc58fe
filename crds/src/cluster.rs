//! The contract between the operator and the gateway in a cluster: which objects carry the
//! compiled config and the sealed provider keys, what they are named and labelled, and how each
//! side turns a [`GatewayConfig`] into those objects and back.
//!
//! In the gateway's namespace the operator writes:
//! - ConfigMaps `uprox-config-0`, `uprox-config-1`, … holding the config JSON split by
//!   [`bundle::split`] under the key `part`, then the ConfigMap `uprox-config` holding the
//!   [`bundle::Manifest`] under `manifest.json`. The manifest is written last, so a gateway that
//!   sees it can find every part it lists (or waits for the one still on its way).
//! - the Secret `uprox-provider-keys`: the sealed key map ([`sealed::seal_keys`]) as one JSON
//!   document under `keys.json`, annotated with a keyed fingerprint of the plaintext so the
//!   operator re-seals only when a key changed;
//! - the Secret `uprox-master-key`: the [`MasterKey`] in base64 under `key`, created once.
//!
//! Every one of them carries the label [`COMPILED_LABEL`], which is what the gateway watches.
//! This module is pure: no client, no clock, no randomness.

use std::collections::BTreeMap;

use k8s_openapi::ByteString;
use k8s_openapi::api::core::v1::{ConfigMap, Secret};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;

use crate::bundle::{self, BundleError, Manifest};
use crate::config::{CONFIG_VERSION, GatewayConfig, KeyMaterial};
use crate::sealed::{self, MasterKey, SealError};

/// The field manager of every server-side apply the operator makes.
pub const FIELD_MANAGER: &str = "uprox-operator";
/// The label on every object the operator compiles for the gateway; its value says which one.
pub const COMPILED_LABEL: &str = "uprox.dev/compiled";
/// [`COMPILED_LABEL`] value of the manifest and the part ConfigMaps.
pub const COMPILED_CONFIG: &str = "config";
/// [`COMPILED_LABEL`] value of the sealed-keys Secret.
pub const COMPILED_KEYS: &str = "keys";
/// [`COMPILED_LABEL`] value of the master-key Secret.
pub const COMPILED_MASTER_KEY: &str = "master-key";
/// The manifest ConfigMap; parts are named `{CONFIG_NAME}-{index}`.
pub const CONFIG_NAME: &str = "uprox-config";
/// The manifest's key in its ConfigMap.
pub const MANIFEST_KEY: &str = "manifest.json";
/// A part's key in its ConfigMap.
pub const PART_KEY: &str = "part";
/// The sealed-keys Secret.
pub const KEYS_SECRET: &str = "uprox-provider-keys";
/// The sealed key map's key in its Secret.
pub const KEYS_KEY: &str = "keys.json";
/// Annotation on the sealed-keys Secret: keyed fingerprint of the plaintext key material.
pub const KEYS_FINGERPRINT_ANNOTATION: &str = "uprox.dev/keys-fingerprint";
/// The master-key Secret.
pub const MASTER_KEY_SECRET: &str = "uprox-master-key";
/// The master key's key in its Secret.
pub const MASTER_KEY_KEY: &str = "key";
/// Annotation on the manifest ConfigMap: SHA-256 of the whole config JSON, for people and
/// for the gateway's "which config am I serving" log line.
pub const CONFIG_DIGEST_ANNOTATION: &str = "uprox.dev/config-sha256";

/// Why the compiled objects cannot be read back into a config.
#[derive(Debug, thiserror::Error)]
pub enum ReadError {
    /// An object lacks the data key it must hold.
    #[error("{object} has no data key {key:?}")]
    MissingKey {
        /// The object.
        object: String,
        /// The data key.
        key: &'static str,
    },
    /// A document does not parse.
    #[error("{object}: {source}")]
    Json {
        /// The object.
        object: String,
        /// Why.
        source: serde_json::Error,
    },
    /// The parts do not reassemble (one is missing or of another generation).
    #[error(transparent)]
    Bundle(#[from] BundleError),
    /// The config is of a version this build does not read.
    #[error("the compiled config has version {0}; this gateway reads version {CONFIG_VERSION}")]
    Version(u32),
    /// The keys or the master key do not open.
    #[error(transparent)]
    Seal(#[from] SealError),
}

/// The ConfigMaps that carry `config`: the manifest and its parts, all in `namespace`.
pub fn config_maps(namespace: &str, config_json: &[u8], max_part: usize) -> (ConfigMap, Vec<ConfigMap>) {
    let (manifest, parts) = bundle::split(config_json, CONFIG_NAME, max_part);
    let parts = parts
        .into_iter()
        .map(|(name, bytes)| ConfigMap {
            metadata: meta(namespace, &name, COMPILED_CONFIG),
            // split() cuts between UTF-8 characters, and serde_json writes UTF-8.
            data: Some(BTreeMap::from([(PART_KEY.to_owned(), String::from_utf8_lossy(&bytes).into_owned())])),
            ..ConfigMap::default()
        })
        .collect();
    let mut metadata = meta(namespace, CONFIG_NAME, COMPILED_CONFIG);
    metadata.annotations = Some(BTreeMap::from([(CONFIG_DIGEST_ANNOTATION.to_owned(), sha256_hex(config_json))]));
    let manifest_json = serde_json::to_string(&manifest).unwrap_or_default();
    let manifest = ConfigMap {
        metadata,
        data: Some(BTreeMap::from([(MANIFEST_KEY.to_owned(), manifest_json)])),
        ..ConfigMap::default()
    };
    (manifest, parts)
}

/// The Secret that carries the sealed provider keys.
pub fn keys_secret(namespace: &str, sealed: &BTreeMap<String, String>, fingerprint: &str) -> Secret {
    let mut metadata = meta(namespace, KEYS_SECRET, COMPILED_KEYS);
    metadata.annotations = Some(BTreeMap::from([(KEYS_FINGERPRINT_ANNOTATION.to_owned(), fingerprint.to_owned())]));
    let json = serde_json::to_vec(sealed).unwrap_or_default();
    Secret {
        metadata,
        type_: Some("Opaque".to_owned()),
        data: Some(BTreeMap::from([(KEYS_KEY.to_owned(), ByteString(json))])),
        ..Secret::default()
    }
}

/// The Secret that carries the master key.
pub fn master_key_secret(namespace: &str, key: &MasterKey) -> Secret {
    Secret {
        metadata: meta(namespace, MASTER_KEY_SECRET, COMPILED_MASTER_KEY),
        type_: Some("Opaque".to_owned()),
        data: Some(BTreeMap::from([(
            MASTER_KEY_KEY.to_owned(),
            ByteString(key.to_base64().expose().as_bytes().to_vec()),
        )])),
        ..Secret::default()
    }
}

/// A fingerprint of the key material under the master key: equal material gives an equal
/// fingerprint, and without the master key it says nothing about the values. Keyed, so the
/// annotation it is written to is no offline oracle for a guessed provider key.
pub fn keys_fingerprint(master: &MasterKey, material: &KeyMaterial) -> String {
    let mut text = Vec::new();
    for (id, value) in &material.0 {
        text.extend_from_slice(id.as_bytes());
        text.push(0);
        text.extend_from_slice(value.expose().as_bytes());
        text.push(0);
    }
    master.fingerprint(&text)
}

/// The fingerprint written on an existing sealed-keys Secret.
pub fn fingerprint_of(secret: &Secret) -> Option<&str> {
    secret.metadata.annotations.as_ref()?.get(KEYS_FINGERPRINT_ANNOTATION).map(String::as_str)
}

/// Reads the config back from its manifest and the part ConfigMaps (by name; others ignored).
pub fn read_config(manifest: &ConfigMap, parts: &BTreeMap<String, ConfigMap>) -> Result<GatewayConfig, ReadError> {
    let text = data_of(manifest, MANIFEST_KEY)?;
    let parsed: Manifest =
        serde_json::from_str(text).map_err(|source| ReadError::Json { object: name_of(manifest), source })?;
    let mut bytes = BTreeMap::new();
    for part in &parsed.parts {
        // A part not here yet is reported by merge() as missing.
        if let Some(cm) = parts.get(&part.name) {
            bytes.insert(part.name.clone(), data_of(cm, PART_KEY)?.as_bytes().to_vec());
        }
    }
    let json = bundle::merge(&parsed, &bytes)?;
    let config: GatewayConfig =
        serde_json::from_slice(&json).map_err(|source| ReadError::Json { object: name_of(manifest), source })?;
    if config.version != CONFIG_VERSION {
        return Err(ReadError::Version(config.version));
    }
    Ok(config)
}

/// Reads the master key from its Secret.
pub fn read_master_key(secret: &Secret) -> Result<MasterKey, ReadError> {
    let bytes = secret_data(secret, MASTER_KEY_KEY)?;
    let text = std::str::from_utf8(bytes).map_err(|_| SealError::InvalidKey)?;
    Ok(MasterKey::from_base64(text)?)
}

/// Reads and unseals the provider keys.
pub fn read_keys(secret: &Secret, master: &MasterKey) -> Result<KeyMaterial, ReadError> {
    let bytes = secret_data(secret, KEYS_KEY)?;
    let sealed: BTreeMap<String, String> =
        serde_json::from_slice(bytes).map_err(|source| ReadError::Json { object: secret_name(secret), source })?;
    Ok(sealed::unseal_keys(master, &sealed)?)
}

/// Labels and name of a compiled object.
fn meta(namespace: &str, name: &str, what: &str) -> ObjectMeta {
    ObjectMeta {
        name: Some(name.to_owned()),
        namespace: Some(namespace.to_owned()),
        labels: Some(BTreeMap::from([
            (COMPILED_LABEL.to_owned(), what.to_owned()),
            ("app.kubernetes.io/managed-by".to_owned(), FIELD_MANAGER.to_owned()),
            ("app.kubernetes.io/part-of".to_owned(), "uprox".to_owned()),
        ])),
        ..ObjectMeta::default()
    }
}

fn data_of<'a>(cm: &'a ConfigMap, key: &'static str) -> Result<&'a str, ReadError> {
    cm.data
        .as_ref()
        .and_then(|d| d.get(key))
        .map(String::as_str)
        .ok_or_else(|| ReadError::MissingKey { object: name_of(cm), key })
}

fn secret_data<'a>(secret: &'a Secret, key: &'static str) -> Result<&'a [u8], ReadError> {
    secret
        .data
        .as_ref()
        .and_then(|d| d.get(key))
        .map(|b| b.0.as_slice())
        .ok_or_else(|| ReadError::MissingKey { object: secret_name(secret), key })
}

fn name_of(cm: &ConfigMap) -> String {
    format!("ConfigMap {}", cm.metadata.name.as_deref().unwrap_or_default())
}

fn secret_name(secret: &Secret) -> String {
    format!("Secret {}", secret.metadata.name.as_deref().unwrap_or_default())
}

fn sha256_hex(bytes: &[u8]) -> String {
    use sha2::Digest as _;
    hex::encode(sha2::Sha256::digest(bytes))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use crate::common::ObjectId;
    use crate::config::ProviderConfig;
    use crate::provider::ProviderType;
    use crate::secret::SecretString;

    fn config(providers: usize) -> GatewayConfig {
        GatewayConfig {
            version: CONFIG_VERSION,
            providers: (0..providers)
                .map(|i| ProviderConfig {
                    id: ObjectId::new("team-ä", format!("provider-{i}")),
                    provider_type: ProviderType::Openai,
                    base_url: "https://api.openai.com/v1".into(),
                    api_version: None,
                    timeout_seconds: 60,
                    models: Vec::new(),
                    models_explicit: false,
                    keys: Vec::new(),
                    prices: Vec::new(),
                })
                .collect(),
            ..GatewayConfig::default()
        }
    }

    fn by_name(parts: Vec<ConfigMap>) -> BTreeMap<String, ConfigMap> {
        parts.into_iter().map(|cm| (cm.metadata.name.clone().unwrap_or_default(), cm)).collect()
    }

    #[test]
    fn a_config_round_trips_through_one_or_many_config_maps() {
        for (providers, max_part) in [(1, bundle::MAX_PART_BYTES), (400, 1000)] {
            let config = config(providers);
            let json = serde_json::to_vec(&config).unwrap();
            let (manifest, parts) = config_maps("uprox-system", &json, max_part);
            assert!(parts.len() >= json.len().div_ceil(max_part), "{} parts", parts.len());
            assert_eq!(parts.len() > 1, providers > 1);
            assert!(parts.iter().all(|p| p.data.as_ref().unwrap()[PART_KEY].len() <= max_part));
            assert_eq!(manifest.metadata.labels.as_ref().unwrap()[COMPILED_LABEL], COMPILED_CONFIG);
            assert_eq!(read_config(&manifest, &by_name(parts)).unwrap(), config);
        }
    }

    #[test]
    fn a_missing_or_stale_part_is_refused() {
        let json = serde_json::to_vec(&config(50)).unwrap();
        let (manifest, mut parts) = config_maps("ns", &json, 500);
        let last = parts.pop().unwrap();
        assert!(matches!(read_config(&manifest, &by_name(parts.clone())), Err(ReadError::Bundle(_))));
        let mut stale = last.clone();
        stale.data = Some(BTreeMap::from([(PART_KEY.to_owned(), "x".repeat(10))]));
        parts.push(stale);
        assert!(matches!(read_config(&manifest, &by_name(parts)), Err(ReadError::Bundle(BundleError::Corrupt(_)))));
    }

    #[test]
    fn a_config_of_another_version_is_refused() {
        let json = serde_json::to_vec(&GatewayConfig { version: 99, ..GatewayConfig::default() }).unwrap();
        let (manifest, parts) = config_maps("ns", &json, 1000);
        assert!(matches!(read_config(&manifest, &by_name(parts)), Err(ReadError::Version(99))));
    }

    #[test]
    fn keys_round_trip_through_the_sealed_secret() {
        let master = MasterKey::from_bytes([3; 32]);
        let material = KeyMaterial(BTreeMap::from([("ns/openai/primary".to_owned(), SecretString::new("sk-1"))]));
        let mut n = 0u8;
        let sealed = sealed::seal_keys(&master, &material, || {
            n += 1;
            [n; 12]
        })
        .unwrap();
        let fingerprint = keys_fingerprint(&master, &material);
        let secret = keys_secret("ns", &sealed, &fingerprint);
        assert_eq!(fingerprint_of(&secret), Some(fingerprint.as_str()));
        let text = serde_json::to_string(&secret).unwrap();
        assert!(!text.contains("sk-1"), "the plaintext key must not appear in the Secret");
        assert_eq!(read_keys(&secret, &master).unwrap(), material);
        let master_secret = master_key_secret("ns", &master);
        assert_eq!(read_master_key(&master_secret).unwrap(), master);
        assert!(read_keys(&secret, &MasterKey::from_bytes([4; 32])).is_err());
    }

    #[test]
    fn the_fingerprint_follows_the_material_and_the_master_key() {
        let a = MasterKey::from_bytes([1; 32]);
        let one = KeyMaterial(BTreeMap::from([("k".to_owned(), SecretString::new("v1"))]));
        let two = KeyMaterial(BTreeMap::from([("k".to_owned(), SecretString::new("v2"))]));
        assert_eq!(keys_fingerprint(&a, &one), keys_fingerprint(&a, &one.clone()));
        assert_ne!(keys_fingerprint(&a, &one), keys_fingerprint(&a, &two));
        assert_ne!(keys_fingerprint(&a, &one), keys_fingerprint(&MasterKey::from_bytes([2; 32]), &one));
    }

    #[test]
    fn objects_missing_their_data_key_are_reported_by_name() {
        let empty = ConfigMap { metadata: meta("ns", CONFIG_NAME, COMPILED_CONFIG), ..ConfigMap::default() };
        let err = read_config(&empty, &BTreeMap::new()).unwrap_err().to_string();
        assert!(err.contains("uprox-config") && err.contains(MANIFEST_KEY), "{err}");
    }
}
