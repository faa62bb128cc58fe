//! `GET /v1/models`: the models the caller may use, in OpenAI's list shape. Providers with exact
//! model names answer from the config; OpenAI-shaped and Anthropic providers whose patterns are globs are asked
//! upstream, concurrently and under a timeout, and a provider that fails is skipped and logged.
//! Every entry passes the caller's provider and model allowlists; ids are de-duplicated.

use std::collections::HashSet;

use futures_util::future::join_all;
use http::{HeaderValue, Response, header};
use serde::Serialize;
use uprox_crds::provider::ProviderType;

use crate::body::{Body, full};
use crate::policy;
use crate::providers::openai;
use crate::router::Context;
use crate::snapshot::ProviderEntry;
use crate::upstream;

#[derive(Serialize)]
struct Model<'a> {
    id: &'a str,
    object: &'static str,
    created: u64,
    owned_by: &'a str,
}

#[derive(Serialize)]
struct List<'a> {
    object: &'static str,
    data: Vec<Model<'a>>,
}

/// The listing.
pub async fn list(ctx: &Context<'_>) -> Response<Body> {
    let snapshot = ctx.snapshot;
    let providers: Vec<&ProviderEntry> = ctx
        .caller
        .service
        .providers
        .iter()
        .map(|&p| &snapshot.providers[p])
        .filter(|p| policy::allows_provider(snapshot, &ctx.caller, p).is_ok())
        .collect();
    let listings = join_all(providers.iter().map(|p| models_of(ctx, p))).await;

    let mut seen = HashSet::new();
    let mut data = Vec::new();
    for (provider, ids) in providers.iter().zip(&listings) {
        for id in ids {
            if provider.config.best_match(id).is_some()
                && policy::allows_model(snapshot, &ctx.caller, id).is_ok()
                && seen.insert(id.as_str())
            {
                data.push(Model { id, object: "model", created: 0, owned_by: provider.kind().as_str() });
            }
        }
    }
    let body = serde_json::to_vec(&List { object: "list", data }).unwrap_or_default();
    let mut response = Response::new(full(body));
    response.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
    response
}

async fn models_of(ctx: &Context<'_>, provider: &ProviderEntry) -> Vec<String> {
    let exact: Vec<String> =
        provider.config.models.iter().filter(|p| !p.parts().1).map(|p| p.as_str().to_owned()).collect();
    let has_globs = exact.len() < provider.config.models.len();
    match provider.kind() {
        ProviderType::Openai | ProviderType::OpenaiCompatible | ProviderType::Anthropic if has_globs => {
            let Some(uri) = provider.models_url.as_ref() else { return exact };
            let call = upstream::Call {
                client: ctx.gateway.client(),
                provider,
                key: if provider.keys.is_empty() { None } else { Some(0) },
                uri,
                request_id: ctx.request_id,
                idle_timeout: ctx.gateway.settings.list_timeout,
            };
            match openai::list_models(call).await {
                Ok(mut ids) => {
                    ids.extend(exact);
                    ids
                }
                Err(why) => {
                    tracing::warn!(provider = %provider.config.id, %why, "provider model listing skipped");
                    exact
                }
            }
        }
        ProviderType::Mock if exact.is_empty() => vec!["mock-1".to_owned(), "mock-2".to_owned()],
        _ => exact,
    }
}
