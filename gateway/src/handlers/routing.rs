//! What every model-addressed endpoint does before its wire format takes over: read the body
//! under the size limit, peek at `model` without copying the rest, route the model to a
//! provider the caller may use, apply the allowlists, and set up the upstream [`Call`].

use std::borrow::Cow;

use bytes::Bytes;
use http::Uri;
use http::request::Parts;
use hyper::body::Incoming;
use serde::Deserialize;

use uprox_crds::provider::ProviderType;

use crate::body::read_limited;
use crate::error::GatewayError;
use crate::policy;
use crate::router::Context;
use crate::snapshot::{ProviderEntry, Route};
use crate::upstream::Call;

/// The only fields the gateway reads on the passthrough path. Unknown fields are skipped by
/// the parser without being stored; the original bytes are what goes upstream.
#[derive(Deserialize)]
pub(crate) struct Head<'a> {
    #[serde(borrow)]
    pub model: Option<Cow<'a, str>>,
}

impl Head<'_> {
    /// The model, which is required.
    pub fn model(&self) -> Result<&str, GatewayError> {
        self.model.as_deref().filter(|m| !m.is_empty()).ok_or(GatewayError::MissingField("model"))
    }
}

/// The model of a request: an Azure deployment URL's, else the body's `model`.
pub(crate) fn model<'a>(deployment: Option<&'a str>, head: &'a Head<'_>) -> Result<&'a str, GatewayError> {
    match deployment {
        Some(d) => Ok(d),
        None => head.model(),
    }
}

/// The body to send upstream. A deployment URL names the model; upstreams other than Azure
/// read it from the body, so it is written there (the only rewrite of an OpenAI-shaped body).
pub(crate) fn body_for(
    deployment: Option<&str>,
    head: &Head<'_>,
    provider: &ProviderEntry,
    body: &Bytes,
) -> Result<Bytes, GatewayError> {
    match deployment {
        Some(d) if provider.kind() != ProviderType::Azure && head.model.as_deref() != Some(d) => with_model(body, d),
        // A reference-counted handle.
        _ => Ok(body.clone()),
    }
}

/// Reads the request body, refusing more than the configured limit (413).
pub(crate) async fn read_body(ctx: &Context<'_>, parts: &Parts, body: Incoming) -> Result<Bytes, GatewayError> {
    let declared =
        parts.headers.get(http::header::CONTENT_LENGTH).and_then(|v| v.to_str().ok()).and_then(|v| v.parse().ok());
    read_limited(body, declared, ctx.gateway.settings.max_body_bytes).await
}

/// The fields of [`Head`]; the body must be a JSON object.
pub(crate) fn parse_head(body: &[u8]) -> Result<Head<'_>, GatewayError> {
    // serde would also accept a JSON array as a struct; a request must be an object.
    if body.iter().find(|b| !b.is_ascii_whitespace()) != Some(&b'{') {
        return Err(GatewayError::InvalidRequest("Request body must be a JSON object".into()));
    }
    serde_json::from_slice(body)
        .map_err(|e| GatewayError::InvalidRequest(format!("Request body must be valid JSON: {e}")))
}

/// The provider and key for `model`, after the caller's provider and model allowlists.
pub(crate) fn route<'a>(ctx: &Context<'a>, model: &str) -> Result<(&'a ProviderEntry, Route), GatewayError> {
    let snapshot = ctx.snapshot;
    let route =
        snapshot.route(ctx.caller.service_index, model).ok_or_else(|| GatewayError::UnknownModel(model.to_owned()))?;
    let provider = &snapshot.providers[route.provider];
    policy::allows_provider(snapshot, &ctx.caller, provider)?;
    policy::allows_model(snapshot, &ctx.caller, model)?;
    Ok((provider, route))
}

/// The upstream call for a routed request to `uri`.
pub(crate) fn call<'a>(ctx: &'a Context<'_>, provider: &'a ProviderEntry, route: Route, uri: &'a Uri) -> Call<'a> {
    Call {
        client: ctx.gateway.client(),
        provider,
        key: route.key,
        uri,
        request_id: ctx.request_id,
        idle_timeout: ctx.gateway.settings.read_timeout,
    }
}

/// The body with `model` set, every other field kept.
pub(crate) fn with_model(body: &[u8], model: &str) -> Result<Bytes, GatewayError> {
    let mut object: serde_json::Map<String, serde_json::Value> = serde_json::from_slice(body)
        .map_err(|e| GatewayError::InvalidRequest(format!("Request body must be a JSON object: {e}")))?;
    object.insert("model".to_owned(), serde_json::Value::String(model.to_owned()));
    serde_json::to_vec(&object)
        .map(bytes::Bytes::from)
        .map_err(|e| GatewayError::InvalidRequest(format!("Request body could not be re-encoded: {e}")))
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
    fn model_is_required_and_not_empty() {
        assert_eq!(parse_head(br#"{"model":"claude-x"}"#).unwrap().model().unwrap(), "claude-x");
        assert!(matches!(parse_head(br#"{"messages":[]}"#).unwrap().model(), Err(GatewayError::MissingField("model"))));
        assert!(matches!(parse_head(br#"{"model":""}"#).unwrap().model(), Err(GatewayError::MissingField("model"))));
    }

    #[test]
    fn head_refuses_non_objects_and_bad_json() {
        assert!(parse_head(br#"["gpt-4o"]"#).is_err());
        assert!(parse_head(b"").is_err());
        assert!(parse_head(br#"{"model": 5}"#).is_err());
        assert!(parse_head(br#"{"model":"x""#).is_err());
    }
}
