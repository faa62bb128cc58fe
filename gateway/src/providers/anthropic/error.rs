//! Anthropic error responses (and `error` stream events) → the status and OpenAI-shaped body
//! `{"error": {"message", "type", "param", "code"}}` the client gets. One exhaustive table keyed
//! by Anthropic's error `type`, falling back on the HTTP status for types newer than this code.
//!
//! Two rules come from who is at fault. Anthropic refusing the gateway's own key (401, 403) is
//! the platform's problem, not the caller's: it becomes the gateway's 502 and Anthropic's message
//! is never echoed, since it may quote the key. Anthropic's 529 `overloaded_error` becomes 503:
//! OpenAI clients retry 503, and 529 is not a status they know. `retry-after` forwarding is the
//! caller's job.

use bytes::Bytes;
use http::StatusCode;
use serde_json::{Value, json};

use crate::error::GatewayError;

/// What a client is told about one upstream error.
pub(super) struct Mapped {
    pub status: StatusCode,
    /// The OpenAI error object (the value of `error`).
    pub error: Value,
}

fn object(message: &str, kind: &str, code: Option<&str>) -> Value {
    json!({"message": message, "type": kind, "param": null, "code": code})
}

/// The gateway's own answer for an error it raises itself.
fn gateway(e: &GatewayError) -> Mapped {
    let error = serde_json::from_slice::<Value>(&e.body()).ok().and_then(|mut v| v.get_mut("error").map(Value::take));
    Mapped { status: e.status(), error: error.unwrap_or_else(|| object(&e.to_string(), "api_error", None)) }
}

/// Maps one Anthropic error (`status` is 0 inside a stream, where there is none).
pub(super) fn map(status: u16, kind: Option<&str>, message: Option<&str>) -> Mapped {
    let message = message.unwrap_or("The upstream provider returned an error");
    let m = |status: StatusCode, kind: &str, code: Option<&str>| Mapped { status, error: object(message, kind, code) };
    match (kind, status) {
        (Some("authentication_error" | "permission_error"), _) | (_, 401 | 403) => {
            gateway(&GatewayError::UpstreamRejectedKey(if status == 0 { 401 } else { status }))
        }
        (Some("billing_error"), _) | (_, 402) => Mapped {
            status: StatusCode::BAD_GATEWAY,
            error: object(
                "The upstream provider refused the gateway's account for a billing reason; ask the platform team",
                "api_error",
                Some("upstream_billing_error"),
            ),
        },
        (Some("invalid_request_error"), _) => m(StatusCode::BAD_REQUEST, "invalid_request_error", None),
        (Some("not_found_error"), _) | (None, 404) => {
            m(StatusCode::NOT_FOUND, "invalid_request_error", Some("not_found"))
        }
        (Some("request_too_large"), _) | (None, 413) => {
            m(StatusCode::PAYLOAD_TOO_LARGE, "invalid_request_error", Some("request_too_large"))
        }
        (Some("rate_limit_error"), _) | (None, 429) => {
            m(StatusCode::TOO_MANY_REQUESTS, "rate_limit_error", Some("rate_limit_exceeded"))
        }
        (Some("overloaded_error"), _) | (None, 529) => {
            m(StatusCode::SERVICE_UNAVAILABLE, "api_error", Some("overloaded"))
        }
        (Some("timeout_error"), _) | (None, 504) => {
            m(StatusCode::GATEWAY_TIMEOUT, "api_error", Some("upstream_timeout"))
        }
        (Some("api_error"), _) => m(StatusCode::BAD_GATEWAY, "api_error", Some("upstream_error")),
        // A type newer than this table: trust the status class.
        (_, 400..=499) => {
            m(StatusCode::from_u16(status).unwrap_or(StatusCode::BAD_REQUEST), "invalid_request_error", None)
        }
        _ => m(StatusCode::BAD_GATEWAY, "api_error", Some("upstream_error")),
    }
}

/// Maps an Anthropic error body `{"type":"error","error":{"type","message"}}`.
pub(super) fn map_body(status: u16, body: &Value) -> Mapped {
    let error = body.get("error");
    let field = |name: &str| error.and_then(|e| e.get(name)).and_then(Value::as_str);
    map(status, field("type"), field("message"))
}

/// Translates an Anthropic error response into the HTTP status and OpenAI-shaped body for the
/// client.
pub fn translate_error(status: u16, anthropic_body: &[u8]) -> (StatusCode, Bytes) {
    let parsed =
        serde_json::from_slice::<Value>(anthropic_body).ok().filter(|v| v.get("error").is_some_and(Value::is_object));
    let mapped = match parsed {
        Some(body) => map_body(status, &body),
        // Never echo a body we could not read: it may be an HTML page from a proxy, or worse.
        None => Mapped {
            status: StatusCode::BAD_GATEWAY,
            error: object(
                &format!("The upstream provider returned an error uprox could not read (HTTP {status})"),
                "api_error",
                Some("upstream_error"),
            ),
        },
    };
    let body = serde_json::to_vec(&json!({"error": mapped.error})).unwrap_or_default();
    (mapped.status, Bytes::from(body))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;

    fn translate(status: u16, kind: &str, message: &str) -> (u16, Value) {
        let body = json!({"type": "error", "error": {"type": kind, "message": message}});
        let (status, body) = translate_error(status, body.to_string().as_bytes());
        (status.as_u16(), serde_json::from_slice::<Value>(&body).unwrap()["error"].take())
    }

    #[test]
    fn every_documented_type_maps() {
        let cases = [
            (400, "invalid_request_error", 400, "invalid_request_error", Value::Null),
            (404, "not_found_error", 404, "invalid_request_error", json!("not_found")),
            (413, "request_too_large", 413, "invalid_request_error", json!("request_too_large")),
            (429, "rate_limit_error", 429, "rate_limit_error", json!("rate_limit_exceeded")),
            (500, "api_error", 502, "api_error", json!("upstream_error")),
            (529, "overloaded_error", 503, "api_error", json!("overloaded")),
            (504, "timeout_error", 504, "api_error", json!("upstream_timeout")),
        ];
        for (status, kind, want_status, want_kind, want_code) in cases {
            let (got_status, error) = translate(status, kind, "the message");
            assert_eq!(got_status, want_status, "{kind}");
            assert_eq!(error["type"], want_kind, "{kind}");
            assert_eq!(error["code"], want_code, "{kind}");
            assert_eq!(error["message"], "the message", "{kind}");
            assert_eq!(error["param"], Value::Null, "{kind}");
        }
    }

    #[test]
    fn a_refused_key_is_a_502_that_never_echoes_the_message() {
        for (status, kind) in [(401, "authentication_error"), (403, "permission_error"), (401, "something_new")] {
            let (got, error) = translate(status, kind, "invalid x-api-key sk-ant-api03-SECRET");
            assert_eq!(got, 502);
            assert_eq!(error["type"], "api_error");
            assert!(!error.to_string().contains("SECRET"), "{error}");
        }
        let (got, error) = translate(402, "billing_error", "credit balance of account 1234 too low");
        assert_eq!(got, 502);
        assert!(!error.to_string().contains("1234"));
    }

    #[test]
    fn unknown_types_follow_the_status_class() {
        assert_eq!(translate(422, "brand_new_error", "m").0, 422);
        assert_eq!(translate(503, "brand_new_error", "m").0, 502);
    }

    #[test]
    fn unreadable_bodies_are_a_generic_502() {
        let (status, body) = translate_error(500, b"<html>oops</html>");
        assert_eq!(status, 502);
        let v: Value = serde_json::from_slice(&body).unwrap();
        assert!(v["error"]["message"].as_str().unwrap().contains("could not read"));
        assert!(!v.to_string().contains("oops"));
        assert_eq!(translate_error(529, b"").0, 502);
        assert_eq!(translate_error(401, b"sk-ant-key").0, 502);
    }
}
