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
use http::{HeaderMap, HeaderName, HeaderValue, Response, StatusCode, header};
use http_body_util::BodyExt as _;
use reqwest::Url;

use crate::body::Body;
use crate::error::GatewayError;
use crate::relay::Relay;
use crate::snapshot::ProviderEntry;

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

static CLIENT_REQUEST_ID: HeaderName = HeaderName::from_static("x-client-request-id");
static UPSTREAM_REQUEST_ID: HeaderName = HeaderName::from_static("x-upstream-request-id");

/// Sends `body` to `url` with the provider's key and relays the answer.
pub async fn forward(
    client: &reqwest::Client,
    provider: &ProviderEntry,
    key: Option<usize>,
    url: &Url,
    body: Bytes,
    client_headers: &HeaderMap,
    request_id: &HeaderValue,
) -> Result<Response<Body>, GatewayError> {
    let mut request = client
        .post(url.clone())
        .header(header::CONTENT_TYPE, "application/json")
        .header(&CLIENT_REQUEST_ID, request_id.clone());
    if let Some(k) = key.and_then(|k| provider.keys.get(k)) {
        request = request.header(header::AUTHORIZATION, k.auth.clone());
    }
    for name in FORWARDED_REQUEST_HEADERS {
        if let Some(v) = client_headers.get(*name) {
            request = request.header(*name, v.clone());
        }
    }
    let timeout = provider.config.timeout_seconds;
    let sent = tokio::time::timeout(Duration::from_secs(u64::from(timeout)), request.body(body).send()).await;
    let upstream = match sent {
        Err(_) => return Err(GatewayError::UpstreamTimeout(timeout)),
        Ok(Err(e)) if e.is_timeout() => return Err(GatewayError::UpstreamTimeout(timeout)),
        Ok(Err(e)) => {
            tracing::warn!(provider = %provider.config.id, error = %e, "upstream request failed");
            return Err(GatewayError::UpstreamUnavailable(describe(&e)));
        }
        Ok(Ok(r)) => r,
    };
    let status = upstream.status();
    if status == StatusCode::UNAUTHORIZED || status == StatusCode::FORBIDDEN {
        tracing::error!(provider = %provider.config.id, status = status.as_u16(), "upstream rejected the provider key");
        return Err(GatewayError::UpstreamRejectedKey(status.as_u16()));
    }
    Ok(relay(upstream))
}

/// Turns the upstream response into ours: status, selected headers, body frame by frame.
fn relay(upstream: reqwest::Response) -> Response<Body> {
    let status = upstream.status();
    let mut headers = HeaderMap::with_capacity(4);
    for name in RELAYED_RESPONSE_HEADERS {
        if let Some(v) = upstream.headers().get(*name) {
            headers.insert(*name, v.clone());
        }
    }
    if let Some(v) = upstream.headers().get("x-request-id") {
        headers.insert(&UPSTREAM_REQUEST_ID, v.clone());
    }
    let body: http::Response<reqwest::Body> = upstream.into();
    let mut response = Response::new(Relay::new(body.into_body()).boxed_unsync());
    *response.status_mut() = status;
    *response.headers_mut() = headers;
    response
}

/// A short, key-free description of a transport error.
fn describe(e: &reqwest::Error) -> String {
    if e.is_connect() {
        "connection failed".to_owned()
    } else if e.is_request() {
        "the request could not be sent".to_owned()
    } else {
        "the response could not be read".to_owned()
    }
}

/// Fetches `{base}/models` and returns the model ids, for listings.
pub async fn list_models(
    client: &reqwest::Client,
    provider: &ProviderEntry,
    timeout: Duration,
) -> Result<Vec<String>, String> {
    let Some(url) = &provider.models_url else {
        return Ok(Vec::new());
    };
    let mut request = client.get(url.clone());
    if let Some(k) = provider.keys.first() {
        request = request.header(header::AUTHORIZATION, k.auth.clone());
    }
    let fetch = async {
        let response = request.send().await.map_err(|e| describe(&e))?;
        if !response.status().is_success() {
            return Err(format!("HTTP {}", response.status().as_u16()));
        }
        let bytes = response.bytes().await.map_err(|e| describe(&e))?;
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
    tokio::time::timeout(timeout, fetch).await.map_err(|_| "timed out".to_owned())?
}
