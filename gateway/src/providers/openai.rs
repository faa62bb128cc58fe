//! OpenAI and OpenAI-compatible upstreams: the request body is forwarded byte for byte (the
//! gateway reads it but does not rewrite it), the provider key replaces the caller's token, and
//! the response is relayed frame by frame as it arrives — SSE included — with bounded memory.
//!
//! Transport failures and key rejections are mapped by [`Call::send`]; other upstream errors pass
//! through with their status and body, which are already OpenAI-shaped.

use bytes::Bytes;
use http::{HeaderMap, HeaderName, Method, Response};
use http_body_util::{BodyExt as _, Limited};

use crate::body::Body;
use crate::error::GatewayError;
use crate::relay::Relay;
use crate::upstream::Call;

/// Client headers forwarded upstream; everything else (notably `authorization`) is dropped.
const FORWARDED_REQUEST_HEADERS: &[&str] = &["accept", "openai-beta", "user-agent"];
/// Upstream headers relayed to the client.
const RELAYED_RESPONSE_HEADERS: &[&str] = &[
    "content-type",
    "cache-control",
    "retry-after",
    "openai-processing-ms",
    "x-ratelimit-limit-requests",
    "x-ratelimit-remaining-requests",
    "x-ratelimit-reset-requests",
    "x-ratelimit-limit-tokens",
    "x-ratelimit-remaining-tokens",
    "x-ratelimit-reset-tokens",
];
/// Largest model listing read from an upstream.
const MAX_LISTING_BYTES: usize = 4 * 1024 * 1024;

static UPSTREAM_REQUEST_ID: HeaderName = HeaderName::from_static("x-upstream-request-id");

/// Sends `body` upstream with the provider's key and relays the answer.
pub async fn forward(call: Call<'_>, body: Bytes, client_headers: &HeaderMap) -> Result<Response<Body>, GatewayError> {
    let mut upstream_request = call.request(Method::POST, body);
    for name in FORWARDED_REQUEST_HEADERS {
        if let Some(v) = client_headers.get(*name) {
            upstream_request.headers_mut().insert(*name, v.clone());
        }
    }
    let (parts, incoming) = call.send(upstream_request).await?.into_parts();
    let status = parts.status;
    let mut headers = HeaderMap::with_capacity(4);
    for name in RELAYED_RESPONSE_HEADERS {
        if let Some(v) = parts.headers.get(*name) {
            headers.insert(*name, v.clone());
        }
    }
    if let Some(v) = parts.headers.get("x-request-id") {
        headers.insert(&UPSTREAM_REQUEST_ID, v.clone());
    }
    let mut response = Response::new(Relay::new(incoming, call.idle_timeout).boxed_unsync());
    *response.status_mut() = status;
    *response.headers_mut() = headers;
    Ok(response)
}

/// Fetches `{base}/models` and returns the model ids, for listings.
pub async fn list_models(call: Call<'_>) -> Result<Vec<String>, String> {
    let fetch = async {
        let response = call.send(call.request(Method::GET, Bytes::new())).await.map_err(|e| e.to_string())?;
        if !response.status().is_success() {
            return Err(format!("HTTP {}", response.status().as_u16()));
        }
        let bytes = Limited::new(response.into_body(), MAX_LISTING_BYTES)
            .collect()
            .await
            .map_err(|e| format!("unreadable listing: {e}"))?
            .to_bytes();
        #[derive(serde::Deserialize)]
        struct Listing {
            data: Vec<Entry>,
        }
        #[derive(serde::Deserialize)]
        struct Entry {
            id: String,
        }
        let listing: Listing = serde_json::from_slice(&bytes).map_err(|e| format!("unreadable listing: {e}"))?;
        Ok(listing.data.into_iter().map(|e| e.id).collect())
    };
    tokio::time::timeout(call.idle_timeout, fetch).await.map_err(|_| "timed out".to_owned())?
}
