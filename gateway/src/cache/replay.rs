//! Answering a hit: the stored answer in the shape the client asked for. The same shape is
//! replayed byte for byte (one write); the other shape is converted ([`super::shape`]). A
//! streamed chat completion carries its usage chunk exactly when the client asked for one
//! (`stream_options.include_usage`), whichever client caused the entry.

use bytes::Bytes;
use http::{HeaderValue, Response, StatusCode, header};

use super::Plan;
use super::key::Endpoint;
use super::shape;
use super::store::{Answer, Entry};
use crate::body::{Body, full};
use crate::spend::strip::StripUsage;

static JSON: HeaderValue = HeaderValue::from_static("application/json");
static EVENT_STREAM: HeaderValue = HeaderValue::from_static("text/event-stream");
static NO_CACHE: HeaderValue = HeaderValue::from_static("no-cache");

/// The response to a hit, or `None` when the entry cannot answer this request (its shape did not
/// convert).
pub fn respond(plan: &Plan, entry: &Entry) -> Option<Response<Body>> {
    let body = body(plan, entry)?;
    let mut response = Response::new(full(body));
    *response.status_mut() = StatusCode::OK;
    let headers = response.headers_mut();
    if plan.stream {
        headers.insert(header::CONTENT_TYPE, EVENT_STREAM.clone());
        headers.insert(header::CACHE_CONTROL, NO_CACHE.clone());
    } else {
        headers.insert(header::CONTENT_TYPE, JSON.clone());
    }
    headers.insert(header::AGE, HeaderValue::from(entry.created.elapsed().as_secs()));
    Some(response)
}

/// The bytes of the answer in the requested shape.
fn body(plan: &Plan, entry: &Entry) -> Option<Bytes> {
    match (&entry.answer, plan.stream, plan.endpoint) {
        (Answer::Json(json), false, _) => Some(json.clone()),
        (Answer::Events(events), true, Endpoint::Chat) if plan.include_usage => {
            // A usage object (not `"usage":null`) is only ever the usage chunk's: quotes inside
            // strings are escaped. The stream then goes out as it is, without being parsed.
            if memchr::memmem::find(events, b"\"usage\":{").is_some() {
                Some(events.clone())
            } else {
                shape::chat_events_with_usage(events, &entry.usage)
            }
        }
        (Answer::Events(events), true, Endpoint::Chat) => Some(without_usage(events)),
        (Answer::Events(events), true, _) => Some(events.clone()),
        (Answer::Json(json), true, Endpoint::Chat) => shape::chat_json_to_events(json, plan.include_usage),
        (Answer::Json(json), true, Endpoint::Responses) => shape::responses_json_to_events(json),
        (Answer::Events(events), false, Endpoint::Chat) => shape::chat_events_to_json(events, Some(&entry.usage)),
        (Answer::Events(events), false, Endpoint::Responses) => shape::responses_events_to_json(events),
        (_, _, Endpoint::Embeddings) => None,
    }
}

/// A chat stream without its usage chunk (the same bytes when it has none).
fn without_usage(events: &Bytes) -> Bytes {
    let mut strip = StripUsage::default();
    let head = strip.frame(events.clone());
    match (head, strip.finish()) {
        (Some(head), Some(rest)) => [head, rest].concat().into(),
        (Some(only), None) | (None, Some(only)) => only,
        (None, None) => Bytes::new(),
    }
}
