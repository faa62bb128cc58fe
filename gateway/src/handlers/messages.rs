//! `POST /v1/messages` and `POST /v1/messages/count_tokens`: the Anthropic Messages API as an
//! ingress, for Anthropic SDKs and coding agents. The body is read under the size limit, `model`
//! is peeked at without copying the rest, routed and checked against the caller's allowlists
//! exactly like a chat completion, and — for `anthropic` providers only — forwarded byte for
//! byte with the provider's key in place of the caller's token. The answer (JSON, SSE or an
//! upstream error, all already Anthropic-shaped) is relayed frame by frame.
//!
//! Errors the gateway raises itself on these routes are meant to be answered with
//! [`GatewayError::into_anthropic_response`], the shape Anthropic SDKs parse.

use http::{HeaderMap, HeaderName, Method, Request, Response, Uri};
use http_body_util::BodyExt as _;
use hyper::body::Incoming;
use uprox_crds::provider::ProviderType;

use crate::body::Body;
use crate::error::GatewayError;
use crate::handlers::routing;
use crate::limits::Admission;
use crate::router::Context;
use crate::snapshot::ProviderEntry;
use crate::spend::scan::Wire;

/// Upstream headers relayed to the client, besides every `anthropic-ratelimit-*` header.
const RELAYED_RESPONSE_HEADERS: &[&str] = &["content-type", "cache-control", "request-id", "retry-after"];
/// Prefix of Anthropic's rate-limit headers, all relayed.
const RATELIMIT_PREFIX: &str = "anthropic-ratelimit-";

static ANTHROPIC_VERSION: HeaderName = HeaderName::from_static("anthropic-version");
static ANTHROPIC_BETA: HeaderName = HeaderName::from_static("anthropic-beta");

/// Which Messages API endpoint a request is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Target {
    /// `/v1/messages`.
    Create,
    /// `/v1/messages/count_tokens`.
    CountTokens,
}

/// Handles `POST /v1/messages`: one message, streamed (`"stream": true`) or not.
pub async fn create(
    ctx: &Context<'_>,
    request: Request<Incoming>,
    admission: Option<Admission>,
) -> Result<Response<Body>, GatewayError> {
    forward(ctx, request, Target::Create, admission).await
}

/// Handles `POST /v1/messages/count_tokens` (free: not metered, no budget check).
pub async fn count_tokens(ctx: &Context<'_>, request: Request<Incoming>) -> Result<Response<Body>, GatewayError> {
    forward(ctx, request, Target::CountTokens, None).await
}

/// `{base}/v1/messages/count_tokens` for a provider.
fn count_tokens_url(provider: &ProviderEntry) -> Result<Uri, GatewayError> {
    format!("{}/v1/messages/count_tokens", provider.config.base_url.trim_end_matches('/')).parse().map_err(
        |e: http::uri::InvalidUri| {
            tracing::warn!(provider = %provider.config.id, error = %e, "invalid count_tokens URL");
            GatewayError::UpstreamUnavailable("the provider's base URL is invalid".to_owned())
        },
    )
}

async fn forward(
    ctx: &Context<'_>,
    request: Request<Incoming>,
    target: Target,
    admission: Option<Admission>,
) -> Result<Response<Body>, GatewayError> {
    let (parts, body) = request.into_parts();
    let body = routing::read_body(ctx, &parts, body).await?;
    let head = routing::parse_head(&body)?;
    let model = head.model()?;
    let (provider, route) = routing::route(ctx, model)?;

    if provider.kind() != ProviderType::Anthropic {
        return Err(GatewayError::InvalidRequest(format!(
            "The model `{model}` is served by a provider that does not speak the Anthropic Messages API \
             (type {}); use /v1/chat/completions for this model",
            provider.kind().as_str()
        )));
    }
    let count_uri;
    let uri = match target {
        Target::Create => provider.chat_url.as_ref().ok_or(GatewayError::Unsupported(provider.kind().as_str()))?,
        Target::CountTokens => {
            count_uri = count_tokens_url(provider)?;
            &count_uri
        }
    };
    let (meter, warning) = match target {
        Target::Create => {
            let (meter, warning) = routing::meter(ctx, route, model, Wire::Anthropic, &head, body.len(), admission)?;
            (Some(meter), warning)
        }
        Target::CountTokens => (None, None),
    };
    let mut call = routing::call(ctx, provider, route, uri, meter);
    // A reference-counted handle: `model` above still borrows the buffer.
    let mut upstream_request = call.request(Method::POST, body.clone());
    copy_client_headers(&parts.headers, upstream_request.headers_mut());

    let (parts, incoming) = call.send(upstream_request).await?.into_parts();
    let mut headers = HeaderMap::with_capacity(8);
    for (name, value) in &parts.headers {
        if RELAYED_RESPONSE_HEADERS.contains(&name.as_str()) || name.as_str().starts_with(RATELIMIT_PREFIX) {
            headers.append(name, value.clone());
        }
    }
    let mut response = Response::new(call.relay(&parts, incoming).boxed_unsync());
    *response.status_mut() = parts.status;
    *response.headers_mut() = headers;
    routing::finish(ctx, Ok(response), warning, None)
}

/// The client's `anthropic-version` replaces the provider's, and its `anthropic-beta` flags are
/// passed on; nothing else of the client's (notably its uprox token) goes upstream.
fn copy_client_headers(client: &HeaderMap, upstream: &mut HeaderMap) {
    if let Some(version) = client.get(&ANTHROPIC_VERSION) {
        upstream.insert(&ANTHROPIC_VERSION, version.clone());
    }
    for beta in client.get_all(&ANTHROPIC_BETA) {
        upstream.append(&ANTHROPIC_BETA, beta.clone());
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use http::HeaderValue;

    use super::*;

    #[test]
    fn client_version_and_betas_are_passed_on_and_nothing_else() {
        let mut client = HeaderMap::new();
        client.insert("anthropic-version", HeaderValue::from_static("2023-01-01"));
        client.append("anthropic-beta", HeaderValue::from_static("a-1"));
        client.append("anthropic-beta", HeaderValue::from_static("b-2"));
        client.insert("x-api-key", HeaderValue::from_static("uprox_live_secret"));
        client.insert("authorization", HeaderValue::from_static("Bearer uprox_live_secret"));
        let mut upstream = HeaderMap::new();
        upstream.insert("anthropic-version", HeaderValue::from_static("2023-06-01"));
        upstream.insert("x-api-key", HeaderValue::from_static("sk-provider"));
        copy_client_headers(&client, &mut upstream);
        assert_eq!(upstream["anthropic-version"], "2023-01-01");
        assert_eq!(upstream.get_all("anthropic-beta").iter().collect::<Vec<_>>(), ["a-1", "b-2"]);
        assert_eq!(upstream["x-api-key"], "sk-provider");
        assert!(!upstream.contains_key("authorization"));

        let mut upstream = HeaderMap::new();
        upstream.insert("anthropic-version", HeaderValue::from_static("2023-06-01"));
        copy_client_headers(&HeaderMap::new(), &mut upstream);
        assert_eq!(upstream["anthropic-version"], "2023-06-01", "ours when the client sends none");
    }
}
