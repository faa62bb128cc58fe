//! Sealed secret values: the AES-256-GCM text format in which the operator writes provider keys
//! into a Secret and every gateway replica reads them back, plus the [`MasterKey`] both share.
//!
//! A sealed value is `v1.<nonce>.<ciphertext||tag>`, both parts base64url without padding. The
//! associated data (for provider keys: the key id) is authenticated but not stored, so a value
//! copied to another id fails to unseal. This module is pure: it draws no randomness — callers
//! pass a fresh nonce per value — and does no IO. It does not choose where the master key or the
//! sealed map live in the cluster, nor rotate keys; that is the operator's job.

use std::collections::BTreeMap;
use std::fmt;

use aes_gcm::aead::{Aead, KeyInit, Payload};
use aes_gcm::{Aes256Gcm, Key, Nonce};
use base64::Engine as _;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};

use crate::config::KeyMaterial;
use crate::secret::SecretString;

/// The version tag of the format written by [`seal`].
pub const SEALED_VERSION: &str = "v1";

/// Bytes in a nonce (96 bits, the size GCM is specified for).
pub const NONCE_LEN: usize = 12;

/// Bytes in an authentication tag.
const TAG_LEN: usize = 16;

/// Why a value could not be sealed or unsealed. No variant carries secret material.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum SealError {
    /// The master key is not base64 of exactly 32 bytes.
    #[error("the master key must be 32 bytes, base64-encoded")]
    InvalidKey,
    /// The value names a format version this build does not know.
    #[error("sealed value has unknown version {0:?} (this build reads {SEALED_VERSION})")]
    UnknownVersion(String),
    /// The value is not of the form `v1.<nonce>.<ciphertext>`.
    #[error("sealed value is malformed: {0}")]
    Malformed(&'static str),
    /// Wrong master key, tampered value, or a value moved to another id. Deliberately one
    /// variant without detail: telling these apart would help an attacker, not an operator.
    #[error("sealed value failed authentication (wrong master key, tampered, or moved to another id)")]
    Authentication,
    /// The plaintext or associated data exceeds what AES-GCM can encrypt under one nonce
    /// (about 64 GiB); unreachable for anything that fits in a Kubernetes object.
    #[error("value too large to seal")]
    TooLarge,
    /// One entry of a sealed key map failed; the id is not secret and says which to fix.
    #[error("sealed key {id:?}: {source}")]
    Key {
        /// The key id of the failing entry.
        id: String,
        /// What was wrong with it.
        #[source]
        source: Box<SealError>,
    },
}

/// The 256-bit key that seals provider keys. Its `Debug` never shows the bytes.
#[derive(Clone, PartialEq, Eq)]
pub struct MasterKey([u8; 32]);

impl MasterKey {
    /// Wraps raw key bytes (from a CSPRNG: this crate draws no randomness).
    pub fn from_bytes(bytes: [u8; 32]) -> Self {
        Self(bytes)
    }

    /// Parses the standard-base64 form the operator keeps in its Secret. Surrounding whitespace
    /// (a trailing newline from `openssl rand -base64 32 > key`) is ignored.
    pub fn from_base64(encoded: &str) -> Result<Self, SealError> {
        let bytes = STANDARD.decode(encoded.trim()).map_err(|_| SealError::InvalidKey)?;
        let bytes: [u8; 32] = bytes.try_into().map_err(|_| SealError::InvalidKey)?;
        Ok(Self(bytes))
    }

    /// The standard-base64 form, wrapped so that it cannot be logged by accident.
    pub fn to_base64(&self) -> SecretString {
        SecretString::new(STANDARD.encode(self.0))
    }

    /// SHA-256 over a domain tag, the key and `message`, in hex: a keyed fingerprint for
    /// telling whether sealed material changed without unsealing it. Only compared for
    /// equality, so the length extension a bare hash allows gives an attacker nothing.
    pub fn fingerprint(&self, message: &[u8]) -> String {
        use sha2::Digest as _;
        let mut hash = sha2::Sha256::new();
        hash.update(b"uprox fingerprint v1\0");
        hash.update(self.0);
        hash.update(message);
        hex::encode(hash.finalize())
    }

    fn cipher(&self) -> Aes256Gcm {
        Aes256Gcm::new(&Key::<Aes256Gcm>::from(self.0))
    }
}

impl fmt::Debug for MasterKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("MasterKey(<redacted>)")
    }
}

/// Seals `plaintext` under `key`, binding it to `aad`.
///
/// `nonce` must never repeat under the same key: a repeat reveals the XOR of two plaintexts and
/// lets an attacker forge values. Draw it from a CSPRNG for every call (96 random bits are safe
/// for far more values than a cluster will ever seal under one key).
pub fn seal(key: &MasterKey, nonce: [u8; NONCE_LEN], aad: &[u8], plaintext: &[u8]) -> Result<String, SealError> {
    let ciphertext =
        key.cipher().encrypt(&Nonce::from(nonce), Payload { msg: plaintext, aad }).map_err(|_| SealError::TooLarge)?;
    Ok(format!("{SEALED_VERSION}.{}.{}", URL_SAFE_NO_PAD.encode(nonce), URL_SAFE_NO_PAD.encode(ciphertext)))
}

/// Opens a value written by [`seal`] with the same `key` and `aad`.
pub fn unseal(key: &MasterKey, aad: &[u8], sealed: &str) -> Result<Vec<u8>, SealError> {
    let mut fields = sealed.split('.');
    let (Some(version), Some(nonce), Some(ciphertext), None) =
        (fields.next(), fields.next(), fields.next(), fields.next())
    else {
        return Err(malformed_or_version(sealed));
    };
    if version != SEALED_VERSION {
        return Err(version_error(version));
    }
    let nonce = URL_SAFE_NO_PAD.decode(nonce).map_err(|_| SealError::Malformed("nonce is not base64url"))?;
    let nonce: [u8; NONCE_LEN] = nonce.try_into().map_err(|_| SealError::Malformed("nonce is not 12 bytes"))?;
    let ciphertext =
        URL_SAFE_NO_PAD.decode(ciphertext).map_err(|_| SealError::Malformed("ciphertext is not base64url"))?;
    if ciphertext.len() < TAG_LEN {
        return Err(SealError::Malformed("ciphertext is shorter than its tag"));
    }
    key.cipher().decrypt(&Nonce::from(nonce), Payload { msg: &ciphertext, aad }).map_err(|_| SealError::Authentication)
}

/// Seals every provider key, each bound to its id, with a fresh nonce from `nonces` per value.
///
/// The result maps key id → sealed value. Ids (`namespace/provider/label`) contain `/`, which
/// Secret data keys do not allow, so store the map as one document (e.g. JSON under a single
/// Secret key) rather than one Secret key per id.
pub fn seal_keys(
    key: &MasterKey,
    material: &KeyMaterial,
    mut nonces: impl FnMut() -> [u8; NONCE_LEN],
) -> Result<BTreeMap<String, String>, SealError> {
    material
        .0
        .iter()
        .map(|(id, value)| {
            let sealed = seal(key, nonces(), id.as_bytes(), value.expose().as_bytes()).map_err(|e| in_key(id, e))?;
            Ok((id.clone(), sealed))
        })
        .collect()
}

/// Opens a map written by [`seal_keys`]. All or nothing: one bad entry fails the whole map, so a
/// gateway keeps its last good keys rather than serving with some missing.
pub fn unseal_keys(key: &MasterKey, sealed: &BTreeMap<String, String>) -> Result<KeyMaterial, SealError> {
    sealed
        .iter()
        .map(|(id, value)| {
            let plaintext = unseal(key, id.as_bytes(), value).map_err(|e| in_key(id, e))?;
            let plaintext =
                String::from_utf8(plaintext).map_err(|_| in_key(id, SealError::Malformed("plaintext is not UTF-8")))?;
            Ok((id.clone(), SecretString::new(plaintext)))
        })
        .collect::<Result<_, _>>()
        .map(KeyMaterial)
}

fn in_key(id: &str, source: SealError) -> SealError {
    SealError::Key { id: id.to_owned(), source: Box::new(source) }
}

/// A value without three fields may still be a later version with another layout.
fn malformed_or_version(sealed: &str) -> SealError {
    match sealed.split_once('.') {
        Some((version, _)) if looks_like_version(version) && version != SEALED_VERSION => version_error(version),
        _ => SealError::Malformed("expected `v1.<nonce>.<ciphertext>`"),
    }
}

/// Echoes the version only when it looks like one: the field might otherwise be a plaintext key
/// pasted where a sealed value belongs, and errors must never carry secrets.
fn version_error(version: &str) -> SealError {
    if looks_like_version(version) {
        SealError::UnknownVersion(version.to_owned())
    } else {
        SealError::Malformed("expected `v1.<nonce>.<ciphertext>`")
    }
}

fn looks_like_version(field: &str) -> bool {
    field.len() <= 8 && field.strip_prefix('v').is_some_and(|n| !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use super::*;

    fn key(byte: u8) -> MasterKey {
        MasterKey::from_bytes([byte; 32])
    }

    fn nonce(byte: u8) -> [u8; NONCE_LEN] {
        [byte; NONCE_LEN]
    }

    fn decode_hex<const N: usize>(s: &str) -> [u8; N] {
        hex::decode(s).unwrap().try_into().unwrap()
    }

    #[test]
    fn round_trips_including_empty_and_unicode() {
        for plaintext in ["", "sk-proj-abc123", "clé-🔑-ключ", &"x".repeat(100_000)] {
            let sealed = seal(&key(1), nonce(2), b"ns/openai/main", plaintext.as_bytes()).unwrap();
            assert!(sealed.starts_with("v1."));
            assert!(!sealed.contains(plaintext) || plaintext.is_empty());
            assert_eq!(unseal(&key(1), b"ns/openai/main", &sealed).unwrap(), plaintext.as_bytes());
        }
    }

    #[test]
    fn distinct_nonces_give_distinct_output() {
        let a = seal(&key(1), nonce(1), b"id", b"same").unwrap();
        let b = seal(&key(1), nonce(2), b"id", b"same").unwrap();
        assert_ne!(a, b);
        assert_eq!(unseal(&key(1), b"id", &a).unwrap(), unseal(&key(1), b"id", &b).unwrap());
    }

    #[test]
    fn tampering_any_byte_fails_authentication() {
        let sealed = seal(&key(1), nonce(3), b"id", b"sk-secret").unwrap();
        let fields: Vec<&str> = sealed.split('.').collect();
        let nonce_bytes = URL_SAFE_NO_PAD.decode(fields[1]).unwrap();
        let ct_bytes = URL_SAFE_NO_PAD.decode(fields[2]).unwrap();
        for i in 0..nonce_bytes.len() {
            let mut n = nonce_bytes.clone();
            n[i] ^= 0x01;
            let t = format!("v1.{}.{}", URL_SAFE_NO_PAD.encode(&n), fields[2]);
            assert_eq!(unseal(&key(1), b"id", &t), Err(SealError::Authentication), "nonce byte {i}");
        }
        for i in 0..ct_bytes.len() {
            let mut c = ct_bytes.clone();
            c[i] ^= 0x80;
            let t = format!("v1.{}.{}", fields[1], URL_SAFE_NO_PAD.encode(&c));
            assert_eq!(unseal(&key(1), b"id", &t), Err(SealError::Authentication), "ciphertext byte {i}");
        }
        // Truncating the tag by one byte is tampering too.
        let t = format!("v1.{}.{}", fields[1], URL_SAFE_NO_PAD.encode(&ct_bytes[..ct_bytes.len() - 1]));
        assert_eq!(unseal(&key(1), b"id", &t), Err(SealError::Authentication));
    }

    #[test]
    fn wrong_key_or_aad_fails_authentication() {
        let sealed = seal(&key(1), nonce(4), b"ns/openai/main", b"sk-secret").unwrap();
        assert_eq!(unseal(&key(2), b"ns/openai/main", &sealed), Err(SealError::Authentication));
        assert_eq!(unseal(&key(1), b"ns/openai/backup", &sealed), Err(SealError::Authentication));
        assert_eq!(unseal(&key(1), b"", &sealed), Err(SealError::Authentication));
    }

    #[test]
    fn bad_version_and_format_are_reported_specifically() {
        let sealed = seal(&key(1), nonce(5), b"id", b"v").unwrap();
        let rest = sealed.strip_prefix("v1.").unwrap();
        assert_eq!(unseal(&key(1), b"id", &format!("v2.{rest}")), Err(SealError::UnknownVersion("v2".into())));
        assert_eq!(unseal(&key(1), b"id", "v9.only-two"), Err(SealError::UnknownVersion("v9".into())));
        let malformed = |s: &str| matches!(unseal(&key(1), b"id", s), Err(SealError::Malformed(_)));
        assert!(malformed(""));
        assert!(malformed("sk-proj-plaintext-key"));
        assert!(malformed("v1.abc"));
        assert!(malformed(&format!("{sealed}.extra")));
        assert!(malformed(&format!("v1.!!!.{}", sealed.rsplit('.').next().unwrap())));
        assert!(malformed(&format!("v1.{}.{}", URL_SAFE_NO_PAD.encode([0u8; 11]), URL_SAFE_NO_PAD.encode([0u8; 16]))));
        assert!(malformed(&format!("v1.{}.{}", URL_SAFE_NO_PAD.encode([0u8; 12]), URL_SAFE_NO_PAD.encode([0u8; 15]))));
        assert!(malformed(&format!("v1.{}.***", URL_SAFE_NO_PAD.encode([0u8; 12]))));
        // A plaintext with dots in the version position is not echoed back.
        let err = unseal(&key(1), b"id", "sk-live-SECRET.a.b").unwrap_err();
        assert!(!err.to_string().contains("SECRET"));
    }

    /// McGrew & Viega, "The Galois/Counter Mode of Operation", test cases 13, 14 and 16 (256-bit
    /// key), also in NIST's GCM validation vectors: proves the primitive is AES-256-GCM, wired
    /// with the nonce, AAD and tag where the format says.
    #[test]
    fn known_answer_vectors() {
        let cases = [
            (
                "0000000000000000000000000000000000000000000000000000000000000000",
                "000000000000000000000000",
                "",
                "",
                "530f8afbc74536b9a963b4f1c4cb738b",
            ),
            (
                "0000000000000000000000000000000000000000000000000000000000000000",
                "000000000000000000000000",
                "",
                "00000000000000000000000000000000",
                "cea7403d4d606b6e074ec5d3baf39d18d0d1c8a799996bf0265b98b5d48ab919",
            ),
            (
                "feffe9928665731c6d6a8f9467308308feffe9928665731c6d6a8f9467308308",
                "cafebabefacedbaddecaf888",
                "feedfacedeadbeeffeedfacedeadbeefabaddad2",
                "d9313225f88406e5a55909c5aff5269a86a7a9531534f7da2e4c303d8a318a721c3c0c95956809532fcf0e2449a6b525b16aedf5aa0de657ba637b39",
                "522dc1f099567d07f47f37a32a84427d643a8cdcbfe5c0c97598a2bd2555d1aa8cb08e48590dbb3da7b08b1056828838c5f61e6393ba7a0abcc9f66276fc6ece0f4e1768cddf8853bb2d551b",
            ),
        ];
        for (k, iv, aad, pt, ct_tag) in cases {
            let key = MasterKey::from_bytes(decode_hex(k));
            let (aad, pt) = (hex::decode(aad).unwrap(), hex::decode(pt).unwrap());
            let sealed = seal(&key, decode_hex(iv), &aad, &pt).unwrap();
            let expected = format!(
                "v1.{}.{}",
                URL_SAFE_NO_PAD.encode(hex::decode(iv).unwrap()),
                URL_SAFE_NO_PAD.encode(hex::decode(ct_tag).unwrap())
            );
            assert_eq!(sealed, expected);
            assert_eq!(unseal(&key, &aad, &expected).unwrap(), pt);
        }
    }

    #[test]
    fn master_key_base64_and_redaction() {
        let k = MasterKey::from_bytes(core::array::from_fn(|i| i as u8));
        let encoded = k.to_base64();
        assert_eq!(MasterKey::from_base64(encoded.expose()).unwrap(), k);
        assert_eq!(MasterKey::from_base64(&format!("{}\n", encoded.expose())).unwrap(), k);
        assert_eq!(MasterKey::from_base64("c2hvcnQ="), Err(SealError::InvalidKey));
        assert_eq!(MasterKey::from_base64("not base64!"), Err(SealError::InvalidKey));
        let debug = format!("{k:?}");
        assert_eq!(debug, "MasterKey(<redacted>)");
        assert!(!debug.contains(encoded.expose()));
        assert!(!format!("{encoded:?}").contains(encoded.expose()));
    }

    #[test]
    fn keys_round_trip_and_are_bound_to_their_ids() {
        let material = KeyMaterial(BTreeMap::from([
            ("team-a/openai/main".to_owned(), SecretString::new("sk-a")),
            ("team-b/anthropic/main".to_owned(), SecretString::new("sk-ant-b-ключ")),
        ]));
        let mut counter = 0u8;
        let sealed = seal_keys(&key(7), &material, || {
            counter += 1;
            nonce(counter)
        })
        .unwrap();
        assert_eq!(sealed.len(), 2);
        assert!(sealed.values().all(|v| !v.contains("sk-")));
        assert_eq!(unseal_keys(&key(7), &sealed).unwrap(), material);
        assert_eq!(unseal_keys(&key(7), &BTreeMap::new()).unwrap(), KeyMaterial::default());

        // Swapping two values between ids must not unseal.
        let mut swapped = sealed.clone();
        let a = swapped["team-a/openai/main"].clone();
        let b = swapped["team-b/anthropic/main"].clone();
        swapped.insert("team-a/openai/main".into(), b);
        swapped.insert("team-b/anthropic/main".into(), a);
        assert_eq!(
            unseal_keys(&key(7), &swapped),
            Err(SealError::Key { id: "team-a/openai/main".into(), source: Box::new(SealError::Authentication) })
        );

        let err = unseal_keys(&key(8), &sealed).unwrap_err();
        assert!(matches!(&err, SealError::Key { source, .. } if **source == SealError::Authentication));
        assert!(!err.to_string().contains("sk-"));
    }

    #[test]
    fn non_utf8_plaintext_is_refused_as_a_key() {
        let sealed = BTreeMap::from([("id".to_owned(), seal(&key(1), nonce(1), b"id", &[0xff, 0xfe]).unwrap())]);
        assert!(matches!(
            unseal_keys(&key(1), &sealed),
            Err(SealError::Key { source, .. }) if matches!(*source, SealError::Malformed(_))
        ));
    }
}
