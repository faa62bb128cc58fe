//! Body types: the one boxed response body every handler returns, and reading a request body
//! into memory under a size limit (413 beyond it, decided from `Content-Length` before reading
//! when the client sends one).

use bytes::Bytes;
use http_body_util::combinators::UnsyncBoxBody;
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Incoming;

use crate::error::GatewayError;

/// Errors a response body may yield while streaming.
pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// The response body of every route.
pub type Body = UnsyncBoxBody<Bytes, BoxError>;

/// A body of known bytes.
pub fn full(bytes: impl Into<Bytes>) -> Body {
    Full::new(bytes.into()).map_err(|never| match never {}).boxed_unsync()
}

/// Reads the whole request body, refusing more than `limit` bytes.
pub async fn read_limited(body: Incoming, declared_len: Option<u64>, limit: usize) -> Result<Bytes, GatewayError> {
    if declared_len.is_some_and(|len| len > limit as u64) {
        return Err(GatewayError::PayloadTooLarge(limit));
    }
    match Limited::new(body, limit).collect().await {
        Ok(collected) => Ok(collected.to_bytes()),
        Err(e) if e.is::<http_body_util::LengthLimitError>() => Err(GatewayError::PayloadTooLarge(limit)),
        Err(e) => Err(GatewayError::InvalidRequest(format!("Could not read the request body: {e}"))),
    }
}
