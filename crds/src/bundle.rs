//! Config bundles: how one serialized [`GatewayConfig`](crate::GatewayConfig) is split across
//! Kubernetes objects that each hold at most about 1 MiB, and how a gateway puts it back together
//! and checks that it has exactly the set the operator wrote.
//!
//! [`split`] cuts the bytes into parts of at most `max_part` bytes, never inside a UTF-8
//! character, so each part of a UTF-8 document (serde_json writes UTF-8) is itself valid UTF-8
//! and fits a ConfigMap's `data` (which holds strings) rather than `binaryData`. The [`Manifest`]
//! lists the parts in order with their sizes and SHA-256 digests; [`merge`] refuses a set that is
//! missing a part or holds a part of another generation, so a gateway that watches a half-applied
//! update keeps its last good config. Nothing is ever truncated. This module does not name the
//! ConfigMaps, apply them, or parse the merged JSON.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

/// The version of the [`Manifest`] shape written by this crate.
pub const MANIFEST_VERSION: u32 = 1;

/// The largest part [`split`] should be asked for: headroom under the 1 MiB object limit for
/// the object's metadata and the manifest itself.
pub const MAX_PART_BYTES: usize = 900 * 1024;

/// The longest UTF-8 character: [`split`] never makes parts smaller, so it always progresses.
const MIN_PART_BYTES: usize = 4;

/// The index of a split config: its parts, in the order they concatenate.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Manifest {
    /// Shape version; [`merge`] refuses a manifest whose version it does not know.
    pub version: u32,
    /// The parts, in order.
    pub parts: Vec<PartRef>,
}

/// One part of a split config.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PartRef {
    /// The part's name, `{base_name}-{index}`.
    pub name: String,
    /// Its length in bytes.
    pub bytes: u64,
    /// The lowercase hex SHA-256 of its bytes.
    pub sha256: String,
}

/// Why a set of parts does not reassemble into the config its manifest describes.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum BundleError {
    /// The manifest lists a part that is not present (not written yet, or already deleted).
    #[error("config part {0:?} is missing")]
    MissingPart(String),
    /// A part's size or digest differs from the manifest (another generation, or damaged).
    #[error("config part {0:?} does not match its manifest entry")]
    Corrupt(String),
    /// The manifest names a shape version this build does not know.
    #[error("config manifest has unknown version {0} (this build reads {MANIFEST_VERSION})")]
    UnknownVersion(u32),
}

/// Splits `config_json` into parts of at most `max_part` bytes named `{base_name}-0`,
/// `{base_name}-1`, …, and the manifest that lists them.
///
/// A config that fits is one part (an empty config is one empty part). A cut is moved back to
/// the start of the character it would split, so when `config_json` is UTF-8 every part is too.
/// `max_part` is raised to 4 bytes if smaller, so a cut can always fall between characters.
/// Input that is not UTF-8 is still split losslessly, at byte boundaries.
pub fn split(config_json: &[u8], base_name: &str, max_part: usize) -> (Manifest, Vec<(String, Vec<u8>)>) {
    let max_part = max_part.max(MIN_PART_BYTES);
    let mut chunks = Vec::new();
    let mut rest = config_json;
    loop {
        let cut = cut_point(rest, max_part);
        let (chunk, tail) = rest.split_at(cut);
        chunks.push(chunk);
        rest = tail;
        if rest.is_empty() {
            break;
        }
    }
    let (refs, parts) = chunks
        .into_iter()
        .enumerate()
        .map(|(index, chunk)| {
            let name = format!("{base_name}-{index}");
            let part_ref = PartRef { name: name.clone(), bytes: chunk.len() as u64, sha256: digest(chunk) };
            (part_ref, (name, chunk.to_vec()))
        })
        .unzip();
    (Manifest { version: MANIFEST_VERSION, parts: refs }, parts)
}

/// Reassembles the config a manifest describes from parts looked up by name, in manifest order.
/// Every listed part must be present with the listed size and digest; parts the manifest does
/// not list (leftovers of a larger previous config) are ignored.
pub fn merge(manifest: &Manifest, parts: &BTreeMap<String, Vec<u8>>) -> Result<Vec<u8>, BundleError> {
    if manifest.version != MANIFEST_VERSION {
        return Err(BundleError::UnknownVersion(manifest.version));
    }
    let mut config = Vec::new();
    for part_ref in &manifest.parts {
        let part = parts.get(&part_ref.name).ok_or_else(|| BundleError::MissingPart(part_ref.name.clone()))?;
        if part.len() as u64 != part_ref.bytes || !digest(part).eq_ignore_ascii_case(&part_ref.sha256) {
            return Err(BundleError::Corrupt(part_ref.name.clone()));
        }
        config.extend_from_slice(part);
    }
    Ok(config)
}

/// Where to end the next part: `max_part` bytes in, moved back off any UTF-8 continuation byte
/// (`0b10xx_xxxx`) so the cut falls before a character's first byte. `max_part` is at least 4,
/// and a UTF-8 character has at most 3 continuation bytes, so valid UTF-8 always leaves a
/// non-empty part; for other input a cut that would empty the part stays at `max_part`.
fn cut_point(rest: &[u8], max_part: usize) -> usize {
    if rest.len() <= max_part {
        return rest.len();
    }
    let mut cut = max_part;
    while cut > 0 && is_continuation(rest[cut]) {
        cut -= 1;
    }
    if cut == 0 { max_part } else { cut }
}

fn is_continuation(byte: u8) -> bool {
    byte & 0b1100_0000 == 0b1000_0000
}

fn digest(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use super::*;

    fn as_map(parts: Vec<(String, Vec<u8>)>) -> BTreeMap<String, Vec<u8>> {
        parts.into_iter().collect()
    }

    /// A multi-MB JSON document with 1-, 2-, 3- and 4-byte characters throughout.
    fn big_config() -> Vec<u8> {
        let tokens: Vec<serde_json::Value> = (0..40_000)
            .map(|i| {
                serde_json::json!({
                    "digest": format!("{i:064x}"),
                    "service": format!("team-{}/svc-é€😀-{i}", i % 97),
                    "scopes": ["chat", "embeddings", "ключ"],
                })
            })
            .collect();
        serde_json::to_vec(&serde_json::json!({ "version": 1, "tokens": tokens })).unwrap()
    }

    #[test]
    fn a_config_that_fits_is_one_part() {
        let json = br#"{"version":1,"providers":[]}"#;
        let (manifest, parts) = split(json, "uprox-config", MAX_PART_BYTES);
        assert_eq!(manifest.version, MANIFEST_VERSION);
        assert_eq!(manifest.parts.len(), 1);
        assert_eq!(manifest.parts[0].name, "uprox-config-0");
        assert_eq!(manifest.parts[0].bytes, json.len() as u64);
        assert_eq!(manifest.parts[0].sha256, hex::encode(Sha256::digest(json)));
        assert_eq!(parts, vec![("uprox-config-0".to_owned(), json.to_vec())]);
        assert_eq!(merge(&manifest, &as_map(parts)).unwrap(), json);

        // Exactly max_part bytes still fits; an empty config is one empty part.
        let (m, _) = split(&[b'a'; 64], "c", 64);
        assert_eq!(m.parts.len(), 1);
        let (m, p) = split(b"", "c", 64);
        assert_eq!((m.parts.len(), p[0].1.len()), (1, 0));
        assert_eq!(merge(&m, &as_map(p)).unwrap(), b"");
    }

    #[test]
    fn a_multi_megabyte_config_splits_and_merges_back_identical() {
        let json = big_config();
        assert!(json.len() > 3 * MAX_PART_BYTES, "{} bytes", json.len());
        let (manifest, parts) = split(&json, "uprox-config", MAX_PART_BYTES);
        assert!(manifest.parts.len() >= 4);
        for (i, (part_ref, (name, bytes))) in manifest.parts.iter().zip(&parts).enumerate() {
            assert_eq!(name, &format!("uprox-config-{i}"));
            assert_eq!(&part_ref.name, name);
            assert!(bytes.len() <= MAX_PART_BYTES && !bytes.is_empty());
            assert_eq!(part_ref.bytes, bytes.len() as u64);
            std::str::from_utf8(bytes).unwrap();
        }
        assert_eq!(merge(&manifest, &as_map(parts)).unwrap(), json);
    }

    #[test]
    fn the_manifest_serializes_in_camel_case_and_round_trips() {
        let (manifest, _) = split(b"{}", "cfg", 16);
        let json = serde_json::to_value(&manifest).unwrap();
        assert_eq!(json["parts"][0]["sha256"], digest(b"{}"));
        assert_eq!(json["parts"][0]["bytes"], 2);
        assert_eq!(serde_json::from_value::<Manifest>(json).unwrap(), manifest);
    }

    #[test]
    fn cuts_never_split_a_utf8_character() {
        // Every alignment of every character width against every part size near it.
        for ch in ["a", "é", "€", "😀"] {
            for prefix in 0..8 {
                let text = format!("{}{}", "x".repeat(prefix), ch.repeat(50));
                for max_part in 0..12 {
                    let (manifest, parts) = split(text.as_bytes(), "c", max_part);
                    for (_, bytes) in &parts {
                        assert!(bytes.len() <= max_part.max(MIN_PART_BYTES));
                        std::str::from_utf8(bytes).unwrap_or_else(|e| panic!("{ch} {prefix} {max_part}: {e}"));
                    }
                    assert_eq!(merge(&manifest, &as_map(parts)).unwrap(), text.as_bytes());
                }
            }
        }
    }

    #[test]
    fn non_utf8_input_is_still_split_losslessly() {
        let bytes = vec![0x80u8; 37];
        let (manifest, parts) = split(&bytes, "c", 8);
        assert!(parts.iter().all(|(_, p)| p.len() <= 8));
        assert_eq!(merge(&manifest, &as_map(parts)).unwrap(), bytes);
    }

    #[test]
    fn a_missing_part_is_refused() {
        let (manifest, parts) = split(&big_config(), "cfg", MAX_PART_BYTES);
        let mut map = as_map(parts);
        map.remove("cfg-2");
        assert_eq!(merge(&manifest, &map), Err(BundleError::MissingPart("cfg-2".into())));
    }

    #[test]
    fn a_corrupt_or_foreign_part_is_refused() {
        let json = "é".repeat(5_000);
        let (manifest, parts) = split(json.as_bytes(), "cfg", 1_000);
        let map = as_map(parts);

        let mut flipped = map.clone();
        flipped.get_mut("cfg-1").unwrap()[10] ^= 0x01;
        assert_eq!(merge(&manifest, &flipped), Err(BundleError::Corrupt("cfg-1".into())));

        let mut truncated = map.clone();
        truncated.get_mut("cfg-3").unwrap().pop();
        assert_eq!(merge(&manifest, &truncated), Err(BundleError::Corrupt("cfg-3".into())));

        // A part from the next generation, the same size, beside this manifest.
        let (_, next) = split("è".repeat(5_000).as_bytes(), "cfg", 1_000);
        let mut mixed = map.clone();
        mixed.insert("cfg-0".into(), next[0].1.clone());
        assert_eq!(merge(&manifest, &mixed), Err(BundleError::Corrupt("cfg-0".into())));

        assert_eq!(merge(&manifest, &map).unwrap(), json.as_bytes());
    }

    #[test]
    fn merge_follows_manifest_order_not_map_order_and_ignores_leftovers() {
        // Twelve parts: names sort as -0, -1, -10, -11, -2, … in the map.
        let json: Vec<u8> = (0..1_200u32).flat_map(|i| format!("{i:04}").into_bytes()).collect();
        let (manifest, parts) = split(&json, "cfg", 400);
        assert_eq!(manifest.parts.len(), 12);
        let mut map: BTreeMap<String, Vec<u8>> = parts.into_iter().rev().collect();
        map.insert("cfg-12".into(), b"left over from a bigger config".to_vec());
        assert_eq!(merge(&manifest, &map).unwrap(), json);
    }

    #[test]
    fn an_unknown_manifest_version_is_refused() {
        let (mut manifest, parts) = split(b"{}", "cfg", 16);
        manifest.version = 2;
        assert_eq!(merge(&manifest, &as_map(parts)), Err(BundleError::UnknownVersion(2)));
    }
}
