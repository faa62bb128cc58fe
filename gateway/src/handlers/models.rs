//! `GET /v1/models` and `GET /v1/models/{id}` (also under `/openai/models` and
//! `/openai/v1/models` for Azure SDKs): the models the caller may use, in OpenAI's shapes.
//!
//! The Providers consulted are the caller's Service's, minus those its Policies' provider
//! allowlists exclude. Each answers in one of three ways:
//!
//! - **An explicit `models` list with exact names** (written in the Provider spec; always so for
//!   `azure` and `openai-compatible`): its exact names, without asking the upstream. Patterns
//!   ending in `*` name no model and are not listed. Azure is always answered this way: clients
//!   call deployments, which are what the list names, and Azure's own model listing is per
//!   resource, not per deployment.
//! - **Patterns only** — the type's defaults (`openai`, `anthropic` without `models`) or a list
//!   of nothing but patterns (`["*"]`, `["llama-*"]`) on an `openai`, `anthropic` or
//!   `openai-compatible` Provider, which would otherwise list nothing: the upstream's
//!   listing (`{base}/models`, or Anthropic's `{base}/v1/models` with `x-api-key` and
//!   `anthropic-version`), fetched with the Provider's first key, concurrently for all
//!   Providers, under `Settings::list_timeout`, and cached as `models_cache` describes. A
//!   Provider whose listing fails is skipped (and counted there), not fatal.
//! - **`mock`** without exact names: its two models, `mock-1` and `mock-2`.
//!
//! Every model listed must match its Provider's patterns (what routing would send there) and
//! every attached Policy's model allowlist; ids are de-duplicated, the first Provider in routing
//! order naming one wins. `GET /v1/models/{id}` answers the entry the listing would show (ids
//! compared ignoring ASCII case, percent-escapes decoded) or an OpenAI-shaped 404
//! `model_not_found`, also when the caller may not use the model.

use std::borrow::Cow;
use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use futures_util::future::join_all;
use http::{HeaderValue, Response, Uri, header};
use serde::Serialize;
use uprox_crds::common::allowed_by;
use uprox_crds::provider::ProviderType;

use crate::body::{Body, full};
use crate::error::GatewayError;
use crate::models_cache::{self, Listed};
use crate::providers::openai;
use crate::router::Context;
use crate::snapshot::ProviderEntry;
use crate::upstream;

/// The mock provider's models when its patterns name none exactly.
const MOCK_MODELS: &[&str] = &["mock-1", "mock-2"];
/// Anthropic pages its listing (20 by default); this is its largest page.
const ANTHROPIC_PAGE: &str = "limit=1000";
/// How much longer than a fetch a request waits for another request's fetch of the same listing.
const WAIT_MARGIN: Duration = Duration::from_millis(100);

/// One model object.
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

/// Where a Provider's models come from.
enum Source {
    /// The exact names of its explicit list.
    Exact,
    /// The mock's models.
    Mock,
    /// An upstream listing; `None` when it failed.
    Upstream(Option<Arc<[Listed]>>),
}

impl Source {
    /// Calls `f` with every model of this source, in order, until it returns false.
    fn each<'s>(&'s self, provider: &'s ProviderEntry, mut f: impl FnMut(Model<'s>) -> bool) {
        let owner = provider.kind().as_str();
        let named = |id| Model { id, object: "model", created: 0, owned_by: owner };
        match self {
            Source::Exact => {
                let exact = provider.config.models.iter().filter(|p| !p.parts().1);
                for pattern in exact {
                    if !f(named(pattern.as_str())) {
                        return;
                    }
                }
            }
            Source::Mock => {
                for id in MOCK_MODELS {
                    if !f(named(id)) {
                        return;
                    }
                }
            }
            Source::Upstream(None) => {}
            Source::Upstream(Some(listed)) => {
                for m in listed.iter() {
                    let owned_by = m.owned_by.as_deref().unwrap_or(owner);
                    if !f(Model { id: &m.id, object: "model", created: m.created, owned_by }) {
                        return;
                    }
                }
            }
        }
    }
}

/// `GET /v1/models`.
pub async fn list(ctx: &Context<'_>) -> Response<Body> {
    let sources = sources(ctx, None).await;
    let mut seen = HashSet::new();
    let mut data = Vec::new();
    visible(ctx, &sources, |model| {
        if seen.insert(model.id) {
            data.push(model);
        }
        true
    });
    json(serde_json::to_vec(&List { object: "list", data }).unwrap_or_default())
}

/// `GET /v1/models/{id}`; `raw_id` is the path segment as sent.
pub async fn retrieve(ctx: &Context<'_>, raw_id: &str) -> Result<Response<Body>, GatewayError> {
    let id = percent_decode(raw_id).ok_or_else(|| GatewayError::UnknownModel(raw_id.to_owned()))?;
    let sources = sources(ctx, Some(&id)).await;
    let mut found = None;
    visible(ctx, &sources, |model| {
        if model.id.eq_ignore_ascii_case(&id) {
            found = Some(serde_json::to_vec(&model).unwrap_or_default());
        }
        found.is_none()
    });
    found.map(json).ok_or_else(|| GatewayError::UnknownModel(id.into_owned()))
}

/// Calls `f` with every model of `sources` the caller may use, until it returns false.
fn visible<'s>(ctx: &Context<'_>, sources: &'s [(&'s ProviderEntry, Source)], mut f: impl FnMut(Model<'s>) -> bool) {
    let snapshot = ctx.snapshot;
    let policies = &ctx.caller.token.policies;
    let model_allowed = |id: &str| policies.iter().all(|&p| allowed_by(&snapshot.policies[p].models, id));
    let mut going = true;
    for (provider, source) in sources {
        source.each(provider, |model| {
            if provider.config.best_match(model.id).is_some() && model_allowed(model.id) {
                going = f(model);
            }
            going
        });
        if !going {
            return;
        }
    }
}

/// The caller's Providers that its Policies allow (only those whose patterns match `only`, when
/// given) with their models, upstream listings fetched concurrently.
async fn sources<'a>(ctx: &Context<'a>, only: Option<&str>) -> Vec<(&'a ProviderEntry, Source)> {
    let snapshot = ctx.snapshot;
    let policies = &ctx.caller.token.policies;
    let providers: Vec<&'a ProviderEntry> = ctx
        .caller
        .service
        .providers
        .iter()
        .map(|&p| &snapshot.providers[p])
        .filter(|p| {
            policies.iter().all(|&i| allowed_by(&snapshot.policies[i].providers, &p.config.id.name))
                && only.is_none_or(|id| p.config.best_match(id).is_some())
        })
        .collect();
    // `|&p|`: a future borrowing `&&ProviderEntry` would make the connection's future fail its
    // `Send` proof (a higher-ranked lifetime), so each future gets the `&'a` itself.
    let listed = join_all(providers.iter().map(|&p| source(ctx, p))).await;
    providers.into_iter().zip(listed).collect()
}

async fn source(ctx: &Context<'_>, provider: &ProviderEntry) -> Source {
    let config = &provider.config;
    let patterns_only = !config.models.is_empty() && config.models.iter().all(|p| p.parts().1);
    let asks_upstream = patterns_only
        && match provider.kind() {
            ProviderType::Openai | ProviderType::Anthropic | ProviderType::OpenaiCompatible => true,
            ProviderType::Azure | ProviderType::Mock => false,
        };
    match &provider.models_url {
        Some(uri) if asks_upstream => {
            let key = if provider.keys.is_empty() { None } else { Some(0) };
            let key_bytes = key.and_then(|k| provider.keys.get(k)).map_or(&[][..], |k| k.auth.as_bytes());
            let fingerprint = models_cache::fingerprint(uri, key_bytes);
            let wait = ctx.gateway.settings.list_timeout + WAIT_MARGIN;
            let fetch = fetch(ctx, provider, key, uri);
            Source::Upstream(ctx.gateway.models.get(&config.id, fingerprint, wait, fetch).await)
        }
        _ if provider.kind() == ProviderType::Mock && config.models.iter().all(|p| p.parts().1) => Source::Mock,
        _ => Source::Exact,
    }
}

/// Asks the upstream for its listing with `key`, within `Settings::list_timeout`.
async fn fetch(
    ctx: &Context<'_>,
    provider: &ProviderEntry,
    key: Option<usize>,
    uri: &Uri,
) -> Result<Vec<Listed>, String> {
    let paged;
    let uri = match provider.kind() {
        ProviderType::Anthropic => {
            paged = format!("{uri}?{ANTHROPIC_PAGE}").parse::<Uri>().map_err(|e| e.to_string())?;
            &paged
        }
        _ => uri,
    };
    let call = upstream::Call {
        client: ctx.gateway.client(),
        provider,
        key,
        uri,
        request_id: ctx.request_id,
        idle_timeout: ctx.gateway.settings.list_timeout,
        meter: None,
        strip_usage: false,
        audit: None,
    };
    openai::list_models(call).await
}

fn json(body: impl Into<Bytes>) -> Response<Body> {
    let mut response = Response::new(full(body.into()));
    response.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
    response
}

/// `%XX` escapes decoded (SDKs escape `/` in ids such as `org/model`); `None` when malformed or
/// not UTF-8.
fn percent_decode(raw: &str) -> Option<Cow<'_, str>> {
    if !raw.contains('%') {
        return Some(Cow::Borrowed(raw));
    }
    let bytes = raw.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let digit = |at: usize| bytes.get(at).and_then(|b| (*b as char).to_digit(16));
            out.push((digit(i + 1)? * 16 + digit(i + 2)?) as u8);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).ok().map(Cow::Owned)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percent_escapes_are_decoded() {
        assert_eq!(percent_decode("gpt-4o").as_deref(), Some("gpt-4o"));
        assert_eq!(percent_decode("meta-llama%2FLlama-3%2f8B").as_deref(), Some("meta-llama/Llama-3/8B"));
        assert_eq!(percent_decode("a%20b%C3%A9").as_deref(), Some("a bé"));
        assert_eq!(percent_decode("bad%2"), None);
        assert_eq!(percent_decode("bad%zz"), None);
        assert_eq!(percent_decode("bad%+f"), None);
        assert_eq!(percent_decode("%FF"), None, "not UTF-8");
    }
}
