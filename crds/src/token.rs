//! The machine-token format: `uprox_live_` followed by 32 random bytes in unpadded base64url
//! (54 characters in all), stored only as the lowercase hex SHA-256 of the whole string.
//!
//! This module formats, recognises and digests tokens. It does not draw the random bytes: the
//! caller brings them from the operating system's CSPRNG, so this crate stays free of IO.

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use sha2::{Digest as _, Sha256};

/// Every machine token starts with this.
pub const PREFIX: &str = "uprox_live_";
/// Length of a well-formed token: the prefix and 43 base64url characters.
pub const LENGTH: usize = PREFIX.len() + 43;
/// The key of the token in the Secret that holds it.
pub const SECRET_KEY: &str = "token";
/// Label on a token Secret naming the MachineToken it belongs to.
pub const SECRET_LABEL: &str = "uprox.dev/machine-token";
/// Annotation on a token Secret recording the `spec.rotation` it was issued for.
pub const ROTATION_ANNOTATION: &str = "uprox.dev/rotation";
/// Annotation on a token Secret recording when it was issued (RFC 3339).
pub const ISSUED_AT_ANNOTATION: &str = "uprox.dev/issued-at";

/// Builds a token from 32 random bytes.
pub fn format(random: &[u8; 32]) -> String {
    let mut token = String::with_capacity(LENGTH);
    token.push_str(PREFIX);
    URL_SAFE_NO_PAD.encode_string(random, &mut token);
    token
}

/// Whether a presented credential has the shape of a token. Checked before any lookup.
pub fn is_well_formed(candidate: &str) -> bool {
    candidate.len() == LENGTH
        && candidate.starts_with(PREFIX)
        && candidate.as_bytes()[PREFIX.len()..].iter().all(|b| b.is_ascii_alphanumeric() || *b == b'-' || *b == b'_')
}

/// The SHA-256 of the whole token, prefix included.
pub fn digest(token: &str) -> [u8; 32] {
    Sha256::digest(token.as_bytes()).into()
}

/// The digest as it is written in the compiled config: lowercase hex.
pub fn digest_hex(token: &str) -> String {
    hex::encode(digest(token))
}

/// What a person may be shown of a token: the prefix, six characters, an ellipsis, the last four.
pub fn display(token: &str) -> String {
    let secret = token.strip_prefix(PREFIX).unwrap_or(token);
    let head: String = secret.chars().take(6).collect();
    let count = secret.chars().count();
    let tail: String = secret.chars().skip(count.saturating_sub(4)).collect();
    format!("{PREFIX}{head}…{tail}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn format_has_prefix_and_length() {
        let token = format(&[7u8; 32]);
        assert!(token.starts_with(PREFIX));
        assert_eq!(token.len(), LENGTH);
        assert!(is_well_formed(&token));
    }

    #[test]
    fn different_bytes_give_different_tokens() {
        assert_ne!(format(&[1u8; 32]), format(&[2u8; 32]));
    }

    #[test]
    fn malformed_tokens_are_recognised() {
        let good = format(&[9u8; 32]);
        assert!(!is_well_formed(""));
        assert!(!is_well_formed("sk-abc"));
        assert!(!is_well_formed(&good[..LENGTH - 1]));
        assert!(!is_well_formed(&format!("{good}x")));
        let bad_char = format!("{}{}", PREFIX, "!".repeat(43));
        assert!(!is_well_formed(&bad_char));
    }

    #[test]
    fn digest_is_sha256_hex_of_the_whole_token() {
        // sha256("abc"), a published test vector.
        assert_eq!(digest_hex("abc"), "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
    }

    #[test]
    fn display_masks_the_middle() {
        let token = format!("{PREFIX}abcdef{}wxyz", "0".repeat(33));
        assert_eq!(display(&token), "uprox_live_abcdef…wxyz");
    }
}
