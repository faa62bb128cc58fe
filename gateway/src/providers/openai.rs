//! OpenAI and OpenAI-compatible upstreams: the request body is forwarded byte for byte (the
//! gateway reads it but does not rewrite it), the provider key replaces the caller's token, and
//! the response is relayed frame by frame as it arrives — SSE included — with bounded memory.
//!
//! Upstream failures are mapped here: no connection → 502, no response headers in time → 504,
//! the provider refusing *our* key (401/403) → 502 without the upstream's body (OpenAI's 401
//! body quotes part of the key). Other upstream errors pass through with their status and body,
//! which are already OpenAI-shaped.

use std::time::Duration;

use bytes::Bytes;
use http::{HeaderMap, HeaderName, HeaderValue, Method, Request, Response, StatusCode, Uri, header};
use http_body_util::{BodyExt as _, Full, Limited};

use crate::body::Body;
use crate::error::GatewayError;
use crate::relay::Relay;
use crate::snapshot::ProviderEntry;
use crate::upstream::{self, Client};

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

static CLIENT_REQUEST_ID: HeaderName = HeaderName::from_static("x-client-request-id");
static UPSTREAM_REQUEST_ID: HeaderName = HeaderName::from_static("x-upstream-request-id");
static JSON: HeaderValue = HeaderValue::from_static("application/json");

/// One upstream call.
pub struct Call<'a> {
    /// The client of this thread.
    pub client: &'a Client,
    /// Where to.
    pub provider: &'a ProviderEntry,
    /// Index of the key to use.
    pub key: Option<usize>,
    /// The URI.
    pub uri: &'a Uri,
    /// This request's id, passed on as `x-client-request-id`.
    pub request_id: &'a HeaderValue,
    /// How long a streaming upstream may stay silent.
    pub idle_timeout: Duration,
}

fn request(call: &Call<'_>, method: Method, body: Bytes) -> Request<Full<Bytes>> {
    let mut request = Request::new(Full::new(body));
    *request.method_mut() = method;
    *request.uri_mut() = call.uri.clone();
    let headers = request.headers_mut();
    headers.insert(header::CONTENT_TYPE, JSON.clone());
    headers.insert(&CLIENT_REQUEST_ID, call.request_id.clone());
    if let Some(k) = call.key.and_then(|k| call.provider.keys.get(k)) {
        headers.insert(header::AUTHORIZATION, k.auth.clone());
    }
    request
}

/// Sends `body` upstream with the provider's key and relays the answer.
pub async fn forward(call: Call<'_>, body: Bytes, client_headers: &HeaderMap) -> Result<Response<Body>, GatewayError> {
    let mut upstream_request = request(&call, Method::POST, body);
    for name in FORWARDED_REQUEST_HEADERS {
        if let Some(v) = client_headers.get(*name) {
            upstream_request.headers_mut().insert(*name, v.clone());
        }
    }
    let timeout = call.provider.config.timeout_seconds;
    let sent =
        tokio::time::timeout(Duration::from_secs(u64::from(timeout)), call.client.request(upstream_request)).await;
    let upstream = match sent {
        Err(_) => return Err(GatewayError::UpstreamTimeout(timeout)),
        Ok(Err(e)) => {
            tracing::warn!(provider = %call.provider.config.id, error = %e, "upstream request failed");
            return Err(GatewayError::UpstreamUnavailable(upstream::describe(&e).to_owned()));
        }
        Ok(Ok(r)) => r,
    };
    let status = upstream.status();
    if status == StatusCode::UNAUTHORIZED || status == StatusCode::FORBIDDEN {
        tracing::error!(provider = %call.provider.config.id, status = status.as_u16(), "upstream rejected the provider key");
        return Err(GatewayError::UpstreamRejectedKey(status.as_u16()));
    }
    let (parts, incoming) = upstream.into_parts();
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
        let response = call
            .client
            .request(request(&call, Method::GET, Bytes::new()))
            .await
            .map_err(|e| upstream::describe(&e).to_owned())?;
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
