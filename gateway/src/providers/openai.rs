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
use crate::models_cache::Listed;
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
    forward_with(call, Method::POST, body, client_headers).await
}

/// [`forward`] with another method (`GET` and `DELETE` of stored responses).
pub async fn forward_with(
    mut call: Call<'_>,
    method: Method,
    body: Bytes,
    client_headers: &HeaderMap,
) -> Result<Response<Body>, GatewayError> {
    let mut upstream_request = call.request(method, body);
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
    let mut response = Response::new(call.relay(&parts, incoming).boxed_unsync());
    *response.status_mut() = status;
    *response.headers_mut() = headers;
    Ok(response)
}

/// Fetches a model listing — OpenAI's `{base}/models` or Anthropic's `{base}/v1/models`, both
/// `{"data": [{"id", …}]}` — within the call's `idle_timeout`. OpenAI entries carry `created`
/// and `owned_by`; Anthropic's carry `created_at` (RFC 3339), read as `created`.
pub async fn list_models(call: Call<'_>) -> Result<Vec<Listed>, String> {
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
        parse_listing(&bytes)
    };
    tokio::time::timeout(call.idle_timeout, fetch).await.map_err(|_| "timed out".to_owned())?
}

/// The models of a listing body.
pub fn parse_listing(body: &[u8]) -> Result<Vec<Listed>, String> {
    #[derive(serde::Deserialize)]
    struct Listing {
        data: Vec<Entry>,
    }
    #[derive(serde::Deserialize)]
    struct Entry {
        id: String,
        created: Option<u64>,
        owned_by: Option<String>,
        created_at: Option<String>,
    }
    let listing: Listing = serde_json::from_slice(body).map_err(|e| format!("unreadable listing: {e}"))?;
    Ok(listing
        .data
        .into_iter()
        .map(|e| {
            let created = e.created.or_else(|| {
                let at = e.created_at?.parse::<k8s_openapi::jiff::Timestamp>().ok()?;
                u64::try_from(at.as_second()).ok()
            });
            Listed { id: e.id.into(), created: created.unwrap_or(0), owned_by: e.owned_by.map(Into::into) }
        })
        .collect())
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn listings_of_openai_and_anthropic_are_read() {
        let openai = br#"{"object":"list","data":[{"id":"gpt-4o","object":"model","created":1715367049,"owned_by":"system"},{"id":"x"}]}"#;
        let models = parse_listing(openai).unwrap();
        assert_eq!(models[0], Listed { id: "gpt-4o".into(), created: 1_715_367_049, owned_by: Some("system".into()) });
        assert_eq!(models[1], Listed { id: "x".into(), created: 0, owned_by: None });

        let anthropic = br#"{"data":[{"type":"model","id":"claude-sonnet-4-20250514","display_name":"Claude Sonnet 4","created_at":"2025-05-22T00:00:00Z"}],"has_more":false,"first_id":"a","last_id":"b"}"#;
        let models = parse_listing(anthropic).unwrap();
        assert_eq!(&*models[0].id, "claude-sonnet-4-20250514");
        assert_eq!(models[0].created, 1_747_872_000);

        assert!(parse_listing(b"{}").is_err());
        assert!(parse_listing(b"<html>").is_err());
    }
}
