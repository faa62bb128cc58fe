//! `POST /v1/embeddings` (and the Azure shapes): reads the body under the size limit, peeks at
//! `model`, routes it to a provider the caller may use, applies the allowlists and hands the
//! body on: untouched to `{base}/embeddings` for OpenAI-shaped upstreams, to the deployment's
//! `embeddings` URL for Azure, answered in-process by the mock. Anthropic has no embeddings: a
//! model routed there is a 400 naming `model`.
//!
//! `input` (a string, strings, token ids or arrays of token ids), `encoding_format` and
//! `dimensions` are the upstream's to read: the gateway forwards them as sent, so an omitted
//! `encoding_format` means OpenAI's default, `float`, and `base64` comes back as base64.

use http::{Request, Response};
use hyper::body::Incoming;
use uprox_crds::provider::ProviderType;

use crate::body::Body;
use crate::cache::Endpoint;
use crate::error::GatewayError;
use crate::handlers::routing;
use crate::limits::Admission;
use crate::providers::{azure, mock, openai};
use crate::router::Context;
use crate::spend::scan::Wire;

/// Handles one embeddings request. `deployment` is the model named by an Azure deployment URL;
/// it wins over the body's `model`.
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
    if provider.kind() == ProviderType::Anthropic {
        return Err(GatewayError::InvalidParam {
            param: "model",
            message: format!(
                "The model `{model}` is served by an Anthropic provider, and Anthropic has no embeddings API; \
                 use an OpenAI, Azure OpenAI or OpenAI-compatible embedding model"
            ),
        });
    }

    let (cache, hit) = routing::look_up(ctx, Endpoint::Embeddings, provider, model, &head, &body, &parts.headers).await;
    if let Some(hit) = hit {
        return Ok(hit);
    }

    let body = routing::body_for(deployment.as_deref(), &head, provider, &body)?;
    let (meter, warning) = routing::meter(ctx, route, model, Wire::OpenAiEmbeddings, &head, body.len(), admission)?;
    let cache = routing::recording(ctx, cache);
    if provider.kind() == ProviderType::Mock {
        let response = mock::embeddings(&body).map(|r| routing::metered_local(ctx, r, meter, false));
        return routing::finish(ctx, response, warning, cache);
    }
    let azure_uri;
    let uri = match provider.kind() {
        ProviderType::Azure => {
            azure_uri = azure::deployment_uri(provider, model, "embeddings")?;
            &azure_uri
        }
        _ => provider.embeddings_url.as_ref().ok_or(GatewayError::Unsupported(provider.kind().as_str()))?,
    };
    let call = routing::call(ctx, provider, route, uri, Some(meter));
    routing::finish(ctx, openai::forward(call, body, &parts.headers).await, warning, cache)
}
