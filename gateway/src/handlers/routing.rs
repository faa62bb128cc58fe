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

use crate::body::{Body, read_limited};
use crate::cache;
use crate::error::GatewayError;
use crate::limits::Admission;
use crate::policy;
use crate::relay::Relay;
use crate::router::Context;
use crate::snapshot::{ProviderEntry, Route};
use crate::spend;
use crate::spend::meter::Meter;
use crate::spend::scan::Wire;
use crate::upstream::Call;
use http::{HeaderValue, Response};

/// The only fields the gateway reads on the passthrough path. Unknown fields are skipped by
/// the parser without being stored; the original bytes are what goes upstream. Fields read for
/// accounting are read leniently: a value of an unexpected type is the upstream's to refuse.
#[derive(Deserialize)]
pub(crate) struct Head<'a> {
    #[serde(borrow)]
    pub model: Option<Cow<'a, str>>,
    /// `stream`.
    #[serde(default, deserialize_with = "lenient::bool")]
    pub stream: Option<bool>,
    /// `stream_options.include_usage`, and whether `stream_options` is there at all.
    #[serde(default, deserialize_with = "lenient::stream_options")]
    pub stream_options: Option<Option<bool>>,
    /// `max_tokens` (Chat Completions, Anthropic).
    #[serde(default, deserialize_with = "lenient::u64")]
    pub max_tokens: Option<u64>,
    /// `max_completion_tokens` (Chat Completions).
    #[serde(default, deserialize_with = "lenient::u64")]
    pub max_completion_tokens: Option<u64>,
    /// `max_output_tokens` (Responses).
    #[serde(default, deserialize_with = "lenient::u64")]
    pub max_output_tokens: Option<u64>,
    /// `temperature`, for the response cache: 0 makes a request deterministic.
    #[serde(default, deserialize_with = "lenient::number")]
    pub temperature: Option<f64>,
    /// `Some(true)` when `seed` is an integer, for the response cache.
    #[serde(default, deserialize_with = "lenient::integer")]
    pub seed: Option<bool>,
}

impl Head<'_> {
    /// The model, which is required.
    pub fn model(&self) -> Result<&str, GatewayError> {
        self.model.as_deref().filter(|m| !m.is_empty()).ok_or(GatewayError::MissingField("model"))
    }

    /// The most output tokens the request allows, if it says.
    pub fn max_output(&self) -> Option<u64> {
        self.max_completion_tokens.or(self.max_tokens).or(self.max_output_tokens)
    }

    /// Whether this is a streamed chat completion without `stream_options.include_usage`: the
    /// gateway then asks upstream for usage itself ([`with_include_usage`]) and removes the
    /// usage chunk before it reaches the client.
    pub fn needs_usage_forced(&self) -> bool {
        self.stream == Some(true) && self.stream_options.flatten() != Some(true)
    }

    /// Whether the same request always gets the same answer (see [`crate::cache::key`]):
    /// `temperature` 0 or an integer `seed`.
    pub fn deterministic(&self) -> bool {
        self.temperature == Some(0.0) || self.seed == Some(true)
    }
}

/// `body` with `stream_options.include_usage` set to true, every other field kept. Without a
/// `stream_options` the field is spliced in after the opening brace (no parse, one copy).
pub(crate) fn with_include_usage(body: &[u8], head: &Head<'_>) -> Result<Bytes, GatewayError> {
    const FIELD: &[u8] = br#""stream_options":{"include_usage":true},"#;
    if head.stream_options.is_none()
        && let Some(open) = body.iter().position(|b| *b == b'{')
    {
        let mut spliced = Vec::with_capacity(body.len() + FIELD.len());
        spliced.extend_from_slice(&body[..=open]);
        spliced.extend_from_slice(FIELD);
        spliced.extend_from_slice(&body[open + 1..]);
        return Ok(Bytes::from(spliced));
    }
    let mut object: serde_json::Map<String, serde_json::Value> = serde_json::from_slice(body)
        .map_err(|e| GatewayError::InvalidRequest(format!("Request body must be a JSON object: {e}")))?;
    let options = object.entry("stream_options").or_insert_with(|| serde_json::json!({}));
    if !options.is_object() {
        *options = serde_json::json!({});
    }
    if let Some(options) = options.as_object_mut() {
        options.insert("include_usage".to_owned(), serde_json::Value::Bool(true));
    }
    serde_json::to_vec(&object)
        .map(Bytes::from)
        .map_err(|e| GatewayError::InvalidRequest(format!("Request body could not be re-encoded: {e}")))
}

mod lenient;

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
    ctx.audit.route(route, model);
    policy::allows_provider(snapshot, &ctx.caller, provider)?;
    policy::allows_model(snapshot, &ctx.caller, model)?;
    Ok((provider, route))
}

/// The upstream call for a routed request to `uri`, carrying the request's meter.
pub(crate) fn call<'a>(
    ctx: &'a Context<'_>,
    provider: &'a ProviderEntry,
    route: Route,
    uri: &'a Uri,
    meter: Option<Meter>,
) -> Call<'a> {
    Call {
        client: ctx.gateway.client(),
        provider,
        key: route.key,
        uri,
        request_id: ctx.request_id,
        idle_timeout: ctx.gateway.settings.read_timeout,
        meter,
        strip_usage: false,
        audit: Some(ctx.audit),
    }
}

/// Checks the caller's Budgets and starts metering a routed request (see
/// [`crate::spend::meter`]); a 402 when a blocking Budget is spent.
pub(crate) fn meter(
    ctx: &Context<'_>,
    route: Route,
    model: &str,
    wire: Wire,
    head: &Head<'_>,
    body_len: usize,
    admission: Option<Admission>,
) -> Result<(Meter, Option<HeaderValue>), GatewayError> {
    let request = spend::meter::Request { route, model, wire, body_len, max_output: head.max_output() };
    let (mut meter, warning) =
        spend::meter::start(ctx.snapshot, ctx.caller.service_index, request, admission, ctx.now)?;
    let report = spend::meter::Report::default();
    meter.report_to(report.clone());
    ctx.audit.report(&report);
    Ok((meter, warning))
}

/// An answer made in-process (the mock provider), metered like an upstream's.
pub(crate) fn metered_local(
    ctx: &Context<'_>,
    response: Response<Body>,
    meter: Meter,
    strip_usage: bool,
) -> Response<Body> {
    use http_body_util::BodyExt as _;
    let (parts, body) = response.into_parts();
    let relay = Relay::answering(&parts, body, ctx.gateway.settings.read_timeout, Some(meter), strip_usage);
    Response::from_parts(parts, relay.boxed_unsync())
}

/// The answer with the budget warning header, when there is one, and — for a request the
/// response cache could not answer — marked a miss and recorded (see [`cache::Plan::miss`]).
pub(crate) fn finish(
    ctx: &Context<'_>,
    result: Result<Response<Body>, GatewayError>,
    warning: Option<HeaderValue>,
    cache: Option<(cache::Plan, Option<spend::meter::Report>)>,
) -> Result<Response<Body>, GatewayError> {
    let mut response = result?;
    if let Some(warning) = warning {
        response.headers_mut().insert(spend::budget::WARNING_HEADER.clone(), warning);
    }
    Ok(match cache {
        Some((plan, report)) => plan.miss(&ctx.gateway.cache, report, response),
        None => response,
    })
}

/// The response cache's plan for a routed request (see [`cache::plan`]) and, on a hit, the
/// answer.
pub(crate) async fn look_up(
    ctx: &Context<'_>,
    endpoint: cache::Endpoint,
    provider: &ProviderEntry,
    model: &str,
    head: &Head<'_>,
    body: &[u8],
    headers: &http::HeaderMap,
) -> (Option<cache::Plan>, Option<Response<Body>>) {
    let Some(mut plan) = cache::plan(ctx, endpoint, provider, model, head, body, headers) else {
        return (None, None);
    };
    let hit = ctx.gateway.cache.look_up(ctx, &mut plan, ctx.gateway.settings.read_timeout).await;
    (Some(plan), hit)
}

/// The cache's plan with the meter's report, when the answer is to be recorded (the entry
/// keeps what the answer cost).
pub(crate) fn recording(
    ctx: &Context<'_>,
    plan: Option<cache::Plan>,
) -> Option<(cache::Plan, Option<spend::meter::Report>)> {
    plan.map(|plan| {
        let report = if plan.writes() { ctx.audit.the_report().cloned() } else { None };
        (plan, report)
    })
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
    fn accounting_fields_are_read_leniently() {
        let head = parse_head(
            br#"{"model":"m","stream":true,"max_tokens":50,"stream_options":{"x":[1],"include_usage":false}}"#,
        )
        .unwrap();
        assert_eq!((head.stream, head.max_output(), head.stream_options), (Some(true), Some(50), Some(Some(false))));
        assert!(head.needs_usage_forced());
        let odd = parse_head(
            br#"{"model":"m","stream":"yes","max_tokens":-1,"max_output_tokens":2.5,"stream_options":null}"#,
        )
        .unwrap();
        assert_eq!((odd.stream, odd.max_output(), odd.stream_options), (None, None, None));
        let asked = parse_head(br#"{"model":"m","stream":true,"stream_options":{"include_usage":true}}"#).unwrap();
        assert!(!asked.needs_usage_forced());
        assert!(!parse_head(br#"{"model":"m"}"#).unwrap().needs_usage_forced());
    }

    #[test]
    fn determinism_is_read_from_temperature_and_seed() {
        for (body, deterministic) in [
            (r#"{"temperature":0}"#, true),
            (r#"{"temperature":0.0}"#, true),
            (r#"{"temperature":-0.0}"#, true),
            (r#"{"temperature":0.2}"#, false),
            (r#"{"temperature":"0"}"#, false),
            (r#"{"seed":42}"#, true),
            (r#"{"seed":-1,"temperature":1}"#, true),
            (r#"{"seed":1.5}"#, false),
            (r#"{"seed":"42"}"#, false),
            (r#"{"seed":null}"#, false),
            (r#"{}"#, false),
        ] {
            assert_eq!(parse_head(body.as_bytes()).unwrap().deterministic(), deterministic, "{body}");
        }
    }

    #[test]
    fn include_usage_is_spliced_in_or_merged() {
        let body = br#" {"model":"m","stream":true}"#;
        let spliced = with_include_usage(body, &parse_head(body).unwrap()).unwrap();
        let v: serde_json::Value = serde_json::from_slice(&spliced).unwrap();
        assert_eq!(v, serde_json::json!({"model":"m","stream":true,"stream_options":{"include_usage":true}}));
        let body = br#"{"model":"m","stream":true,"stream_options":{"include_usage":false,"other":1}}"#;
        let merged = with_include_usage(body, &parse_head(body).unwrap()).unwrap();
        let v: serde_json::Value = serde_json::from_slice(&merged).unwrap();
        assert_eq!(v["stream_options"], serde_json::json!({"include_usage":true,"other":1}));
    }

    #[test]
    fn head_refuses_non_objects_and_bad_json() {
        assert!(parse_head(br#"["gpt-4o"]"#).is_err());
        assert!(parse_head(b"").is_err());
        assert!(parse_head(br#"{"model": 5}"#).is_err());
        assert!(parse_head(br#"{"model":"x""#).is_err());
    }
}
