//! `POST /v1/chat/completions`: reads the body under the size limit, peeks at `model` without
//! copying the rest, routes the model to a provider the caller may use, applies the allowlists
//! and hands the body to the provider's wire format: untouched for OpenAI-shaped upstreams,
//! translated for Anthropic, answered in-process by the mock.
//!
//! A deterministic request may be answered from the response cache (see [`crate::cache`]),
//! looked up after routing and before the budget check. Every other answer is metered (see
//! [`crate::spend`]). A streamed request without
//! `stream_options.include_usage` is sent to OpenAI-shaped upstreams (and the mock) with it, so
//! the stream reports its usage, and the usage chunk is removed before it reaches the client.

use http::{Request, Response};
use hyper::body::Incoming;
use uprox_crds::provider::ProviderType;

use crate::body::Body;
use crate::cache::Endpoint;
use crate::error::GatewayError;
use crate::handlers::routing;
use crate::limits::Admission;
use crate::providers::{anthropic, azure, mock, openai};
use crate::router::Context;
use crate::spend::scan::Wire;

/// Handles one chat completion. `deployment` is the model named by an Azure deployment URL;
/// it wins over the body's `model`.
pub async fn completions(
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
    let (cache, hit) = routing::look_up(ctx, Endpoint::Chat, provider, model, &head, &body, &parts.headers).await;
    if let Some(hit) = hit {
        return Ok(hit);
    }

    let mut body = routing::body_for(deployment.as_deref(), &head, provider, &body)?;
    let wire = if provider.kind() == ProviderType::Anthropic { Wire::Anthropic } else { Wire::OpenAiChat };
    // Anthropic streams always report usage; the translation keeps it from clients that did not ask.
    let strip_usage = wire == Wire::OpenAiChat
        && head.needs_usage_forced()
        && accepts_stream_options(provider.kind(), provider.config.api_version.as_deref());
    if strip_usage {
        body = routing::with_include_usage(&body, &head)?;
    }
    let (meter, warning) = routing::meter(ctx, route, model, wire, &head, body.len(), admission)?;
    let cache = routing::recording(ctx, cache);
    if provider.kind() == ProviderType::Mock {
        let response = mock::respond(&body, None).map(|r| routing::metered_local(ctx, r, meter, strip_usage));
        return routing::finish(ctx, response, warning, cache);
    }
    let azure_uri;
    let uri = match provider.kind() {
        ProviderType::Azure => {
            azure_uri = azure::deployment_uri(provider, model, "chat/completions")?;
            &azure_uri
        }
        _ => provider.chat_url.as_ref().ok_or(GatewayError::Unsupported(provider.kind().as_str()))?,
    };
    let mut call = routing::call(ctx, provider, route, uri, Some(meter));
    call.strip_usage = strip_usage;
    let answer = match provider.kind() {
        ProviderType::Openai | ProviderType::OpenaiCompatible | ProviderType::Azure => {
            openai::forward(call, body, &parts.headers).await
        }
        ProviderType::Anthropic => anthropic::forward::forward(call, &body).await,
        ProviderType::Mock => Err(GatewayError::Unsupported(provider.kind().as_str())),
    };
    routing::finish(ctx, answer, warning, cache)
}

/// Whether the upstream takes `stream_options`: every OpenAI-shaped one does, except Azure
/// OpenAI before `api-version` 2024-09-01 (it refuses the field). Those streams are costed from
/// an estimate when they report no usage.
fn accepts_stream_options(kind: ProviderType, api_version: Option<&str>) -> bool {
    match (kind, api_version) {
        (ProviderType::Azure, Some(version)) => version >= "2024-09-01",
        _ => true,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn old_azure_api_versions_are_not_sent_stream_options() {
        for (version, accepts) in [
            ("2024-06-01", false),
            ("2024-08-01-preview", false),
            ("2024-09-01-preview", true),
            ("2024-10-21", true),
            ("2025-04-01-preview", true),
        ] {
            assert_eq!(accepts_stream_options(ProviderType::Azure, Some(version)), accepts, "{version}");
        }
        assert!(accepts_stream_options(ProviderType::Azure, None), "the v1 surface");
        assert!(accepts_stream_options(ProviderType::OpenaiCompatible, Some("2020-01-01")));
    }
}
