//! `POST /v1/messages` and `POST /v1/messages/count_tokens`: the Anthropic Messages API as an
//! ingress, for Anthropic SDKs and coding agents. The body is read under the size limit, `model`
//! is peeked at without copying the rest, routed and checked against the caller's allowlists
//! exactly like a chat completion, and — for `anthropic` providers only — forwarded byte for
//! byte with the provider's key in place of the caller's token. The answer (JSON, SSE or an
//! upstream error, all already Anthropic-shaped) is relayed frame by frame.
//!
//! Errors the gateway raises itself on these routes are meant to be answered with
//! [`GatewayError::into_anthropic_response`], the shape Anthropic SDKs parse.

use std::borrow::Cow;

use http::{HeaderMap, HeaderName, Method, Request, Response, Uri};
use http_body_util::BodyExt as _;
use hyper::body::Incoming;
use serde::Deserialize;
use uprox_crds::provider::ProviderType;

use crate::body::{Body, read_limited};
use crate::error::GatewayError;
use crate::policy;
use crate::relay::Relay;
use crate::router::Context;
use crate::snapshot::ProviderEntry;
use crate::upstream::Call;

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
pub async fn create(ctx: &Context<'_>, request: Request<Incoming>) -> Result<Response<Body>, GatewayError> {
    forward(ctx, request, Target::Create).await
}

/// Handles `POST /v1/messages/count_tokens`.
pub async fn count_tokens(ctx: &Context<'_>, request: Request<Incoming>) -> Result<Response<Body>, GatewayError> {
    forward(ctx, request, Target::CountTokens).await
}

/// The only field read from the body; the original bytes are what goes upstream.
#[derive(Deserialize)]
struct Head<'a> {
    #[serde(borrow)]
    model: Option<Cow<'a, str>>,
}

/// The `model` of a request body, which must be a JSON object. (The same check as the chat
/// handler's, kept here so neither handler depends on the other's internals.)
fn peek_model(body: &[u8]) -> Result<Cow<'_, str>, GatewayError> {
    if body.iter().find(|b| !b.is_ascii_whitespace()) != Some(&b'{') {
        return Err(GatewayError::InvalidRequest("Request body must be a JSON object".into()));
    }
    let head: Head<'_> = serde_json::from_slice(body)
        .map_err(|e| GatewayError::InvalidRequest(format!("Request body must be valid JSON: {e}")))?;
    head.model.filter(|m| !m.is_empty()).ok_or(GatewayError::MissingField("model"))
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
) -> Result<Response<Body>, GatewayError> {
    let (parts, body) = request.into_parts();
    let declared =
        parts.headers.get(http::header::CONTENT_LENGTH).and_then(|v| v.to_str().ok()).and_then(|v| v.parse().ok());
    let body = read_limited(body, declared, ctx.gateway.settings.max_body_bytes).await?;
    let model = peek_model(&body)?;

    let snapshot = ctx.snapshot;
    let route = snapshot
        .route(ctx.caller.service_index, &model)
        .ok_or_else(|| GatewayError::UnknownModel(model.clone().into_owned()))?;
    let provider = &snapshot.providers[route.provider];
    policy::allows_provider(snapshot, &ctx.caller, provider)?;
    policy::allows_model(snapshot, &ctx.caller, &model)?;

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
    let call = Call {
        client: ctx.gateway.client(),
        provider,
        key: route.key,
        uri,
        request_id: ctx.request_id,
        idle_timeout: ctx.gateway.settings.read_timeout,
    };
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
    let mut response = Response::new(Relay::new(incoming, call.idle_timeout).boxed_unsync());
    *response.status_mut() = parts.status;
    *response.headers_mut() = headers;
    Ok(response)
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
    fn model_is_peeked_and_required() {
        let body = br#"{"max_tokens":5,"messages":[{"role":"user","content":"x"}],"model":"claude-x","x":{"a":[1]}}"#;
        assert_eq!(peek_model(body).unwrap(), "claude-x");
        assert!(matches!(peek_model(br#"{"messages":[]}"#), Err(GatewayError::MissingField("model"))));
        assert!(matches!(peek_model(br#"{"model":""}"#), Err(GatewayError::MissingField("model"))));
        assert!(matches!(peek_model(br#"["claude-x"]"#), Err(GatewayError::InvalidRequest(_))));
        assert!(matches!(peek_model(b""), Err(GatewayError::InvalidRequest(_))));
        assert!(matches!(peek_model(br#"{"model": 5}"#), Err(GatewayError::InvalidRequest(_))));
    }

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
