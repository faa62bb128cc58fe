//! The request log tests assert on, and one-shot fault injection.

use std::sync::{Mutex, PoisonError};

use bytes::Bytes;
use http::Method;
use serde_json::Value;

/// One request the server answered, as the client sent it.
#[derive(Debug, Clone)]
pub struct RecordedRequest {
    pub method: Method,
    /// The URL path, e.g. `/api/v1/namespaces/x/secrets/y`.
    pub path: String,
    /// Decoded query parameters in request order (kube's leading empty `&` dropped).
    pub query: Vec<(String, String)>,
    pub content_type: Option<String>,
    pub accept: Option<String>,
    pub body: Bytes,
    /// The HTTP status of the answer (200 for a watch that was opened).
    pub status: u16,
}

impl RecordedRequest {
    /// The first value of query parameter `key`.
    pub fn query_param(&self, key: &str) -> Option<&str> {
        self.query.iter().find(|(k, _)| k == key).map(|(_, v)| v.as_str())
    }

    /// The `fieldManager` query parameter.
    pub fn field_manager(&self) -> Option<&str> {
        self.query_param("fieldManager")
    }

    /// Whether this was a watch (`watch=true` or `watch=1`).
    pub fn is_watch(&self) -> bool {
        matches!(self.query_param("watch"), Some("true" | "1"))
    }

    /// The body as JSON, if it is JSON.
    pub fn json(&self) -> Option<Value> {
        serde_json::from_slice(&self.body).ok()
    }
}

struct Fault {
    method: Method,
    path_prefix: String,
    status: u16,
}

/// The request log and the pending injected faults.
#[derive(Default)]
pub(crate) struct Recorder {
    requests: Mutex<Vec<RecordedRequest>>,
    faults: Mutex<Vec<Fault>>,
}

impl Recorder {
    pub fn record(&self, request: RecordedRequest) {
        self.requests.lock().unwrap_or_else(PoisonError::into_inner).push(request);
    }

    pub fn requests(&self) -> Vec<RecordedRequest> {
        self.requests.lock().unwrap_or_else(PoisonError::into_inner).clone()
    }

    pub fn clear(&self) {
        self.requests.lock().unwrap_or_else(PoisonError::into_inner).clear();
    }

    pub fn add_fault(&self, method: Method, path_prefix: &str, status: u16) {
        let fault = Fault { method, path_prefix: path_prefix.to_owned(), status };
        self.faults.lock().unwrap_or_else(PoisonError::into_inner).push(fault);
    }

    /// Consumes the first fault matching this request, if any.
    pub fn take_fault(&self, method: &Method, path: &str) -> Option<u16> {
        let mut faults = self.faults.lock().unwrap_or_else(PoisonError::into_inner);
        let index = faults.iter().position(|f| f.method == *method && path.starts_with(&f.path_prefix))?;
        Some(faults.remove(index).status)
    }
}
