//! `POST /v1/chat/completions`: reads the body under the size limit, peeks at `model` without
//! copying the rest, routes the model to a provider the caller may use, applies the allowlists
//! and hands the body to the provider's wire format: untouched for OpenAI-shaped upstreams,
//! translated for Anthropic, answered in-process by the mock.

use std::borrow::Cow;

use http::{Request, Response};
use hyper::body::Incoming;
use serde::Deserialize;
use uprox_crds::provider::ProviderType;

use crate::body::{Body, read_limited};
use crate::error::GatewayError;
use crate::policy;
use crate::providers::{anthropic, azure, mock, openai};
use crate::router::Context;
use crate::upstream;

/// The only fields the gateway reads on the passthrough path. Unknown fields are skipped by
/// the parser without being stored; the original bytes are what goes upstream.
#[derive(Deserialize)]
struct Head<'a> {
    #[serde(borrow)]
    model: Option<Cow<'a, str>>,
}

/// Handles one chat completion. `deployment` is the model named by an Azure deployment URL;
/// it wins over the body's `model`.
pub async fn completions(
    ctx: &Context<'_>,
    request: Request<Incoming>,
    deployment: Option<String>,
) -> Result<Response<Body>, GatewayError> {
    let (parts, body) = request.into_parts();
    let declared =
        parts.headers.get(http::header::CONTENT_LENGTH).and_then(|v| v.to_str().ok()).and_then(|v| v.parse().ok());
    let body = read_limited(body, declared, ctx.gateway.settings.max_body_bytes).await?;
    let head = parse_head(&body)?;
    let model = match deployment.as_deref() {
        Some(d) => d,
        None => head.model.as_deref().filter(|m| !m.is_empty()).ok_or(GatewayError::MissingField("model"))?,
    };

    let snapshot = ctx.snapshot;
    let route =
        snapshot.route(ctx.caller.service_index, model).ok_or_else(|| GatewayError::UnknownModel(model.to_owned()))?;
    let provider = &snapshot.providers[route.provider];
    policy::allows_provider(snapshot, &ctx.caller, provider)?;
    policy::allows_model(snapshot, &ctx.caller, model)?;

    // A deployment URL names the model; other upstreams read it from the body, so the body
    // gets it (the only case where the gateway rewrites an OpenAI-shaped body).
    let body = match deployment.as_deref() {
        Some(d) if provider.kind() != ProviderType::Azure && head.model.as_deref() != Some(d) => with_model(&body, d)?,
        // A reference-counted handle: `model` above may still borrow the buffer.
        _ => body.clone(),
    };
    if provider.kind() == ProviderType::Mock {
        return mock::respond(&body, None);
    }
    let azure_uri;
    let uri = match provider.kind() {
        ProviderType::Azure => {
            azure_uri = azure::chat_uri(provider, model)?;
            &azure_uri
        }
        _ => provider.chat_url.as_ref().ok_or(GatewayError::Unsupported(provider.kind().as_str()))?,
    };
    let call = upstream::Call {
        client: ctx.gateway.client(),
        provider,
        key: route.key,
        uri,
        request_id: ctx.request_id,
        idle_timeout: ctx.gateway.settings.read_timeout,
    };
    match provider.kind() {
        ProviderType::Openai | ProviderType::OpenaiCompatible | ProviderType::Azure => {
            openai::forward(call, body, &parts.headers).await
        }
        ProviderType::Anthropic => anthropic::forward::forward(call, &body).await,
        ProviderType::Mock => Err(GatewayError::Unsupported(provider.kind().as_str())),
    }
}

/// The body with `model` set, every other field kept.
fn with_model(body: &[u8], model: &str) -> Result<bytes::Bytes, GatewayError> {
    let mut object: serde_json::Map<String, serde_json::Value> = serde_json::from_slice(body)
        .map_err(|e| GatewayError::InvalidRequest(format!("Request body must be a JSON object: {e}")))?;
    object.insert("model".to_owned(), serde_json::Value::String(model.to_owned()));
    serde_json::to_vec(&object)
        .map(bytes::Bytes::from)
        .map_err(|e| GatewayError::InvalidRequest(format!("Request body could not be re-encoded: {e}")))
}

fn parse_head(body: &[u8]) -> Result<Head<'_>, GatewayError> {
    // serde would also accept a JSON array as a struct; a chat request must be an object.
    if body.iter().find(|b| !b.is_ascii_whitespace()) != Some(&b'{') {
        return Err(GatewayError::InvalidRequest("Request body must be a JSON object".into()));
    }
    serde_json::from_slice(body)
        .map_err(|e| GatewayError::InvalidRequest(format!("Request body must be valid JSON: {e}")))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn head_reads_model_and_ignores_the_rest() {
        let head = parse_head(br#"{"messages":[{"role":"user","content":"x"}],"model":"gpt-4o","extra":{"a":[1,2]}}"#)
            .unwrap();
        assert_eq!(head.model.as_deref(), Some("gpt-4o"));
        assert!(parse_head(br#"{"messages":[]}"#).unwrap().model.is_none());
    }

    #[test]
    fn head_refuses_non_objects_and_bad_json() {
        assert!(parse_head(br#"["gpt-4o"]"#).is_err());
        assert!(parse_head(b"").is_err());
        assert!(parse_head(br#"{"model": 5}"#).is_err());
        assert!(parse_head(br#"{"model":"x""#).is_err());
    }
}
