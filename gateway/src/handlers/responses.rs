//! OpenAI's Responses API: `POST /v1/responses` (also `/openai/responses`,
//! `/openai/v1/responses` and `/openai/deployments/{deployment}/responses` for Azure clients),
//! and the stored-response routes `GET`/`DELETE /v1/responses/{id}`,
//! `GET /v1/responses/{id}/input_items` and `POST /v1/responses/{id}/cancel`.
//!
//! Creating routes by model exactly like a chat completion (body under the size limit, `model`
//! peeked at, allowlists, key failover) and hands the body on: byte for byte to
//! `{base}/responses` for OpenAI-shaped upstreams and to `{endpoint}/openai/v1/responses` for
//! Azure (whose v1 surface reads the deployment from the body's `model`), translated for
//! Anthropic, answered in-process by the mock.
//!
//! A stored response is named by its id, not by a model, so those routes go to the first
//! `openai`, `openai-compatible` or `azure` Provider of the Service (in routing order) that the
//! caller's Policies allow; Anthropic and mock answers are never stored. The model allowlist
//! cannot apply (there is no model); the provider allowlist does.

use bytes::Bytes;
use http::{Method, Request, Response, Uri};
use hyper::body::Incoming;
use uprox_crds::provider::ProviderType;

use crate::body::Body;
use crate::cache::Endpoint;
use crate::error::GatewayError;
use crate::handlers::routing;
use crate::limits::Admission;
use crate::policy;
use crate::providers::{anthropic, mock, openai};
use crate::router::Context;
use crate::snapshot::{ProviderEntry, Route};
use crate::spend::scan::Wire;

/// Handles one `POST /v1/responses`. `deployment` is the model named by an Azure deployment
/// URL; it wins over the body's `model`.
pub async fn create(
    ctx: &Context<'_>,
    request: Request<Incoming>,
    deployment: Option<String>,
    admission: Option<Admission>,
) -> Result<Response<Body>, GatewayError> {
    let (parts, body) = request.into_parts();
    let body = routing::read_body(ctx, &parts, body).await?;
    let head = routing::parse_head(&body)?;
    let model = routing::model(deployment.as_deref(), &head)?;
    let (provider, route) = routing::route(ctx, model)?;
    let (cache, hit) = routing::look_up(ctx, Endpoint::Responses, provider, model, &head, &body, &parts.headers).await;
    if let Some(hit) = hit {
        return Ok(hit);
    }
    let wire = if provider.kind() == ProviderType::Anthropic { Wire::Anthropic } else { Wire::OpenAiResponses };
    let (meter, warning) = routing::meter(ctx, route, model, wire, &head, body.len(), admission)?;
    let cache = routing::recording(ctx, cache);

    // Every Responses upstream reads the model from the body, Azure's v1 surface included.
    let body = match deployment.as_deref() {
        Some(d) if head.model.as_deref() != Some(d) => routing::with_model(&body, d)?,
        // A reference-counted handle.
        _ => body.clone(),
    };
    let answer = match provider.kind() {
        ProviderType::Mock => {
            mock::responses::respond(&body).map(|response| routing::metered_local(ctx, response, meter, false))
        }
        ProviderType::Anthropic => {
            let uri = provider.chat_url.as_ref().ok_or(GatewayError::Unsupported(provider.kind().as_str()))?;
            anthropic::responses::forward(routing::call(ctx, provider, route, uri, Some(meter)), &body).await
        }
        ProviderType::Openai | ProviderType::OpenaiCompatible | ProviderType::Azure => {
            let uri = responses_url(provider)?;
            openai::forward(routing::call(ctx, provider, route, uri, Some(meter)), body, &parts.headers).await
        }
    };
    routing::finish(ctx, answer, warning, cache)
}

/// Handles the stored-response routes; `rest` is the path after `/responses/`: `{id}`,
/// `{id}/input_items` or `{id}/cancel` (the router has matched the method to the shape).
pub async fn stored(
    ctx: &Context<'_>,
    request: Request<Incoming>,
    rest: Option<String>,
) -> Result<Response<Body>, GatewayError> {
    let rest = rest.unwrap_or_default();
    let id = rest.split('/').next().unwrap_or_default();
    if !is_response_id(id) {
        return Err(GatewayError::InvalidParam {
            param: "response_id",
            message: format!("`{id}` is not a response id"),
        });
    }
    let (provider, route) = stateful_provider(ctx)?;
    let uri = stored_uri(responses_url(provider)?, &rest, request.uri().query())?;
    let (parts, body) = request.into_parts();
    let body = if parts.method == Method::POST { routing::read_body(ctx, &parts, body).await? } else { Bytes::new() };
    let call = routing::call(ctx, provider, route, &uri, None);
    openai::forward_with(call, parts.method.clone(), body, &parts.headers).await
}

/// The provider's Responses URL.
fn responses_url(provider: &ProviderEntry) -> Result<&Uri, GatewayError> {
    provider.responses_url.as_ref().ok_or_else(|| match provider.kind() {
        ProviderType::Azure => {
            GatewayError::UpstreamUnavailable("the Azure endpoint of this provider is not a valid URL".to_owned())
        }
        kind => GatewayError::Unsupported(kind.as_str()),
    })
}

/// Whether `id` can be a response id (and so a URL path segment as is).
fn is_response_id(id: &str) -> bool {
    (1..=256).contains(&id.len()) && id.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-'))
}

/// The first provider of the caller's Service that keeps responses and that its Policies allow,
/// with the Service's pinned key for it or its first key.
fn stateful_provider<'a>(ctx: &Context<'a>) -> Result<(&'a ProviderEntry, Route), GatewayError> {
    let snapshot = ctx.snapshot;
    let service = ctx.caller.service;
    for &p in service.providers.iter() {
        let provider = &snapshot.providers[p];
        let keeps_responses =
            matches!(provider.kind(), ProviderType::Openai | ProviderType::OpenaiCompatible | ProviderType::Azure);
        if !keeps_responses || policy::allows_provider(snapshot, &ctx.caller, provider).is_err() {
            continue;
        }
        let key = match service.pinned {
            Some((pp, k)) if pp == p => Some(k),
            _ if provider.keys.is_empty() => None,
            _ => Some(0),
        };
        return Ok((provider, Route { provider: p, key }));
    }
    Err(GatewayError::InvalidParam {
        param: "response_id",
        message: "Stored responses live at OpenAI or Azure OpenAI, and no openai, openai-compatible or azure \
                  Provider is available to this token; responses from Anthropic and mock models are not stored"
            .to_owned(),
    })
}

/// `{responses_url}/{rest}` with the client's query (less any `api-version`, which names the
/// client's Azure API, not the upstream's) after the provider's own.
fn stored_uri(base: &Uri, rest: &str, client_query: Option<&str>) -> Result<Uri, GatewayError> {
    let mut query: Vec<&str> = base.query().into_iter().collect();
    query.extend(
        client_query.into_iter().flat_map(|q| q.split('&')).filter(|p| !p.is_empty() && !p.starts_with("api-version=")),
    );
    let query = if query.is_empty() { String::new() } else { format!("?{}", query.join("&")) };
    let (scheme, authority) = (base.scheme_str().unwrap_or("https"), base.authority().map_or("", |a| a.as_str()));
    format!("{scheme}://{authority}{}/{rest}{query}", base.path().trim_end_matches('/'))
        .parse()
        .map_err(|_| GatewayError::InvalidRequest("The request's query cannot be passed on".to_owned()))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn response_ids() {
        assert!(is_response_id("resp_67ccd2bed1ec8190b14f964abc0542670bb6a6b452d3795b"));
        assert!(!is_response_id(""));
        assert!(!is_response_id(".."));
        assert!(!is_response_id("a%2Fb"));
        assert!(!is_response_id(&"x".repeat(257)));
    }

    #[test]
    fn stored_uris_keep_the_providers_query_and_drop_the_clients_api_version() {
        let base: Uri = "https://x.openai.azure.com/openai/v1/responses?api-version=preview".parse().unwrap();
        let uri = stored_uri(&base, "resp_1/input_items", Some("api-version=2025-03-01-preview&limit=5")).unwrap();
        assert_eq!(
            uri.to_string(),
            "https://x.openai.azure.com/openai/v1/responses/resp_1/input_items?api-version=preview&limit=5"
        );
        let base: Uri = "http://127.0.0.1:1/v1/responses".parse().unwrap();
        assert_eq!(stored_uri(&base, "resp_1", None).unwrap().to_string(), "http://127.0.0.1:1/v1/responses/resp_1");
    }
}
