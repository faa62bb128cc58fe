//! Every way a gateway request can fail, and how each is answered: one exhaustive `match` from
//! [`GatewayError`] to an HTTP status and an OpenAI-shaped body
//! `{"error": {"message", "type", "param", "code"}}`.
//!
//! Messages are written for the caller: they never contain a provider key, a token, or the
//! names of resources outside the caller's reach. Details meant for operators go to the log.

use bytes::Bytes;
use http::{HeaderValue, Response, StatusCode, header};
use serde::Serialize;

use crate::body::{Body, full};

/// A failed request.
#[derive(Debug, thiserror::Error)]
pub enum GatewayError {
    /// No credential in `Authorization: Bearer` (or `api-key`).
    #[error("Missing API key")]
    MissingCredential,
    /// The credential is not a live token: unknown, revoked, malformed or expired.
    #[error("Invalid or revoked API key")]
    InvalidCredential,
    /// A scope, allowlist or fail-closed rule refused the request.
    #[error("{0}")]
    Forbidden(String),
    /// The body is not the JSON the endpoint expects.
    #[error("{0}")]
    InvalidRequest(String),
    /// A required field is absent.
    #[error("Missing required field: {0}")]
    MissingField(&'static str),
    /// A field holds a value the endpoint does not accept.
    #[error("{message}")]
    InvalidParam {
        /// The field.
        param: &'static str,
        /// What is wrong with it.
        message: String,
    },
    /// No provider this caller may use serves the model.
    #[error("The model `{0}` does not exist or you do not have access to it.")]
    UnknownModel(String),
    /// No such endpoint.
    #[error("Unknown endpoint: {method} {path}")]
    NotFound {
        /// Request method.
        method: String,
        /// Request path.
        path: String,
    },
    /// The endpoint exists but not for this method.
    #[error("Method {method} is not allowed on {path}; use {allow}")]
    MethodNotAllowed {
        /// Request method.
        method: String,
        /// Request path.
        path: String,
        /// Allowed methods.
        allow: &'static str,
    },
    /// The body exceeds the configured limit.
    #[error("Request body exceeds the limit of {0} bytes")]
    PayloadTooLarge(usize),
    /// The resolved provider's type is not served by this endpoint yet.
    #[error("Provider type {0} is not supported on this endpoint yet")]
    Unsupported(&'static str),
    /// The upstream could not be reached or broke the protocol.
    #[error("The upstream provider could not be reached: {0}")]
    UpstreamUnavailable(String),
    /// The upstream did not answer in time.
    #[error("The upstream provider did not answer within {0} seconds")]
    UpstreamTimeout(u32),
    /// The upstream refused uprox's own credentials: a configuration problem, not the caller's.
    #[error(
        "The upstream provider rejected the gateway's credentials (HTTP {0}); ask the platform team to check the provider key"
    )]
    UpstreamRejectedKey(u16),
    /// The gateway has not loaded a configuration yet.
    #[error("The gateway has no configuration loaded yet; retry shortly")]
    NotReady,
    /// No file with this id that the caller may see (absent, or another Service's).
    #[error("No such File object: {0}")]
    FileNotFound(String),
    /// The file ownership store could not be written.
    #[error("The gateway could not record the file's owner ({0}); retry shortly")]
    OwnershipUnavailable(String),
    /// A rate limit of one of the caller's Policies refused the request.
    #[error("{0}")]
    RateLimited(Box<crate::limits::Refusal>),
    /// A blocking Budget of the caller's Service has reached a ceiling.
    #[error("{0}")]
    BudgetExceeded(Box<crate::spend::budget::Exceeded>),
}

/// The `error` object of an OpenAI error body.
#[derive(Serialize)]
struct ErrorObject<'a> {
    message: &'a str,
    #[serde(rename = "type")]
    kind: &'static str,
    param: Option<&'static str>,
    code: Option<&'static str>,
}

#[derive(Serialize)]
struct ErrorBody<'a> {
    error: ErrorObject<'a>,
}

/// Status, OpenAI error `type`, `param` and `code` of an error.
struct Shape {
    status: StatusCode,
    kind: &'static str,
    param: Option<&'static str>,
    code: Option<&'static str>,
}

impl GatewayError {
    fn shape(&self) -> Shape {
        use GatewayError as E;
        let s = |status, kind, param, code| Shape { status, kind, param, code };
        match self {
            E::MissingCredential => s(StatusCode::UNAUTHORIZED, "authentication_error", None, Some("missing_api_key")),
            E::InvalidCredential => s(StatusCode::UNAUTHORIZED, "authentication_error", None, Some("invalid_api_key")),
            E::Forbidden(_) => s(StatusCode::FORBIDDEN, "permission_error", None, Some("forbidden")),
            E::InvalidRequest(_) => s(StatusCode::BAD_REQUEST, "invalid_request_error", None, Some("invalid_request")),
            E::MissingField(field) => {
                s(StatusCode::BAD_REQUEST, "invalid_request_error", Some(field), Some("missing_required_parameter"))
            }
            E::InvalidParam { param, .. } => {
                s(StatusCode::BAD_REQUEST, "invalid_request_error", Some(param), Some("invalid_value"))
            }
            E::UnknownModel(_) => {
                s(StatusCode::NOT_FOUND, "invalid_request_error", Some("model"), Some("model_not_found"))
            }
            E::NotFound { .. } => s(StatusCode::NOT_FOUND, "not_found_error", None, Some("unknown_url")),
            E::MethodNotAllowed { .. } => {
                s(StatusCode::METHOD_NOT_ALLOWED, "invalid_request_error", None, Some("method_not_allowed"))
            }
            E::PayloadTooLarge(_) => {
                s(StatusCode::PAYLOAD_TOO_LARGE, "invalid_request_error", None, Some("request_too_large"))
            }
            E::Unsupported(_) => {
                s(StatusCode::NOT_IMPLEMENTED, "invalid_request_error", None, Some("unsupported_provider"))
            }
            E::UpstreamUnavailable(_) => s(StatusCode::BAD_GATEWAY, "api_error", None, Some("upstream_unavailable")),
            E::UpstreamTimeout(_) => s(StatusCode::GATEWAY_TIMEOUT, "api_error", None, Some("upstream_timeout")),
            E::UpstreamRejectedKey(_) => {
                s(StatusCode::BAD_GATEWAY, "api_error", None, Some("upstream_credentials_rejected"))
            }
            E::NotReady => s(StatusCode::SERVICE_UNAVAILABLE, "api_error", None, Some("not_ready")),
            E::FileNotFound(_) => s(StatusCode::NOT_FOUND, "invalid_request_error", Some("id"), Some("file_not_found")),
            E::OwnershipUnavailable(_) => {
                s(StatusCode::SERVICE_UNAVAILABLE, "api_error", None, Some("file_owners_unavailable"))
            }
            E::RateLimited(_) => {
                s(StatusCode::TOO_MANY_REQUESTS, "rate_limit_error", None, Some("rate_limit_exceeded"))
            }
            E::BudgetExceeded(_) => {
                s(StatusCode::PAYMENT_REQUIRED, "insufficient_quota", None, Some("insufficient_quota"))
            }
        }
    }

    /// The HTTP status this error is answered with.
    pub fn status(&self) -> StatusCode {
        self.shape().status
    }

    /// A low-cardinality label for metrics and logs.
    pub fn metric_label(&self) -> &'static str {
        self.shape().code.unwrap_or("error")
    }

    /// Whether the same request may succeed if retried unchanged.
    pub fn retryable(&self) -> bool {
        use GatewayError as E;
        match self {
            E::UpstreamUnavailable(_)
            | E::UpstreamTimeout(_)
            | E::NotReady
            | E::OwnershipUnavailable(_)
            | E::RateLimited(_) => true,
            E::MissingCredential
            | E::InvalidCredential
            | E::Forbidden(_)
            | E::InvalidRequest(_)
            | E::MissingField(_)
            | E::InvalidParam { .. }
            | E::UnknownModel(_)
            | E::NotFound { .. }
            | E::MethodNotAllowed { .. }
            | E::PayloadTooLarge(_)
            | E::Unsupported(_)
            | E::UpstreamRejectedKey(_)
            | E::FileNotFound(_)
            | E::BudgetExceeded(_) => false,
        }
    }

    /// The JSON body.
    pub fn body(&self) -> Bytes {
        let shape = self.shape();
        let message = self.to_string();
        let body = ErrorBody {
            error: ErrorObject { message: &message, kind: shape.kind, param: shape.param, code: shape.code },
        };
        // Serializing a struct of strings cannot fail; an empty body is the safe fallback.
        Bytes::from(serde_json::to_vec(&body).unwrap_or_default())
    }

    /// The whole HTTP response.
    pub fn into_response(self) -> Response<Body> {
        let mut response = Response::new(full(self.body()));
        *response.status_mut() = self.status();
        let headers = response.headers_mut();
        headers.insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
        if let GatewayError::MethodNotAllowed { allow, .. } = &self {
            headers.insert(header::ALLOW, HeaderValue::from_static(allow));
        }
        if self.status() == StatusCode::SERVICE_UNAVAILABLE {
            headers.insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
        }
        if let GatewayError::RateLimited(refusal) = &self {
            headers.insert(header::RETRY_AFTER, HeaderValue::from(crate::limits::retry_secs(refusal.retry_after)));
            refusal.headers.write(headers);
        }
        response
    }

    /// The whole HTTP response in Anthropic's shape, for the Messages API routes:
    /// `{"type":"error","error":{"type","message"}}` with the status and headers (`Allow`,
    /// `Retry-After`) of [`into_response`](Self::into_response) and the error `type` Anthropic
    /// uses for that status.
    pub fn into_anthropic_response(self) -> Response<Body> {
        #[derive(Serialize)]
        struct AnthropicError<'a> {
            #[serde(rename = "type")]
            kind: &'static str,
            message: &'a str,
        }
        #[derive(Serialize)]
        struct AnthropicBody<'a> {
            #[serde(rename = "type")]
            kind: &'static str,
            error: AnthropicError<'a>,
        }
        let kind = match self.status().as_u16() {
            400 | 405 | 501 => "invalid_request_error",
            401 => "authentication_error",
            402 => "billing_error",
            403 => "permission_error",
            404 => "not_found_error",
            413 => "request_too_large",
            429 => "rate_limit_error",
            503 => "overloaded_error",
            _ => "api_error",
        };
        let message = self.to_string();
        let body = AnthropicBody { kind: "error", error: AnthropicError { kind, message: &message } };
        // Serializing a struct of strings cannot fail; an empty body is the safe fallback.
        let body = Bytes::from(serde_json::to_vec(&body).unwrap_or_default());
        let mut response = self.into_response();
        *response.body_mut() = full(body);
        response
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn json(e: &GatewayError) -> serde_json::Value {
        serde_json::from_slice(&e.body()).unwrap()
    }

    #[test]
    fn every_error_has_an_openai_shaped_body() {
        let all = [
            GatewayError::MissingCredential,
            GatewayError::InvalidCredential,
            GatewayError::Forbidden("no".into()),
            GatewayError::InvalidRequest("bad".into()),
            GatewayError::MissingField("model"),
            GatewayError::InvalidParam { param: "input", message: "bad".into() },
            GatewayError::UnknownModel("x".into()),
            GatewayError::NotFound { method: "GET".into(), path: "/x".into() },
            GatewayError::MethodNotAllowed { method: "GET".into(), path: "/x".into(), allow: "POST" },
            GatewayError::PayloadTooLarge(10),
            GatewayError::Unsupported("azure"),
            GatewayError::UpstreamUnavailable("refused".into()),
            GatewayError::UpstreamTimeout(5),
            GatewayError::UpstreamRejectedKey(401),
            GatewayError::NotReady,
            GatewayError::FileNotFound("file-x".into()),
            GatewayError::OwnershipUnavailable("down".into()),
            GatewayError::RateLimited(Box::new(crate::limits::Refusal {
                kind: crate::limits::LimitKind::Requests,
                policy: uprox_crds::common::ObjectId::new("team", "fast"),
                limit: 5,
                retry_after: std::time::Duration::from_millis(1500),
                headers: crate::limits::RateHeaders::default(),
            })),
            GatewayError::BudgetExceeded(Box::new(crate::spend::budget::Exceeded {
                budget: uprox_crds::common::ObjectId::new("team", "monthly"),
                window: crate::spend::budget::Window::Monthly,
                spent_pico: 25_010_000_000_000,
                limit_micro: 25_000_000,
                resets_at: 1_795_996_800,
            })),
        ];
        for e in &all {
            let v = json(e);
            let err = &v["error"];
            assert!(err["message"].as_str().is_some_and(|m| !m.is_empty()), "{e:?}");
            assert!(err["type"].as_str().is_some(), "{e:?}");
            assert!(err.get("param").is_some() && err.get("code").is_some(), "{e:?}");
            assert!(!e.metric_label().is_empty());
        }
    }

    #[test]
    fn a_spent_budget_is_a_402_in_both_shapes() {
        let exceeded = || {
            GatewayError::BudgetExceeded(Box::new(crate::spend::budget::Exceeded {
                budget: uprox_crds::common::ObjectId::new("team", "cap"),
                window: crate::spend::budget::Window::Daily,
                spent_pico: 10_000_000_000,
                limit_micro: 10_000,
                resets_at: 1_795_824_000,
            }))
        };
        let e = json(&exceeded());
        assert_eq!(
            (e["error"]["type"].as_str(), e["error"]["code"].as_str()),
            (Some("insufficient_quota"), Some("insufficient_quota"))
        );
        let message = e["error"]["message"].as_str().unwrap();
        assert!(
            message.contains("team/cap") && message.contains("$0.01") && message.contains("2026-11-28T00:00:00Z"),
            "{message}"
        );
        assert_eq!(exceeded().status(), 402);
        assert!(!exceeded().retryable());
        let response = exceeded().into_anthropic_response();
        assert_eq!(response.status(), 402);
        let body = futures_util::FutureExt::now_or_never(http_body_util::BodyExt::collect(response.into_body()))
            .unwrap()
            .unwrap()
            .to_bytes();
        let v: serde_json::Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(v["error"]["type"], "billing_error");
    }

    #[test]
    fn statuses_follow_openai() {
        assert_eq!(GatewayError::MissingCredential.status(), 401);
        assert_eq!(GatewayError::InvalidCredential.status(), 401);
        assert_eq!(GatewayError::Forbidden(String::new()).status(), 403);
        assert_eq!(GatewayError::MissingField("model").status(), 400);
        assert_eq!(GatewayError::UnknownModel("m".into()).status(), 404);
        assert_eq!(GatewayError::PayloadTooLarge(1).status(), 413);
        assert_eq!(GatewayError::UpstreamUnavailable(String::new()).status(), 502);
        assert_eq!(GatewayError::UpstreamTimeout(1).status(), 504);
        assert_eq!(GatewayError::UpstreamRejectedKey(401).status(), 502);
        assert_eq!(json(&GatewayError::InvalidCredential)["error"]["type"], "authentication_error");
        assert_eq!(json(&GatewayError::MissingField("model"))["error"]["param"], "model");
    }

    #[test]
    fn method_not_allowed_names_the_allowed_methods() {
        let r =
            GatewayError::MethodNotAllowed { method: "GET".into(), path: "/v1/chat/completions".into(), allow: "POST" }
                .into_response();
        assert_eq!(r.headers()[header::ALLOW], "POST");
    }

    #[test]
    fn rate_limited_names_the_limit_and_policy_and_says_when_to_retry() {
        let refusal = crate::limits::Refusal {
            kind: crate::limits::LimitKind::Tokens,
            policy: uprox_crds::common::ObjectId::new("team", "fast"),
            limit: 1000,
            retry_after: std::time::Duration::from_millis(2500),
            headers: crate::limits::RateHeaders {
                requests: None,
                tokens: Some((1000, 0, std::time::Duration::from_secs(61))),
            },
        };
        let e = GatewayError::RateLimited(Box::new(refusal));
        let v = json(&e);
        assert_eq!(v["error"]["type"], "rate_limit_error");
        assert_eq!(v["error"]["code"], "rate_limit_exceeded");
        let message = v["error"]["message"].as_str().unwrap();
        assert!(message.contains("tokens per minute") && message.contains("team/fast"), "{message}");
        let r = e.into_response();
        assert_eq!(r.status(), 429);
        assert_eq!(r.headers()[header::RETRY_AFTER], "3");
        assert_eq!(r.headers()["x-ratelimit-limit-tokens"], "1000");
        assert_eq!(r.headers()["x-ratelimit-remaining-tokens"], "0");
        assert_eq!(r.headers()["x-ratelimit-reset-tokens"], "1m1s");
    }

    #[test]
    fn retryability() {
        assert!(GatewayError::UpstreamTimeout(1).retryable());
        assert!(!GatewayError::InvalidCredential.retryable());
    }
}
