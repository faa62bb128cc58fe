//! The response body that holds an admission of an endpoint without a meter (model listings,
//! files): it releases the concurrency slots when the response ends or is dropped. Metered
//! endpoints hand their admission to the request's meter instead (see `spend::meter`), which
//! also charges the tokens the answer reports.

use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::Bytes;
use http_body::{Body as HttpBody, Frame, SizeHint};

use super::Admission;
use crate::body::{Body, BoxError};

/// The response with its `x-ratelimit-*` headers, holding the admission (see [`hold`]).
pub fn respond(response: http::Response<Body>, admission: Admission) -> http::Response<Body> {
    let (mut parts, body) = response.into_parts();
    admission.headers.write(&mut parts.headers);
    http::Response::from_parts(parts, hold(body, admission))
}

/// Holds the admission for the whole response, so concurrency slots are released when the body
/// ends or is dropped. Without a concurrency limit the body is returned as is.
pub fn hold(body: Body, admission: Admission) -> Body {
    use http_body_util::BodyExt as _;
    if !admission.set.wraps {
        return body;
    }
    Held { inner: body, admission: Some(admission) }.boxed_unsync()
}

struct Held {
    inner: Body,
    admission: Option<Admission>,
}

impl HttpBody for Held {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = &mut *self;
        let polled = Pin::new(&mut this.inner).poll_frame(cx);
        if let Poll::Ready(None) | Poll::Ready(Some(Err(_))) = &polled {
            this.admission = None;
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
