//! Routing and the middleware order, written down in one place. For every request, in order:
//!
//! 1. **Request id** — echo a well-formed `x-request-id` or mint one; every response carries it.
//! 2. **Route** — match method and path; unknown paths get a JSON 404, wrong methods a 405.
//! 3. **Unauthenticated allow-list** — only `/healthz` and `/readyz` skip the steps below.
//! 4. **Snapshot** — take one `Arc<Snapshot>` for the whole request (503 before the first load).
//! 5. **Authentication** — token digest lookup, expiry, fail-closed denials.
//! 6. **Scope** — the endpoint's scope against the token and its Policies.
//! 7. **Rate limits** — every attached Policy's (429 with `retry-after`); the admission, with
//!    its concurrency slots, lives in the response body until it ends.
//! 8. **Handler** — body, model routing, allowlists, upstream, relay.
//!
//! Errors are OpenAI-shaped, except on the Anthropic Messages routes (`/v1/messages…`), whose
//! clients expect Anthropic's error shape.

use std::net::SocketAddr;
use std::sync::Arc;

use http::{Method, Request, Response};
use hyper::body::Incoming;
use uprox_crds::common::Scope;

use crate::app::Gateway;
use crate::auth::{self, Caller};
use crate::body::Body;
use crate::error::GatewayError;
use crate::handlers;
use crate::limits;
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
    /// One model: `GET /v1/models/{id}`.
    Model,
    Messages,
    CountTokens,
    /// `POST /v1/responses`.
    Responses,
    /// `GET` or `DELETE /v1/responses/{id}`.
    StoredResponse,
    /// `GET /v1/responses/{id}/input_items`.
    StoredResponseItems,
    /// `POST /v1/responses/{id}/cancel`.
    CancelResponse,
    /// `GET` (list) or `POST` (upload) `/v1/files`.
    Files,
    /// `GET` or `DELETE /v1/files/{id}`.
    File,
    /// `GET /v1/files/{id}/content`.
    FileContent,
}

impl Endpoint {
    /// Its name in the audit log.
    fn name(self) -> &'static str {
        match self {
            Endpoint::Healthz => "healthz",
            Endpoint::Readyz => "readyz",
            Endpoint::ChatCompletions => "chat.completions",
            Endpoint::Embeddings => "embeddings",
            Endpoint::Models => "models.list",
            Endpoint::Model => "models.retrieve",
            Endpoint::Messages => "messages",
            Endpoint::CountTokens => "messages.count_tokens",
            Endpoint::Responses => "responses",
            Endpoint::StoredResponse => "responses.stored",
            Endpoint::StoredResponseItems => "responses.input_items",
            Endpoint::CancelResponse => "responses.cancel",
            Endpoint::Files => "files",
            Endpoint::File => "files.file",
            Endpoint::FileContent => "files.content",
        }
    }

    /// The endpoint of a path, its method, and the parameter named in the path: the Azure
    /// deployment, or the model id of `/v1/models/{id}` (also under `/openai` and `/openai/v1`).
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
            "/v1/responses" | "/openai/responses" | "/openai/v1/responses" => {
                (Endpoint::Responses, Method::POST, "POST")
            }
            _ => {
                if let Some(route) = handlers::files::route(path) {
                    let (endpoint, allow) = match route {
                        handlers::files::Route::Collection => (Endpoint::Files, "GET, POST"),
                        handlers::files::Route::File => (Endpoint::File, "GET, DELETE"),
                        handlers::files::Route::Content => (Endpoint::FileContent, "GET"),
                    };
                    return Some((endpoint, Method::GET, allow, None));
                }
                // A stored response: the parameter is the rest of the path, `{id}[/suffix]`.
                let stored = ["/v1/responses/", "/openai/responses/", "/openai/v1/responses/"]
                    .into_iter()
                    .find_map(|prefix| path.strip_prefix(prefix));
                if let Some(rest) = stored {
                    let (endpoint, method, allow) = match rest.split_once('/') {
                        None => (Endpoint::StoredResponse, Method::GET, "GET, DELETE"),
                        Some((_, "input_items")) => (Endpoint::StoredResponseItems, Method::GET, "GET"),
                        Some((_, "cancel")) => (Endpoint::CancelResponse, Method::POST, "POST"),
                        Some(_) => return None,
                    };
                    return Some((endpoint, method, allow, Some(rest)));
                }
                let model = ["/v1/models/", "/openai/models/", "/openai/v1/models/"]
                    .into_iter()
                    .find_map(|prefix| path.strip_prefix(prefix))
                    .filter(|id| !id.is_empty());
                if let Some(id) = model {
                    return Some((Endpoint::Model, Method::GET, "GET", Some(id)));
                }
                let rest = path.strip_prefix("/openai/deployments/")?;
                let (endpoint, deployment) = [
                    ("/chat/completions", Endpoint::ChatCompletions),
                    ("/embeddings", Endpoint::Embeddings),
                    ("/responses", Endpoint::Responses),
                ]
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
            Endpoint::ChatCompletions => Some(Scope::Chat),
            Endpoint::Messages | Endpoint::CountTokens => Some(Scope::Messages),
            Endpoint::Embeddings => Some(Scope::Embeddings),
            Endpoint::Models | Endpoint::Model => Some(Scope::Models),
            Endpoint::Responses
            | Endpoint::StoredResponse
            | Endpoint::StoredResponseItems
            | Endpoint::CancelResponse => Some(Scope::Responses),
            Endpoint::Files | Endpoint::File | Endpoint::FileContent => Some(Scope::Files),
        }
    }

    /// Whether `method` is allowed besides the endpoint's main one.
    fn also_allows(self, method: &Method) -> bool {
        (matches!(self, Endpoint::StoredResponse | Endpoint::File) && method == Method::DELETE)
            || (self == Endpoint::Files && method == Method::POST)
    }
}

/// What a handler gets besides the request.
pub struct Context<'a> {
    /// Shared state.
    pub gateway: &'a Gateway,
    /// The snapshot of this request.
    pub snapshot: &'a Arc<Snapshot>,
    /// Who is calling.
    pub caller: Caller<'a>,
    /// This request's id.
    pub request_id: &'a http::HeaderValue,
    /// When it arrived, Unix seconds.
    pub now: i64,
    /// What the audit line will say of it.
    pub audit: &'a crate::audit::Notes,
}

/// Answers one request. Never fails: errors become OpenAI-shaped responses. Every request but
/// the health probes gets an audit line (see [`crate::audit`]).
pub async fn handle(gateway: Arc<Gateway>, request: Request<Incoming>, client: Option<SocketAddr>) -> Response<Body> {
    let request_id = gateway.request_ids.for_request(request.headers());
    let started = std::time::Instant::now();
    let started_ms = crate::clock::unix_millis();
    let method = request.method().clone();
    let user_agent = request.headers().get(http::header::USER_AGENT).cloned();
    let endpoint = Endpoint::find(request.uri().path()).map(|(e, ..)| e);
    // Anthropic SDKs parse errors in Anthropic's shape; everyone else gets OpenAI's.
    let anthropic_errors = request.uri().path().starts_with("/v1/messages");
    let trace = gateway.tracer.map(|tracer| tracer.ids(request.headers()));
    let notes = crate::audit::Notes::new(gateway.metrics, trace);
    let audited = !matches!(endpoint, Some(Endpoint::Healthz | Endpoint::Readyz));
    if audited {
        gateway.metrics.started();
    }
    let mut error = None;
    let mut response = match dispatch(&gateway, request, &request_id, &notes).await {
        Ok(r) => r,
        Err(e) => {
            error = Some(e.metric_label());
            if anthropic_errors { e.into_anthropic_response() } else { e.into_response() }
        }
    };
    response.headers_mut().insert(request_id::HEADER.clone(), request_id.clone());
    if !audited {
        return response;
    }
    let streamed = response
        .headers()
        .get(http::header::CONTENT_TYPE)
        .is_some_and(|v| v.as_bytes().starts_with(b"text/event-stream"));
    let request = crate::audit::Request {
        request_id,
        started,
        started_ms,
        method,
        endpoint: endpoint.map_or("unknown", Endpoint::name),
        client,
        user_agent,
        status: response.status(),
        // An upstream's own error, relayed as it came.
        error: error.or((!response.status().is_success()).then_some("upstream_error")),
        streamed,
        notes,
        tracer: gateway.tracer,
    };
    crate::audit::audited(request, response)
}

async fn dispatch(
    gateway: &Gateway,
    request: Request<Incoming>,
    request_id: &http::HeaderValue,
    notes: &crate::audit::Notes,
) -> Result<Response<Body>, GatewayError> {
    let path = request.uri().path();
    let Some((endpoint, method, allow, deployment)) = Endpoint::find(path) else {
        return Err(GatewayError::NotFound { method: request.method().to_string(), path: path.to_owned() });
    };
    let deployment = deployment.map(str::to_owned);
    if request.method() != method && !endpoint.also_allows(request.method()) {
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
        | Endpoint::Model
        | Endpoint::Messages
        | Endpoint::CountTokens
        | Endpoint::Responses
        | Endpoint::StoredResponse
        | Endpoint::StoredResponseItems
        | Endpoint::CancelResponse
        | Endpoint::Files
        | Endpoint::File
        | Endpoint::FileContent => {}
    }
    let snapshot = gateway.snapshot().ok_or(GatewayError::NotReady)?;
    let now = crate::clock::unix_now();
    let caller = auth::authenticate(&snapshot, request.headers(), now)?;
    notes.caller(&snapshot, caller.digest, caller.service_index);
    if let Some(scope) = endpoint.scope() {
        policy::check_scope(&snapshot, &caller, scope).inspect_err(|_| notes.deny("scope"))?;
    }
    // Rate limits: checked after the scope (a refused scope costs nothing), held until the
    // response body ends.
    // A metered endpoint's handler hands the admission to the request's meter, which lives in
    // the relay of the answer: one body layer holds slots, tokens and cost.
    let mut admission = match &caller.token.limits {
        Some(set) => Some(limits::admit(set).map_err(GatewayError::RateLimited)?),
        None => None,
    };
    let rate_headers = admission.as_ref().map(|a| a.headers);
    let ctx = Context { gateway, snapshot: &snapshot, caller, request_id, now, audit: notes };
    let response = match endpoint {
        Endpoint::ChatCompletions => handlers::chat::completions(&ctx, request, deployment, admission.take()).await,
        Endpoint::Embeddings => handlers::embeddings::create(&ctx, request, deployment, admission.take()).await,
        Endpoint::Models => Ok(handlers::models::list(&ctx).await),
        Endpoint::Model => handlers::models::retrieve(&ctx, deployment.as_deref().unwrap_or_default()).await,
        Endpoint::Messages => handlers::messages::create(&ctx, request, admission.take()).await,
        Endpoint::CountTokens => handlers::messages::count_tokens(&ctx, request).await,
        Endpoint::Responses => handlers::responses::create(&ctx, request, deployment, admission.take()).await,
        Endpoint::StoredResponse | Endpoint::StoredResponseItems | Endpoint::CancelResponse => {
            handlers::responses::stored(&ctx, request, deployment).await
        }
        Endpoint::Files | Endpoint::File | Endpoint::FileContent => handlers::files::handle(&ctx, request).await,
        Endpoint::Healthz | Endpoint::Readyz => {
            Err(GatewayError::NotFound { method: method.to_string(), path: path.to_owned() })
        }
    }?;
    Ok(match admission {
        Some(admission) => limits::respond(response, admission),
        None => {
            let mut response = response;
            if let Some(headers) = rate_headers {
                headers.write(response.headers_mut());
            }
            response
        }
    })
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

    #[test]
    fn every_endpoint_needs_exactly_its_scope() {
        let scope = |p| Endpoint::find(p).map(|(e, ..)| e.scope());
        for (path, expected) in [
            ("/v1/chat/completions", Scope::Chat),
            ("/openai/chat/completions", Scope::Chat),
            ("/openai/v1/chat/completions", Scope::Chat),
            ("/openai/deployments/gpt4o/chat/completions", Scope::Chat),
            ("/v1/messages", Scope::Messages),
            ("/v1/messages/count_tokens", Scope::Messages),
            ("/v1/embeddings", Scope::Embeddings),
            ("/openai/embeddings", Scope::Embeddings),
            ("/openai/v1/embeddings", Scope::Embeddings),
            ("/openai/deployments/emb/embeddings", Scope::Embeddings),
            ("/v1/models", Scope::Models),
            ("/openai/models", Scope::Models),
            ("/openai/v1/models", Scope::Models),
            ("/v1/models/gpt-4o", Scope::Models),
            ("/openai/models/gpt-4o", Scope::Models),
            ("/openai/v1/models/org/model", Scope::Models),
        ] {
            assert_eq!(scope(path), Some(Some(expected)), "{path}");
        }
        for open in ["/healthz", "/readyz"] {
            assert_eq!(scope(open), Some(None), "{open}");
        }
    }

    #[test]
    fn file_routes_need_the_files_scope_and_their_methods() {
        let find = |p| Endpoint::find(p).map(|(e, m, allow, _)| (e, m, allow));
        assert_eq!(find("/v1/files"), Some((Endpoint::Files, Method::GET, "GET, POST")));
        assert_eq!(find("/openai/files/file-1"), Some((Endpoint::File, Method::GET, "GET, DELETE")));
        assert_eq!(find("/openai/v1/files/file-1/content"), Some((Endpoint::FileContent, Method::GET, "GET")));
        assert_eq!(find("/v1/files/"), None);
        assert!(Endpoint::Files.also_allows(&Method::POST) && Endpoint::File.also_allows(&Method::DELETE));
        assert!(!Endpoint::FileContent.also_allows(&Method::DELETE) && !Endpoint::Files.also_allows(&Method::DELETE));
        for e in [Endpoint::Files, Endpoint::File, Endpoint::FileContent] {
            assert_eq!(e.scope(), Some(Scope::Files));
        }
    }

    #[test]
    fn model_routes_carry_the_id() {
        let find = |p| Endpoint::find(p).map(|(e, m, _, id)| (e, m, id));
        assert_eq!(find("/v1/models/gpt-4o"), Some((Endpoint::Model, Method::GET, Some("gpt-4o"))));
        assert_eq!(find("/v1/models/org%2Fm"), Some((Endpoint::Model, Method::GET, Some("org%2Fm"))));
        assert_eq!(find("/openai/v1/models/a/b"), Some((Endpoint::Model, Method::GET, Some("a/b"))));
        assert_eq!(find("/v1/models/").map(|f| f.0), None, "an empty id is no route");
        assert_eq!(find("/v1/models").map(|f| f.0), Some(Endpoint::Models));
    }

    #[test]
    fn responses_routes() {
        let find = Endpoint::find;
        for create in ["/v1/responses", "/openai/responses", "/openai/v1/responses"] {
            assert_eq!(find(create), Some((Endpoint::Responses, Method::POST, "POST", None)), "{create}");
        }
        assert_eq!(
            find("/openai/deployments/gpt4o/responses"),
            Some((Endpoint::Responses, Method::POST, "POST", Some("gpt4o")))
        );
        for prefix in ["/v1/responses/", "/openai/responses/", "/openai/v1/responses/"] {
            let path = format!("{prefix}resp_1");
            let found = Endpoint::find(&path);
            assert_eq!(found, Some((Endpoint::StoredResponse, Method::GET, "GET, DELETE", Some("resp_1"))), "{path}");
        }
        assert_eq!(
            find("/v1/responses/resp_1/input_items"),
            Some((Endpoint::StoredResponseItems, Method::GET, "GET", Some("resp_1/input_items")))
        );
        assert_eq!(
            find("/v1/responses/resp_1/cancel"),
            Some((Endpoint::CancelResponse, Method::POST, "POST", Some("resp_1/cancel")))
        );
        assert_eq!(find("/v1/responses/resp_1/other"), None);
        assert!(Endpoint::StoredResponse.also_allows(&Method::DELETE));
        assert!(!Endpoint::StoredResponseItems.also_allows(&Method::DELETE));
        for e in
            [Endpoint::Responses, Endpoint::StoredResponse, Endpoint::StoredResponseItems, Endpoint::CancelResponse]
        {
            assert_eq!(e.scope(), Some(Scope::Responses));
        }
    }
}
