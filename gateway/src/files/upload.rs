//! The streamed upload: the client's multipart body goes upstream as it arrives, never
//! collected whole, through [`UploadBody`], which counts bytes and fails the stream once it
//! passes the limit (`Settings::max_file_bytes`). A `Content-Length` over the limit is refused
//! before any upstream call (by the handler); a chunked body is cut when it crosses the limit,
//! which aborts the upstream request, and the client gets 413.
//!
//! One key, no retry: a body that is being streamed cannot be replayed to another key. The key
//! is chosen before any byte is sent — the Service's pinned or the first key, or the next
//! healthy one when that one is cooling down — and a 429, 5xx or rejected-key answer cools it
//! down for the next request, as on the other endpoints.

use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU8, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http::{HeaderMap, HeaderName, HeaderValue, Method, Request, Response, StatusCode, Uri, header};
use http_body::{Body, Frame, SizeHint};
use hyper::body::Incoming;
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::connect::HttpConnector;

use crate::body::BoxError;
use crate::error::GatewayError;
use crate::snapshot::ProviderEntry;

/// The pooled client that sends streamed bodies.
pub type UploadClient = hyper_util::client::legacy::Client<HttpsConnector<HttpConnector>, UploadBody>;

const READING: u8 = 0;
const FINISHED: u8 = 1;
const TOO_LARGE: u8 = 2;
const CLIENT_FAILED: u8 = 3;

/// How an upload body ended, shared between the body (in the client) and the handler.
#[derive(Debug, Default)]
pub struct Outcome {
    state: AtomicU8,
    finished: tokio::sync::Notify,
    limit: usize,
}

impl Outcome {
    fn set(&self, state: u8) {
        self.state.store(state, Ordering::Release);
        self.finished.notify_waiters();
        self.finished.notify_one();
    }

    /// Whether the body was cut for passing the limit.
    pub fn too_large(&self) -> bool {
        self.state.load(Ordering::Acquire) == TOO_LARGE
    }

    /// Whether reading the client's body failed (it disconnected, or sent a broken chunk).
    pub fn client_failed(&self) -> bool {
        self.state.load(Ordering::Acquire) == CLIENT_FAILED
    }

    /// Resolves once the body ended, one way or another.
    pub async fn ended(&self) {
        loop {
            let notified = self.finished.notified();
            if self.state.load(Ordering::Acquire) != READING {
                return;
            }
            notified.await;
        }
    }
}

/// The body passed the limit.
#[derive(Debug, thiserror::Error)]
#[error("the upload exceeds the limit of {0} bytes")]
pub struct TooLarge(pub u64);

/// The client's body, counted and cut at the limit.
pub struct UploadBody {
    inner: Incoming,
    seen: u64,
    limit: u64,
    outcome: Arc<Outcome>,
}

impl UploadBody {
    /// Wraps the client's body; `outcome` says how it ended.
    pub fn new(inner: Incoming, limit: usize) -> (Self, Arc<Outcome>) {
        let outcome = Arc::new(Outcome { limit, ..Outcome::default() });
        (Self { inner, seen: 0, limit: limit as u64, outcome: outcome.clone() }, outcome)
    }
}

impl Drop for UploadBody {
    fn drop(&mut self) {
        // Dropped unfinished (the upstream answered early or the request was cancelled).
        if self.outcome.state.load(Ordering::Acquire) == READING {
            self.outcome.set(FINISHED);
        }
    }
}

impl Body for UploadBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = &mut *self;
        match Pin::new(&mut this.inner).poll_frame(cx) {
            Poll::Pending => Poll::Pending,
            Poll::Ready(None) => {
                this.outcome.set(FINISHED);
                Poll::Ready(None)
            }
            Poll::Ready(Some(Err(e))) => {
                this.outcome.set(CLIENT_FAILED);
                Poll::Ready(Some(Err(Box::new(e))))
            }
            Poll::Ready(Some(Ok(frame))) => {
                this.seen += frame.data_ref().map_or(0, |d| d.len() as u64);
                if this.seen > this.limit {
                    this.outcome.set(TOO_LARGE);
                    return Poll::Ready(Some(Err(Box::new(TooLarge(this.limit)))));
                }
                Poll::Ready(Some(Ok(frame)))
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

/// Cool-down after an upstream failure.
const FAILURE_COOLDOWN: Duration = Duration::from_secs(30);
/// Cool-down after the provider rejected a key.
const REJECTED_COOLDOWN: Duration = Duration::from_secs(300);

/// One streamed upload to `uri`.
pub struct Upload<'a> {
    /// The client of this thread.
    pub client: &'a UploadClient,
    /// Where to.
    pub provider: &'a ProviderEntry,
    /// The preferred key (pinned, else the first).
    pub key: Option<usize>,
    /// The URI.
    pub uri: &'a Uri,
    /// Headers to send besides the key and the provider's fixed ones (the client's
    /// `content-type` with its boundary, `x-client-request-id`, …).
    pub headers: HeaderMap,
}

impl Upload<'_> {
    /// Sends the body and waits for the response headers: without limit while the body is
    /// being sent (its size is bounded), then for at most the provider's timeout.
    pub async fn send(self, body: UploadBody, outcome: &Outcome) -> Result<Response<Incoming>, GatewayError> {
        let keys = &self.provider.keys;
        let now = crate::clock::unix_millis();
        let key = self.key.map(|preferred| {
            if keys.get(preferred).is_some_and(|k| k.cooling(now)) {
                (0..keys.len()).find(|&k| !keys[k].cooling(now)).unwrap_or(preferred)
            } else {
                preferred
            }
        });
        let entry = key.and_then(|k| keys.get(k));
        let mut request = Request::new(body);
        *request.method_mut() = Method::POST;
        *request.uri_mut() = uri_for(self.uri, entry);
        let headers = request.headers_mut();
        *headers = self.headers;
        for (name, value) in &self.provider.fixed_headers {
            headers.insert(name, value.clone());
        }
        if let Some(k) = entry {
            headers.insert(&k.header, k.auth.clone());
        }

        let timeout = self.provider.config.timeout_seconds;
        let answer = self.client.request(request);
        let deadline = async {
            outcome.ended().await;
            tokio::time::sleep(Duration::from_secs(u64::from(timeout))).await;
        };
        let result = tokio::select! {
            r = answer => r,
            () = deadline => return Err(GatewayError::UpstreamTimeout(timeout)),
        };
        let response = match result {
            Ok(r) => r,
            Err(_) if outcome.too_large() => return Err(GatewayError::PayloadTooLarge(outcome.limit)),
            Err(_) if outcome.client_failed() => {
                return Err(GatewayError::InvalidRequest("Could not read the request body".to_owned()));
            }
            Err(e) => {
                tracing::warn!(provider = %self.provider.config.id, error = %e, "upstream upload failed");
                if let Some(k) = entry {
                    k.cool_down(crate::clock::unix_millis() + FAILURE_COOLDOWN.as_millis() as u64);
                }
                return Err(GatewayError::UpstreamUnavailable(crate::upstream::describe(&e).to_owned()));
            }
        };
        let status = response.status();
        if status == StatusCode::UNAUTHORIZED || status == StatusCode::FORBIDDEN {
            tracing::error!(provider = %self.provider.config.id, status = status.as_u16(), "upstream rejected the provider key");
            if let Some(k) = entry {
                k.cool_down(crate::clock::unix_millis() + REJECTED_COOLDOWN.as_millis() as u64);
            }
            return Err(GatewayError::UpstreamRejectedKey(status.as_u16()));
        }
        if (status == StatusCode::TOO_MANY_REQUESTS || status.is_server_error())
            && let Some(k) = entry
        {
            k.cool_down(crate::clock::unix_millis() + FAILURE_COOLDOWN.as_millis() as u64);
        }
        Ok(response)
    }
}

/// `uri` with the key's own endpoint (scheme and host), when it has one.
pub(crate) fn uri_for(uri: &Uri, key: Option<&crate::snapshot::KeyEntry>) -> Uri {
    let Some((scheme, authority)) = key.and_then(|k| k.endpoint.as_ref()) else { return uri.clone() };
    let mut parts = uri.clone().into_parts();
    parts.scheme = Some(scheme.clone());
    parts.authority = Some(authority.clone());
    Uri::from_parts(parts).unwrap_or_else(|_| uri.clone())
}

/// The headers of an upload request: the client's `content-type` (boundary and all), the
/// request id, and the few client headers forwarded elsewhere too.
pub fn upload_headers(client: &HeaderMap, content_type: &HeaderValue, request_id: &HeaderValue) -> HeaderMap {
    static CLIENT_REQUEST_ID: HeaderName = HeaderName::from_static("x-client-request-id");
    let mut headers = HeaderMap::with_capacity(6);
    headers.insert(header::CONTENT_TYPE, content_type.clone());
    headers.insert(&CLIENT_REQUEST_ID, request_id.clone());
    for name in ["accept", "openai-beta", "user-agent"] {
        if let Some(v) = client.get(name) {
            headers.insert(name, v.clone());
        }
    }
    headers
}
