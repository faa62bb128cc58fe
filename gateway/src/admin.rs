//! The admin port: `/healthz` and `/readyz` away from the serving port, for probes, and
//! `/metrics`: the request metrics of [`crate::metrics`], the spend metrics of
//! [`crate::spend::metrics`], the cache's of [`crate::cache`] and, with tracing on, the span
//! export's of [`crate::trace`], in one exposition. Plain HTTP/1 on the control runtime; the
//! serving port keeps answering both probe paths too.

use std::convert::Infallible;
use std::sync::Arc;

use http::{Request, Response, StatusCode};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;

use crate::app::Gateway;
use crate::body::{Body, full};
use crate::handlers::health;

/// Answers one admin request.
pub fn respond(path: &str, gateway: &Gateway) -> Response<Body> {
    match path {
        "/healthz" | "/livez" => health::healthz(),
        "/readyz" => health::readyz(gateway),
        "/metrics" => {
            let mut families = gateway.metrics.gather();
            families.extend(crate::spend::metrics::families(&gateway.spend));
            families.extend(gateway.cache.families());
            if let Some(tracer) = gateway.tracer {
                families.extend(tracer.families());
            }
            let mut response = Response::new(full(crate::metrics::expose::encode(families)));
            response.headers_mut().insert(
                http::header::CONTENT_TYPE,
                http::HeaderValue::from_static("text/plain; version=0.0.4; charset=utf-8"),
            );
            response
        }
        _ => {
            let mut response = Response::new(full("not found"));
            *response.status_mut() = StatusCode::NOT_FOUND;
            response
        }
    }
}

/// Serves the admin port until the task is dropped.
pub async fn serve(listener: TcpListener, gateway: Arc<Gateway>) {
    loop {
        let Ok((stream, _)) = listener.accept().await else {
            continue;
        };
        let gateway = gateway.clone();
        tokio::spawn(async move {
            let service = service_fn(move |request: Request<Incoming>| {
                let response = respond(request.uri().path(), &gateway);
                async move { Ok::<_, Infallible>(response) }
            });
            if let Err(e) =
                hyper::server::conn::http1::Builder::new().serve_connection(TokioIo::new(stream), service).await
            {
                tracing::debug!(error = %e, "admin connection ended");
            }
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::app::Settings;

    #[test]
    fn probes_answer_on_the_admin_port() {
        let gateway = Gateway::new(Settings::default());
        assert_eq!(respond("/healthz", &gateway).status(), StatusCode::OK);
        assert_eq!(respond("/readyz", &gateway).status(), StatusCode::SERVICE_UNAVAILABLE, "no config yet");
        assert_eq!(respond("/v1/models", &gateway).status(), StatusCode::NOT_FOUND);
        assert_eq!(respond("/metrics", &gateway).status(), StatusCode::OK);
    }
}
