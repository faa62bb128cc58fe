//! The response body that holds an admission: it releases the concurrency slot and charges
//! the tokens it read when the response ends or is dropped.

use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::Bytes;
use http_body::{Body as HttpBody, Frame, SizeHint};

use super::{Admission, Usage};
use crate::body::{Body, BoxError};

/// The response with its `x-ratelimit-*` headers, holding the admission (see [`hold`]).
pub fn respond(response: http::Response<Body>, admission: Admission, metered: bool) -> http::Response<Body> {
    let (mut parts, body) = response.into_parts();
    admission.headers.write(&mut parts.headers);
    http::Response::from_parts(parts, hold(body, admission, metered))
}

/// Holds the admission for the whole response: concurrency slots are released and the usage
/// read from the body is charged when the body ends or is dropped. Without a concurrency or
/// tokens-per-minute limit the body is returned as is.
pub fn hold(body: Body, admission: Admission, metered: bool) -> Body {
    use http_body_util::BodyExt as _;
    if !admission.set.wraps {
        return body;
    }
    let usage = (metered && admission.set.counts_tokens).then(Usage::default);
    Held { inner: body, admission: Some(admission), usage }.boxed_unsync()
}

struct Held {
    inner: Body,
    admission: Option<Admission>,
    usage: Option<Usage>,
}

impl Held {
    fn finish(&mut self) {
        if let Some(admission) = self.admission.take()
            && let Some(tokens) = self.usage.as_ref().map(Usage::tokens).filter(|t| *t > 0)
        {
            for limiter in admission.set.limiters.iter() {
                limiter.charge(tokens);
            }
        }
    }
}

impl Drop for Held {
    fn drop(&mut self) {
        self.finish();
    }
}

impl HttpBody for Held {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = &mut *self;
        let polled = Pin::new(&mut this.inner).poll_frame(cx);
        match &polled {
            Poll::Ready(Some(Ok(frame))) => {
                if let (Some(usage), Some(data)) = (this.usage.as_mut(), frame.data_ref()) {
                    usage.scan(data);
                }
            }
            Poll::Ready(None) | Poll::Ready(Some(Err(_))) => this.finish(),
            Poll::Pending => {}
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}
