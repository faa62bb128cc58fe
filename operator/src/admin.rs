//! The admin server: `/healthz` (the process runs), `/readyz` (the caches have synced and, on
//! the leader, a first pass has completed; a standby replica is ready once its caches are) and
//! `/metrics` (Prometheus text format). Plain HTTP/1 on its own port, away from any traffic.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use bytes::Bytes;
use http::{Request, Response, StatusCode, header};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::net::TcpListener;

use crate::metrics::Metrics;

/// What the probes report.
#[derive(Debug, Default)]
pub struct Health {
    ready: AtomicBool,
}

impl Health {
    /// Marks the operator ready (or not).
    pub fn set_ready(&self, ready: bool) {
        self.ready.store(ready, Ordering::Relaxed);
    }

    /// Whether it is ready.
    pub fn is_ready(&self) -> bool {
        self.ready.load(Ordering::Relaxed)
    }
}

/// Answers one admin request.
pub fn respond(path: &str, health: &Health, metrics: &Metrics) -> Response<Full<Bytes>> {
    let (status, content_type, body) = match path {
        "/healthz" | "/livez" => (StatusCode::OK, "text/plain", "ok".to_owned()),
        "/readyz" if health.is_ready() => (StatusCode::OK, "text/plain", "ready".to_owned()),
        "/readyz" => (StatusCode::SERVICE_UNAVAILABLE, "text/plain", "caches not synced yet".to_owned()),
        "/metrics" => (StatusCode::OK, "text/plain; version=0.0.4", metrics.render()),
        _ => (StatusCode::NOT_FOUND, "text/plain", "not found".to_owned()),
    };
    let mut response = Response::new(Full::new(Bytes::from(body)));
    *response.status_mut() = status;
    if let Ok(value) = content_type.parse() {
        response.headers_mut().insert(header::CONTENT_TYPE, value);
    }
    response
}

/// Binds the admin port.
pub async fn bind(addr: SocketAddr) -> std::io::Result<TcpListener> {
    TcpListener::bind(addr).await
}

/// Serves until the task is dropped.
pub async fn serve(listener: TcpListener, health: Arc<Health>, metrics: Metrics) {
    loop {
        let Ok((stream, _)) = listener.accept().await else {
            continue;
        };
        let health = health.clone();
        let metrics = metrics.clone();
        tokio::spawn(async move {
            let service = service_fn(move |request: Request<Incoming>| {
                let response = respond(request.uri().path(), &health, &metrics);
                async move { Ok::<_, Infallible>(response) }
            });
            let builder = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new());
            if let Err(e) = builder.serve_connection(TokioIo::new(stream), service).await {
                tracing::debug!(error = %e, "admin connection ended");
            }
        });
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn probes_follow_readiness_and_metrics_render() {
        let health = Health::default();
        let metrics = Metrics::new().unwrap();
        assert_eq!(respond("/healthz", &health, &metrics).status(), StatusCode::OK);
        assert_eq!(respond("/readyz", &health, &metrics).status(), StatusCode::SERVICE_UNAVAILABLE);
        health.set_ready(true);
        assert_eq!(respond("/readyz", &health, &metrics).status(), StatusCode::OK);
        metrics.compiles.inc();
        let text = respond("/metrics", &health, &metrics);
        assert_eq!(text.status(), StatusCode::OK);
        assert_eq!(respond("/nope", &health, &metrics).status(), StatusCode::NOT_FOUND);
    }

    #[test]
    fn metric_names_are_prefixed() {
        let metrics = Metrics::new().unwrap();
        metrics.compiles.inc();
        metrics.reconciles.with_label_values(&["Provider"]).inc();
        let text = metrics.render();
        assert!(text.contains("uprox_operator_compiles_total 1"), "{text}");
        assert!(text.contains("uprox_operator_reconciles_total{kind=\"Provider\"} 1"), "{text}");
    }
}
