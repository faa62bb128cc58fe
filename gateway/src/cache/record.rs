//! Recording a miss: the answer's body is wrapped so the frames the client receives are kept
//! (reference-counted, not copied) as they pass, up to the entry limit. When the body has ended
//! normally, the answer is stored as the body is dropped — after the body inside it, whose meter
//! then has settled and reported what the answer cost. An answer that
//! fails, is cut short (the client left), grows past the limit, or is a stream that did not
//! finish (no `[DONE]`, no `response.completed`) is not stored.

use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Instant;

use bytes::{Bytes, BytesMut};
use http_body::{Frame, SizeHint};
use http_body_util::BodyExt as _;
use uprox_crds::prices::Usage;

use super::Plan;
use super::key::Endpoint;
use super::store::{Answer, Entry, Store};
use crate::body::{Body, BoxError};
use crate::spend::meter::Report;

/// `response` with its body recorded into `store` under `plan`.
pub fn recording(store: Store, plan: Plan, report: Report, response: http::Response<Body>) -> http::Response<Body> {
    let sse = response
        .headers()
        .get(http::header::CONTENT_TYPE)
        .is_some_and(|v| v.as_bytes().starts_with(b"text/event-stream"));
    let (parts, inner) = response.into_parts();
    let recorder = Recorder { inner, kept: Some(Vec::new()), kept_bytes: 0, ended: false, sse, store, plan, report };
    http::Response::from_parts(parts, recorder.boxed_unsync())
}

struct Recorder {
    inner: Body,
    /// The frames so far; `None` once the answer is known not to be stored.
    kept: Option<Vec<Bytes>>,
    kept_bytes: usize,
    /// The body ended normally (returned its end, or said it is at its end: hyper then stops
    /// polling).
    ended: bool,
    sse: bool,
    store: Store,
    plan: Plan,
    report: Report,
}

impl Recorder {
    fn keep(&mut self, data: &Bytes) {
        let Some(kept) = &mut self.kept else { return };
        self.kept_bytes += data.len();
        if self.kept_bytes > self.plan.max_entry_bytes {
            self.kept = None;
        } else {
            kept.push(data.clone());
        }
    }

    fn store(&mut self) {
        let Some(kept) = self.kept.take() else { return };
        let bytes = match kept.as_slice() {
            [one] => one.clone(),
            frames => {
                let mut joined = BytesMut::with_capacity(self.kept_bytes);
                for frame in frames {
                    joined.extend_from_slice(frame);
                }
                joined.freeze()
            }
        };
        if bytes.is_empty() || (self.sse && !finished(self.plan.endpoint, &bytes)) {
            return;
        }
        let answer = if self.sse { Answer::Events(bytes) } else { Answer::Json(bytes) };
        let (cost_pico_usd, usage, model) = match self.report.get() {
            Some(made) => (made.cost_pico_usd, made.usage, made.model.clone()),
            None => (0, Usage::default(), self.plan.model.clone()),
        };
        let entry = Entry {
            answer,
            provider: self.plan.provider.clone(),
            model,
            cost_pico_usd,
            usage,
            ttl: self.plan.ttl,
            created: Instant::now(),
        };
        self.store.insert(self.plan.key, entry);
    }
}

impl Drop for Recorder {
    fn drop(&mut self) {
        if self.ended && self.kept.is_some() {
            // Settles the meter, which reports the cost, before the entry is made.
            self.inner = crate::body::full(Bytes::new());
            self.store();
        }
    }
}

/// Whether an event stream is a whole answer: chat streams end with `data: [DONE]`, Responses
/// streams with a `response.completed` event.
fn finished(endpoint: Endpoint, events: &[u8]) -> bool {
    match endpoint {
        Endpoint::Chat => {
            let end = events.trim_ascii_end();
            end.ends_with(b"data: [DONE]") || end.ends_with(b"data:[DONE]")
        }
        Endpoint::Responses => memchr::memmem::find(events, b"\"response.completed\"").is_some(),
        Endpoint::Embeddings => false,
    }
}

impl http_body::Body for Recorder {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = &mut *self;
        let polled = Pin::new(&mut this.inner).poll_frame(cx);
        match &polled {
            Poll::Ready(Some(Ok(frame))) => {
                if let Some(data) = frame.data_ref() {
                    this.keep(data);
                }
                this.ended = this.inner.is_end_stream();
            }
            Poll::Ready(Some(Err(_))) => this.kept = None,
            Poll::Ready(None) => this.ended = true,
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_finished_streams_are_whole_answers() {
        assert!(finished(Endpoint::Chat, b"data: {}\n\ndata: [DONE]\n\n"));
        assert!(finished(Endpoint::Chat, b"data: {}\r\n\r\ndata:[DONE]\r\n\r\n"));
        assert!(!finished(Endpoint::Chat, b"data: {}\n\n"));
        assert!(!finished(Endpoint::Chat, b"data: {\"error\":{}}\n\n"));
        assert!(finished(
            Endpoint::Responses,
            b"event: response.completed\ndata: {\"type\":\"response.completed\"}\n\n"
        ));
        assert!(!finished(Endpoint::Responses, b"event: response.failed\ndata: {\"type\":\"response.failed\"}\n\n"));
    }
}
