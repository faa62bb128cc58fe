//! Routing and the middleware order, written down in one place. For every request, in order:
//!
//! 1. **Request id** — echo a well-formed `x-request-id` or mint one; every response carries it.
//! 2. **Route** — match method and path; unknown paths get a JSON 404, wrong methods a 405.
//! 3. **Unauthenticated allow-list** — only `/healthz` and `/readyz` skip the steps below.
//! 4. **Snapshot** — take one `Arc<Snapshot>` for the whole request (503 before the first load).
//! 5. **Authentication** — token digest lookup, expiry, fail-closed denials.
//! 6. **Scope** — the endpoint's scope against the token and its Policies.
//! 7. **Handler** — body, model routing, allowlists, upstream, relay.
//!
//! Errors are OpenAI-shaped, except on the Anthropic Messages routes (`/v1/messages…`), whose
//! clients expect Anthropic's error shape.

use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use http::{Method, Request, Response};
use hyper::body::Incoming;
use uprox_crds::common::Scope;

use crate::app::Gateway;
use crate::auth::{self, Caller};
use crate::body::Body;
use crate::error::GatewayError;
use crate::handlers;
use crate::policy;
use crate::request_id;
use crate::snapshot::Snapshot;

/// An endpoint.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Endpoint {
    Healthz,
    Readyz,
    ChatCompletions,
    Embeddings,
    Models,
    Messages,
    CountTokens,
}

impl Endpoint {
    /// The endpoint of a path, its method, and the Azure deployment named in the path.
    ///
    /// Azure OpenAI SDKs build `/openai/deployments/{deployment}/chat/completions` (the
    /// deployment is the model), `/openai/chat/completions` and the v1 surface
    /// `/openai/v1/chat/completions` (model in the body), and the same three shapes ending in
    /// `/embeddings`; their `api-version` query is accepted and not needed.
    fn find(path: &str) -> Option<(Endpoint, Method, &'static str, Option<&str>)> {
        let found = match path {
            "/healthz" => (Endpoint::Healthz, Method::GET, "GET"),
            "/readyz" => (Endpoint::Readyz, Method::GET, "GET"),
            "/v1/chat/completions" | "/openai/chat/completions" | "/openai/v1/chat/completions" => {
                (Endpoint::ChatCompletions, Method::POST, "POST")
            }
            "/v1/embeddings" | "/openai/embeddings" | "/openai/v1/embeddings" => {
                (Endpoint::Embeddings, Method::POST, "POST")
            }
            "/v1/models" | "/openai/models" | "/openai/v1/models" => (Endpoint::Models, Method::GET, "GET"),
            "/v1/messages" => (Endpoint::Messages, Method::POST, "POST"),
            "/v1/messages/count_tokens" => (Endpoint::CountTokens, Method::POST, "POST"),
            _ => {
                let rest = path.strip_prefix("/openai/deployments/")?;
                let (endpoint, deployment) =
                    [("/chat/completions", Endpoint::ChatCompletions), ("/embeddings", Endpoint::Embeddings)]
                        .into_iter()
                        .find_map(|(suffix, endpoint)| rest.strip_suffix(suffix).map(|d| (endpoint, d)))?;
                return Some((endpoint, Method::POST, "POST", Some(deployment)));
            }
        };
        Some((found.0, found.1, found.2, None))
    }

    fn scope(self) -> Option<Scope> {
        match self {
            Endpoint::Healthz | Endpoint::Readyz => None,
            Endpoint::ChatCompletions | Endpoint::Messages | Endpoint::CountTokens => Some(Scope::Chat),
            Endpoint::Embeddings => Some(Scope::Embeddings),
            Endpoint::Models => Some(Scope::Models),
        }
    }
}

/// What a handler gets besides the request.
pub struct Context<'a> {
    /// Shared state.
    pub gateway: &'a Gateway,
    /// The snapshot of this request.
    pub snapshot: &'a Snapshot,
    /// Who is calling.
    pub caller: Caller<'a>,
    /// This request's id.
    pub request_id: &'a http::HeaderValue,
}

/// Answers one request. Never fails: errors become OpenAI-shaped responses.
pub async fn handle(gateway: Arc<Gateway>, request: Request<Incoming>) -> Response<Body> {
    let request_id = gateway.request_ids.for_request(request.headers());
    let started = std::time::Instant::now();
    let method = request.method().clone();
    // Anthropic SDKs parse errors in Anthropic's shape; everyone else gets OpenAI's.
    let anthropic_errors = request.uri().path().starts_with("/v1/messages");
    let mut response = match dispatch(&gateway, request, &request_id).await {
        Ok(r) => r,
        Err(e) => {
            tracing::debug!(error = %e, label = e.metric_label(), "request refused");
            if anthropic_errors { e.into_anthropic_response() } else { e.into_response() }
        }
    };
    tracing::debug!(%method, status = response.status().as_u16(), elapsed_us = started.elapsed().as_micros() as u64, request_id = ?request_id, "request");
    response.headers_mut().insert(request_id::HEADER.clone(), request_id);
    response
}

async fn dispatch(
    gateway: &Gateway,
    request: Request<Incoming>,
    request_id: &http::HeaderValue,
) -> Result<Response<Body>, GatewayError> {
    let path = request.uri().path();
    let Some((endpoint, method, allow, deployment)) = Endpoint::find(path) else {
        return Err(GatewayError::NotFound { method: request.method().to_string(), path: path.to_owned() });
    };
    let deployment = deployment.map(str::to_owned);
    if request.method() != method {
        return Err(GatewayError::MethodNotAllowed {
            method: request.method().to_string(),
            path: path.to_owned(),
            allow,
        });
    }
    match endpoint {
        Endpoint::Healthz => return Ok(handlers::health::healthz()),
        Endpoint::Readyz => return Ok(handlers::health::readyz(gateway)),
        Endpoint::ChatCompletions
        | Endpoint::Embeddings
        | Endpoint::Models
        | Endpoint::Messages
        | Endpoint::CountTokens => {}
    }
    let snapshot = gateway.snapshot().ok_or(GatewayError::NotReady)?;
    let now = SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_secs() as i64).unwrap_or(0);
    let caller = auth::authenticate(&snapshot, request.headers(), now)?;
    if let Some(scope) = endpoint.scope() {
        policy::check_scope(&snapshot, &caller, scope)?;
    }
    let ctx = Context { gateway, snapshot: &snapshot, caller, request_id };
    match endpoint {
        Endpoint::ChatCompletions => handlers::chat::completions(&ctx, request, deployment).await,
        Endpoint::Embeddings => handlers::embeddings::create(&ctx, request, deployment).await,
        Endpoint::Models => Ok(handlers::models::list(&ctx).await),
        Endpoint::Messages => handlers::messages::create(&ctx, request).await,
        Endpoint::CountTokens => handlers::messages::count_tokens(&ctx, request).await,
        Endpoint::Healthz | Endpoint::Readyz => {
            Err(GatewayError::NotFound { method: method.to_string(), path: path.to_owned() })
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn deployment_routes_name_their_endpoint() {
        let find = |p| Endpoint::find(p).map(|(e, _, _, d)| (e, d));
        assert_eq!(
            find("/openai/deployments/gpt4o/chat/completions"),
            Some((Endpoint::ChatCompletions, Some("gpt4o")))
        );
        assert_eq!(find("/openai/deployments/emb/embeddings"), Some((Endpoint::Embeddings, Some("emb"))));
        for flat in ["/v1/embeddings", "/openai/embeddings", "/openai/v1/embeddings"] {
            assert_eq!(find(flat), Some((Endpoint::Embeddings, None)), "{flat}");
        }
        assert_eq!(find("/openai/deployments/emb/completions"), None);
        assert_eq!(Endpoint::Embeddings.scope(), Some(Scope::Embeddings));
    }
}
