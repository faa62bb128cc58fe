//! The upstream HTTP client: hyper's pooled client over rustls (ring, Mozilla's root
//! certificates from `webpki-roots`, so no system CA bundle is needed in the image), HTTP/1.1
//! and HTTP/2 by ALPN, `TCP_NODELAY`, a connect timeout and an idle-connection timeout.
//!
//! hyper directly rather than reqwest: the gateway forwards bytes and needs no redirects,
//! cookies or URL handling, and reqwest re-parses the URL of every response (measured on the
//! proxy path: URL/IDNA parsing was the largest user-space item after hyper itself). URIs are
//! parsed once, when a snapshot is built.

use std::time::Duration;

use bytes::Bytes;
use http_body_util::Full;
use hyper_rustls::{HttpsConnector, HttpsConnectorBuilder};
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::{TokioExecutor, TokioTimer};

/// A pooled upstream client.
pub type Client = hyper_util::client::legacy::Client<HttpsConnector<HttpConnector>, Full<Bytes>>;

/// Builds a client. Needs the process's rustls crypto provider installed (see `Gateway::new`).
pub fn client(connect_timeout: Duration, idle_timeout: Duration) -> Client {
    let mut http = HttpConnector::new();
    http.set_nodelay(true);
    http.set_connect_timeout(Some(connect_timeout));
    http.enforce_http(false);
    let https = HttpsConnectorBuilder::new()
        .with_webpki_roots()
        .https_or_http()
        .enable_http1()
        .enable_http2()
        .wrap_connector(http);
    hyper_util::client::legacy::Client::builder(TokioExecutor::new())
        .pool_idle_timeout(idle_timeout)
        .pool_timer(TokioTimer::new())
        .build(https)
}

/// A short, key-free description of a client error, for the caller.
pub fn describe(error: &hyper_util::client::legacy::Error) -> &'static str {
    if error.is_connect() { "connection failed" } else { "the request could not be completed" }
}
