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
    let model = match deployment.as_deref() {
        Some(d) => d,
        None => head.model()?,
    };

    let (provider, route) = routing::route(ctx, model)?;

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
    let call = routing::call(ctx, provider, route, uri);
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
