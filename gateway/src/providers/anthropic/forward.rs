//! Anthropic over HTTP: translates the client's chat completion, sends it to `/v1/messages`
//! with the provider's `x-api-key` and `anthropic-version`, and translates what comes back — a
//! whole message, an SSE stream (event by event, through [`Translate`] and a [`Translator`]),
//! or an error (with its `retry-after` kept). The translations themselves are the pure
//! functions of this module's siblings; [`super::responses`] reuses this for the Responses API.

use std::collections::VecDeque;
use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::Bytes;
use http::{HeaderValue, Method, Response, header};
use http_body::{Body as HttpBody, Frame};
use http_body_util::{BodyExt as _, Limited};
use hyper::body::Incoming;

use super::{StreamTranslator, translate_error, translate_request, translate_response};
use crate::body::{Body, BoxError, full};
use crate::error::GatewayError;
use crate::relay::Relay;
use crate::upstream::Call;

/// Largest non-streamed Anthropic answer read (or error body).
pub(super) const MAX_RESPONSE_BYTES: usize = 32 * 1024 * 1024;

/// Sends one chat completion to Anthropic and answers in OpenAI's shape.
pub async fn forward(mut call: Call<'_>, client_body: &[u8]) -> Result<Response<Body>, GatewayError> {
    let translated = translate_request(client_body)?;
    let request = call.request(Method::POST, translated.body);
    let (parts, incoming) = call.send(request).await?.into_parts();
    let body = call.relay(&parts, incoming);

    if !parts.status.is_success() {
        return Ok(error_response(&parts, body).await);
    }

    if translated.stream {
        let translator = StreamTranslator::new(&translated.model, translated.include_usage);
        return Ok(event_stream(body, translator));
    }

    let bytes = read_answer(body).await?;
    Ok(json_response(translate_response(&bytes, &translated.model)?))
}

/// The client's streamed answer: the upstream's SSE translated event by event by `translator`.
pub(super) fn event_stream<T: Translator + Unpin + Send + 'static>(
    body: Relay<Incoming>,
    translator: T,
) -> Response<Body> {
    let mut response = Response::new(Translate::new(body, translator).boxed_unsync());
    let headers = response.headers_mut();
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static("text/event-stream"));
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    response
}

/// A whole, non-streamed answer, up to [`MAX_RESPONSE_BYTES`].
pub(super) async fn read_answer(body: Relay<Incoming>) -> Result<Bytes, GatewayError> {
    Ok(Limited::new(body, MAX_RESPONSE_BYTES)
        .collect()
        .await
        .map_err(|e| GatewayError::UpstreamUnavailable(format!("the answer could not be read: {e}")))?
        .to_bytes())
}

/// The client's answer to an Anthropic error response: the mapped status and OpenAI-shaped
/// body, with the upstream's `retry-after` kept.
pub(super) async fn error_response(parts: &http::response::Parts, body: Relay<Incoming>) -> Response<Body> {
    let bytes = Limited::new(body, MAX_RESPONSE_BYTES).collect().await.map(|c| c.to_bytes()).unwrap_or_default();
    let (status, error) = translate_error(parts.status.as_u16(), &bytes);
    let mut response = json_response(error);
    *response.status_mut() = status;
    if let Some(retry_after) = parts.headers.get(header::RETRY_AFTER) {
        response.headers_mut().insert(header::RETRY_AFTER, retry_after.clone());
    }
    response
}

pub(super) fn json_response(body: Bytes) -> Response<Body> {
    let mut response = Response::new(full(body));
    response.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
    response
}

/// A stream translation: upstream SSE bytes in, client events out.
pub trait Translator {
    /// Feeds upstream bytes; returns the complete client events they finish, possibly none.
    fn push(&mut self, chunk: &[u8]) -> Vec<Bytes>;
    /// The upstream ended; returns the remaining client events.
    fn finish(&mut self) -> Vec<Bytes>;
}

impl Translator for StreamTranslator {
    fn push(&mut self, chunk: &[u8]) -> Vec<Bytes> {
        StreamTranslator::push(self, chunk)
    }

    fn finish(&mut self) -> Vec<Bytes> {
        StreamTranslator::finish(self)
    }
}

/// A body that turns Anthropic SSE bytes into client events as they arrive.
pub struct Translate<B, T = StreamTranslator> {
    inner: B,
    translator: T,
    ready: VecDeque<Bytes>,
    /// The upstream body ended; `Some(error)` when it broke.
    ended: Option<Option<BoxError>>,
}

impl<B, T> Translate<B, T> {
    /// Wraps an upstream body.
    pub fn new(inner: B, translator: T) -> Self {
        Self { inner, translator, ready: VecDeque::new(), ended: None }
    }
}

impl<B, T> HttpBody for Translate<B, T>
where
    B: HttpBody<Data = Bytes, Error = BoxError> + Unpin,
    T: Translator + Unpin,
{
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = &mut *self;
        loop {
            if let Some(event) = this.ready.pop_front() {
                return Poll::Ready(Some(Ok(Frame::data(event))));
            }
            if let Some(ended) = this.ended.as_mut() {
                // The translator's closing events are out; a transport error, if any, ends the
                // response abnormally so the client cannot take it for a complete one.
                return Poll::Ready(ended.take().map(Err));
            }
            match Pin::new(&mut this.inner).poll_frame(cx) {
                Poll::Ready(Some(Ok(frame))) => {
                    if let Ok(data) = frame.into_data() {
                        this.ready.extend(this.translator.push(&data));
                    }
                }
                Poll::Ready(Some(Err(e))) => {
                    tracing::warn!(error = %e, "Anthropic stream broke off");
                    this.ready.extend(this.translator.finish());
                    this.ended = Some(Some(e));
                }
                Poll::Ready(None) => {
                    this.ready.extend(this.translator.finish());
                    this.ended = Some(None);
                }
                Poll::Pending => return Poll::Pending,
            }
        }
    }
}
