//! Authentication: finds the caller's credential in the headers, digests it and looks it up in
//! the snapshot. Nothing is stored or compared in plaintext; a credential without the token
//! shape is refused before any lookup.
//!
//! Precedence: `Authorization: Bearer` (scheme case-insensitive), then `api-key` (Azure SDKs),
//! then `x-api-key` (Anthropic SDKs). A non-Bearer `Authorization` falls through.

use http::HeaderMap;
use uprox_crds::token;

use crate::error::GatewayError;
use crate::snapshot::{ServiceEntry, Snapshot, TokenEntry};

/// The authenticated caller of one request.
#[derive(Debug, Clone, Copy)]
pub struct Caller<'s> {
    /// Its token.
    pub token: &'s TokenEntry,
    /// The Service the token acts for.
    pub service: &'s ServiceEntry,
    /// Index of that Service.
    pub service_index: usize,
    /// The SHA-256 of its token (names it in the snapshot; never logged).
    pub digest: [u8; 32],
}

/// The credential presented, if any.
pub fn credential(headers: &HeaderMap) -> Option<&str> {
    if let Some(value) = headers.get(http::header::AUTHORIZATION).and_then(|v| v.to_str().ok()) {
        let value = value.trim();
        if value.len() > 7 && value.as_bytes()[..7].eq_ignore_ascii_case(b"bearer ") {
            return Some(value[7..].trim());
        }
    }
    ["api-key", "x-api-key"]
        .into_iter()
        .find_map(|name| headers.get(name).and_then(|v| v.to_str().ok()).map(str::trim).filter(|v| !v.is_empty()))
}

/// Authenticates a request against the snapshot at time `now` (Unix seconds).
pub fn authenticate<'s>(snapshot: &'s Snapshot, headers: &HeaderMap, now: i64) -> Result<Caller<'s>, GatewayError> {
    let presented = credential(headers).ok_or(GatewayError::MissingCredential)?;
    if !token::is_well_formed(presented) {
        return Err(GatewayError::InvalidCredential);
    }
    let digest = token::digest(presented);
    let entry = snapshot.token(&digest).ok_or(GatewayError::InvalidCredential)?;
    if entry.expires_at.is_some_and(|at| now >= at) {
        return Err(GatewayError::InvalidCredential);
    }
    let service = &snapshot.services[entry.service];
    if let Some(why) = entry.denied.as_ref().or(service.denied.as_ref()) {
        return Err(GatewayError::Forbidden(why.clone()));
    }
    Ok(Caller { token: entry, service, service_index: entry.service, digest })
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::HeaderValue;

    fn headers(pairs: &[(&'static str, &'static str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.insert(*k, HeaderValue::from_static(v));
        }
        h
    }

    #[test]
    fn bearer_wins_and_is_case_insensitive() {
        assert_eq!(credential(&headers(&[("authorization", "bearer abc"), ("api-key", "def")])), Some("abc"));
        assert_eq!(credential(&headers(&[("authorization", "BEARER   abc ")])), Some("abc"));
    }

    #[test]
    fn non_bearer_authorization_falls_through() {
        assert_eq!(credential(&headers(&[("authorization", "Basic Zm9v"), ("api-key", "def")])), Some("def"));
        assert_eq!(credential(&headers(&[("x-api-key", "xyz")])), Some("xyz"));
        assert_eq!(credential(&headers(&[("authorization", "Basic Zm9v")])), None);
        assert_eq!(credential(&headers(&[("api-key", "  ")])), None);
    }

    #[test]
    fn missing_and_malformed_credentials() {
        let snap = Snapshot::default();
        assert!(matches!(authenticate(&snap, &HeaderMap::new(), 0), Err(GatewayError::MissingCredential)));
        assert!(matches!(
            authenticate(&snap, &headers(&[("authorization", "Bearer sk-123")]), 0),
            Err(GatewayError::InvalidCredential)
        ));
    }
}
