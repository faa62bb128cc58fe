//! `POST /v1/chat/completions`: reads the body under the size limit, peeks at `model` without
//! copying the rest, routes the model to a provider the caller may use, applies the allowlists
//! and hands the body to the provider's wire format: untouched for OpenAI-shaped upstreams,
//! translated for Anthropic, answered in-process by the mock.

use http::{Request, Response};
use hyper::body::Incoming;
use uprox_crds::provider::ProviderType;

use crate::body::Body;
use crate::error::GatewayError;
use crate::handlers::routing;
use crate::providers::{anthropic, azure, mock, openai};
use crate::router::Context;

/// Handles one chat completion. `deployment` is the model named by an Azure deployment URL;
/// it wins over the body's `model`.
pub async fn completions(
    ctx: &Context<'_>,
    request: Request<Incoming>,
    deployment: Option<String>,
) -> Result<Response<Body>, GatewayError> {
    let (parts, body) = request.into_parts();
    let body = routing::read_body(ctx, &parts, body).await?;
    let head = routing::parse_head(&body)?;
    let model = routing::model(deployment.as_deref(), &head)?;

    let (provider, route) = routing::route(ctx, model)?;

    let body = routing::body_for(deployment.as_deref(), &head, provider, &body)?;
    if provider.kind() == ProviderType::Mock {
        return mock::respond(&body, None);
    }
    let azure_uri;
    let uri = match provider.kind() {
        ProviderType::Azure => {
            azure_uri = azure::deployment_uri(provider, model, "chat/completions")?;
            &azure_uri
        }
        _ => provider.chat_url.as_ref().ok_or(GatewayError::Unsupported(provider.kind().as_str()))?,
    };
    let call = routing::call(ctx, provider, route, uri);
    match provider.kind() {
        ProviderType::Openai | ProviderType::OpenaiCompatible | ProviderType::Azure => {
            openai::forward(call, body, &parts.headers).await
        }
        ProviderType::Anthropic => anthropic::forward::forward(call, &body).await,
        ProviderType::Mock => Err(GatewayError::Unsupported(provider.kind().as_str())),
    }
}
