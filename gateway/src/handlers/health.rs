//! `/healthz` (the process is alive) and `/readyz` (a config is loaded and requests can be
//! served). Both are unauthenticated and cheap.

use http::{HeaderValue, Response, StatusCode, header};

use crate::app::Gateway;
use crate::body::{Body, full};

fn json(status: StatusCode, body: &'static str) -> Response<Body> {
    let mut r = Response::new(full(body));
    *r.status_mut() = status;
    r.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
    r
}

/// Liveness.
pub fn healthz() -> Response<Body> {
    json(StatusCode::OK, r#"{"status":"ok"}"#)
}

/// Readiness: 503 until the first snapshot is installed.
pub fn readyz(gateway: &Gateway) -> Response<Body> {
    if gateway.is_ready() {
        json(StatusCode::OK, r#"{"status":"ready"}"#)
    } else {
        json(StatusCode::SERVICE_UNAVAILABLE, r#"{"status":"no configuration loaded"}"#)
    }
}
