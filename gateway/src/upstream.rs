//! The upstream HTTP client: hyper's pooled client over rustls (ring, Mozilla's root
//! certificates from `webpki-roots`, so no system CA bundle is needed in the image), HTTP/1.1
//! and HTTP/2 by ALPN, `TCP_NODELAY`, a connect timeout and an idle-connection timeout.
//!
//! hyper directly rather than reqwest: the gateway forwards bytes and needs no redirects,
//! cookies or URL handling, and reqwest re-parses the URL of every response (measured on the
//! proxy path: URL/IDNA parsing was the largest user-space item after hyper itself). URIs are
//! parsed once, when a snapshot is built.

use std::time::Duration;

use bytes::Bytes;
use http::{HeaderName, HeaderValue, Method, Request, Response, StatusCode, Uri, header};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper_rustls::{HttpsConnector, HttpsConnectorBuilder};
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::{TokioExecutor, TokioTimer};

use crate::error::GatewayError;
use crate::snapshot::{KeyEntry, ProviderEntry};

static CLIENT_REQUEST_ID: HeaderName = HeaderName::from_static("x-client-request-id");
static JSON: HeaderValue = HeaderValue::from_static("application/json");

/// A pooled upstream client.
pub type Client = hyper_util::client::legacy::Client<HttpsConnector<HttpConnector>, Full<Bytes>>;

/// Builds a client (for request bodies of type `B`: [`Client`]'s, or the Files API's streamed
/// uploads). Needs the process's rustls crypto provider installed (see `Gateway::new`).
pub fn client<B>(
    connect_timeout: Duration,
    idle_timeout: Duration,
) -> hyper_util::client::legacy::Client<HttpsConnector<HttpConnector>, B>
where
    B: http_body::Body + Send + 'static,
    B::Data: Send,
{
    let mut http = HttpConnector::new();
    http.set_nodelay(true);
    http.set_connect_timeout(Some(connect_timeout));
    http.enforce_http(false);
    let https = HttpsConnectorBuilder::new()
        .with_webpki_roots()
        .https_or_http()
        .enable_http1()
        .enable_http2()
        .wrap_connector(http);
    hyper_util::client::legacy::Client::builder(TokioExecutor::new())
        .pool_idle_timeout(idle_timeout)
        .pool_timer(TokioTimer::new())
        .build(https)
}

/// A short, key-free description of a client error, for the caller.
pub fn describe(error: &hyper_util::client::legacy::Error) -> &'static str {
    if error.is_connect() { "connection failed" } else { "the request could not be completed" }
}

/// One upstream call: which client, provider, key and URI.
pub struct Call<'a> {
    /// The client of this thread.
    pub client: &'a Client,
    /// Where to.
    pub provider: &'a ProviderEntry,
    /// Index of the key to use.
    pub key: Option<usize>,
    /// The URI.
    pub uri: &'a Uri,
    /// This request's id, passed on as `x-client-request-id`.
    pub request_id: &'a HeaderValue,
    /// How long a streaming upstream may stay silent.
    pub idle_timeout: Duration,
    /// The request's meter, handed to the relay of the answer (see [`Call::relay`]).
    pub meter: Option<crate::spend::meter::Meter>,
    /// Whether the gateway asked upstream for a usage chunk the client did not ask for, which
    /// the relay then removes.
    pub strip_usage: bool,
    /// The request's audit notes, told of retries.
    pub audit: Option<&'a crate::audit::Notes>,
}

impl Call<'_> {
    /// The relay of an answer, metered when the call carries a meter: the meter learns the
    /// status and whether the body is an event stream.
    pub fn relay<B>(&mut self, parts: &http::response::Parts, body: B) -> crate::relay::Relay<B> {
        crate::relay::Relay::answering(parts, body, self.idle_timeout, self.meter.take(), self.strip_usage)
    }

    /// A request to the call's URI with the provider's key and fixed headers.
    pub fn request(&self, method: Method, body: Bytes) -> Request<Full<Bytes>> {
        let key = self.key.and_then(|k| self.provider.keys.get(k));
        let mut request = Request::new(Full::new(body));
        *request.method_mut() = method;
        *request.uri_mut() = uri_for(self.uri, key);
        let headers = request.headers_mut();
        headers.insert(header::CONTENT_TYPE, JSON.clone());
        headers.insert(&CLIENT_REQUEST_ID, self.request_id.clone());
        for (name, value) in &self.provider.fixed_headers {
            headers.insert(name, value.clone());
        }
        if let Some(k) = key {
            headers.insert(&k.header, k.auth.clone());
        }
        if let Some(trace) = self.audit.and_then(|notes| notes.trace()) {
            headers.insert(&crate::trace::TRACEPARENT, trace.upstream_traceparent());
        }
        request
    }

    /// Sends a request built by [`Call::request`], failing over between the provider's keys.
    ///
    /// The call's key goes first, then the others by priority, skipping keys that are cooling
    /// down (unless all are: then the call's key is tried anyway). An answer of 429 or 5xx, a
    /// connection failure or a rejected key puts the key in cool-down (`retry-after` when the
    /// upstream sends one) and, while another key remains, the request goes to it. Nothing has
    /// reached the client at that point — only response headers were read — so a retry is
    /// invisible to it. With a single key there is no copy and no retry.
    pub async fn send(&self, request: Request<Full<Bytes>>) -> Result<Response<Incoming>, GatewayError> {
        let keys = &self.provider.keys;
        if keys.len() < 2 {
            return self.attempt(request).await;
        }
        let now = crate::clock::unix_millis();
        let primary = self.key.unwrap_or(0);
        let order = std::iter::once(primary).chain((0..keys.len()).filter(move |&k| k != primary));
        let mut candidates: Vec<usize> = order.filter(|&k| !keys[k].cooling(now)).collect();
        if candidates.is_empty() {
            candidates.push(primary);
        }
        let (parts, body) = request.into_parts();
        let mut outcome = Err(GatewayError::UpstreamUnavailable("no provider key could be tried".to_owned()));
        for (attempt, &k) in candidates.iter().enumerate() {
            let key = &keys[k];
            if attempt > 0
                && let Some(notes) = self.audit
            {
                notes.retried(k);
            }
            let mut request = Request::from_parts(parts.clone(), body.clone());
            request.headers_mut().insert(&key.header, key.auth.clone());
            *request.uri_mut() = uri_for(self.uri, Some(key));
            outcome = self.attempt(request).await;
            let Some(cooldown) = cooldown_after(&outcome) else { return outcome };
            key.cool_down(crate::clock::unix_millis() + cooldown.as_millis() as u64);
            if attempt + 1 < candidates.len() {
                tracing::warn!(provider = %self.provider.config.id, key = %key.label, ?cooldown, "upstream failed; trying the next key");
                if let Some(notes) = self.audit {
                    notes.attempt_failed(&self.provider.name, &key.label, failure_class(&outcome));
                }
            }
        }
        outcome
    }

    /// One attempt, waiting at most the provider's timeout for the response headers.
    /// Transport failures become 502/504; the provider refusing *our* key (401/403) becomes 502
    /// without its body, which can quote the key.
    async fn attempt(&self, request: Request<Full<Bytes>>) -> Result<Response<Incoming>, GatewayError> {
        let timeout = self.provider.config.timeout_seconds;
        let started = std::time::Instant::now();
        let timed = self.audit.filter(|notes| notes.timed());
        if let Some(notes) = timed {
            notes.upstream_started(crate::trace::unix_nanos());
        }
        let answer = tokio::time::timeout(Duration::from_secs(u64::from(timeout)), self.client.request(request)).await;
        if let Some(notes) = timed {
            notes.upstream_ended(crate::trace::unix_nanos());
        }
        let response = match answer {
            Err(_) => return Err(GatewayError::UpstreamTimeout(timeout)),
            Ok(Err(e)) => {
                tracing::warn!(provider = %self.provider.config.id, error = %e, "upstream request failed");
                return Err(GatewayError::UpstreamUnavailable(describe(&e).to_owned()));
            }
            Ok(Ok(r)) => r,
        };
        if let Some(notes) = self.audit {
            notes.upstream_took(started.elapsed());
        }
        let status = response.status();
        if status == StatusCode::UNAUTHORIZED || status == StatusCode::FORBIDDEN {
            tracing::error!(provider = %self.provider.config.id, status = status.as_u16(), "upstream rejected the provider key");
            return Err(GatewayError::UpstreamRejectedKey(status.as_u16()));
        }
        Ok(response)
    }
}

/// `uri` with the key's own endpoint (scheme and host), when it has one.
fn uri_for(uri: &Uri, key: Option<&KeyEntry>) -> Uri {
    let Some((scheme, authority)) = key.and_then(|k| k.endpoint.as_ref()) else { return uri.clone() };
    let mut parts = uri.clone().into_parts();
    parts.scheme = Some(scheme.clone());
    parts.authority = Some(authority.clone());
    Uri::from_parts(parts).unwrap_or_else(|_| uri.clone())
}

/// Cool-down after an upstream failure.
const FAILURE_COOLDOWN: Duration = Duration::from_secs(30);
/// Cool-down after the provider rejected a key: a configuration problem, not a blip.
const REJECTED_COOLDOWN: Duration = Duration::from_secs(300);
/// The longest `retry-after` honoured.
const MAX_COOLDOWN: Duration = Duration::from_secs(3600);

/// How long to skip a key after this outcome, or `None` when the outcome is final.
fn cooldown_after(outcome: &Result<Response<Incoming>, GatewayError>) -> Option<Duration> {
    match outcome {
        Ok(r) if r.status() == StatusCode::TOO_MANY_REQUESTS || r.status().is_server_error() => {
            Some(retry_after(r.headers()).map_or(FAILURE_COOLDOWN, |d| d.min(MAX_COOLDOWN)))
        }
        Ok(_) => None,
        Err(GatewayError::UpstreamUnavailable(_)) => Some(FAILURE_COOLDOWN),
        Err(GatewayError::UpstreamRejectedKey(_)) => Some(REJECTED_COOLDOWN),
        Err(_) => None,
    }
}

/// The class of a failed attempt, as `uprox_upstream_errors_total` names it.
fn failure_class(outcome: &Result<Response<Incoming>, GatewayError>) -> &'static str {
    match outcome {
        Ok(r) if r.status() == StatusCode::TOO_MANY_REQUESTS => "http_429",
        Ok(r) if r.status().is_server_error() => "http_5xx",
        Ok(_) => "http_4xx",
        Err(GatewayError::UpstreamTimeout(_)) => "timeout",
        Err(GatewayError::UpstreamRejectedKey(_)) => "rejected_key",
        Err(_) => "connect",
    }
}

/// `retry-after` in seconds (the HTTP-date form is not used by LLM providers).
fn retry_after(headers: &http::HeaderMap) -> Option<Duration> {
    let value = headers.get(header::RETRY_AFTER)?.to_str().ok()?.trim();
    value.parse::<u64>().ok().map(Duration::from_secs)
}
