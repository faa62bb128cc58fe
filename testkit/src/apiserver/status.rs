//! Failures as Kubernetes `Status` bodies.
//!
//! Every refused request is answered with the JSON `Status` the real API server sends (`kind`,
//! `status: Failure`, `reason`, `code`, `message`, optional `details`), which kube-rs turns into
//! `kube::Error::Api`. The reasons and message shapes are the ones client code matches on
//! (`NotFound`, `AlreadyExists`, `Conflict`, `Expired`, …); nothing here knows about HTTP
//! plumbing.

use serde_json::{Value, json};

use super::meta::ResourceKey;

/// A refused request: HTTP status code, machine-readable reason and message.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct ApiError {
    pub code: u16,
    pub reason: &'static str,
    pub message: String,
    pub details: Option<Value>,
}

impl ApiError {
    pub fn new(code: u16, reason: &'static str, message: impl Into<String>) -> Self {
        Self { code, reason, message: message.into(), details: None }
    }

    /// An injected fault or any other bare code: the reason the real server uses for it.
    pub fn from_code(code: u16, message: impl Into<String>) -> Self {
        let reason = match code {
            400 => "BadRequest",
            401 => "Unauthorized",
            403 => "Forbidden",
            404 => "NotFound",
            405 => "MethodNotAllowed",
            409 => "Conflict",
            410 => "Expired",
            415 => "UnsupportedMediaType",
            422 => "Invalid",
            429 => "TooManyRequests",
            500 => "InternalError",
            503 => "ServiceUnavailable",
            504 => "Timeout",
            _ => "Unknown",
        };
        Self::new(code, reason, message)
    }

    pub fn bad_request(message: impl Into<String>) -> Self {
        Self::new(400, "BadRequest", message)
    }

    pub fn invalid(message: impl Into<String>) -> Self {
        Self::new(422, "Invalid", message)
    }

    pub fn method_not_allowed(message: impl Into<String>) -> Self {
        Self::new(405, "MethodNotAllowed", message)
    }

    pub fn unsupported_media_type(content_type: &str) -> Self {
        Self::new(
            415,
            "UnsupportedMediaType",
            format!(
                "the body of the request was in an unknown format - accepted media types include: application/json-patch+json, application/merge-patch+json, application/apply-patch+yaml, application/strategic-merge-patch+json; got {content_type:?}"
            ),
        )
    }

    /// The path names no resource this server can serve.
    pub fn no_route(path: &str) -> Self {
        Self::new(404, "NotFound", format!("the server could not find the requested resource ({path})"))
    }

    pub fn not_found(resource: &ResourceKey, name: &str) -> Self {
        Self::new(404, "NotFound", format!("{} {name:?} not found", resource.group_resource()))
            .with_details(resource, name)
    }

    pub fn already_exists(resource: &ResourceKey, name: &str) -> Self {
        Self::new(409, "AlreadyExists", format!("{} {name:?} already exists", resource.group_resource()))
            .with_details(resource, name)
    }

    /// Optimistic concurrency: the caller's `resourceVersion` (or delete precondition) is stale.
    pub fn conflict(resource: &ResourceKey, name: &str) -> Self {
        Self::new(
            409,
            "Conflict",
            format!(
                "Operation cannot be fulfilled on {} {name:?}: the object has been modified; please apply your changes to the latest version and try again",
                resource.group_resource()
            ),
        )
        .with_details(resource, name)
    }

    /// Server-side apply found fields owned by other managers with other values.
    pub fn apply_conflict(api_version: &str, conflicts: &[(String, String)]) -> Self {
        let causes: Vec<Value> = conflicts
            .iter()
            .map(|(manager, field)| {
                json!({
                    "reason": "FieldManagerConflict",
                    "message": format!("conflict with {manager:?} using {api_version}"),
                    "field": field,
                })
            })
            .collect();
        let listed: Vec<String> = conflicts
            .iter()
            .map(|(manager, field)| format!("conflict with {manager:?} using {api_version}: {field}"))
            .collect();
        let noun = if conflicts.len() == 1 { "conflict" } else { "conflicts" };
        let mut error =
            Self::new(409, "Conflict", format!("Apply failed with {} {noun}: {}", conflicts.len(), listed.join("\n")));
        error.details = Some(json!({ "causes": causes }));
        error
    }

    /// A watch asked for history the server no longer has: the client must re-list.
    pub fn expired(requested: u64, oldest: u64) -> Self {
        Self::new(410, "Expired", format!("too old resource version: {requested} ({oldest})"))
    }

    fn with_details(mut self, resource: &ResourceKey, name: &str) -> Self {
        self.details = Some(json!({ "name": name, "group": resource.group, "kind": resource.plural }));
        self
    }

    /// The `Status` object sent as the response body (or inside a watch `ERROR` event).
    pub fn to_status(&self) -> Value {
        let mut status = json!({
            "kind": "Status",
            "apiVersion": "v1",
            "metadata": {},
            "status": "Failure",
            "message": self.message,
            "reason": self.reason,
            "code": self.code,
        });
        if let (Some(details), Some(map)) = (&self.details, status.as_object_mut()) {
            map.insert("details".to_owned(), details.clone());
        }
        status
    }
}
