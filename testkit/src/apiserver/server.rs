//! The HTTP/1 server: accepts connections, reads each request, records it, answers it.
//!
//! Plain HTTP on `127.0.0.1` (kube's client speaks HTTP/1.1 to `http://` URLs). JSON answers
//! are sent whole; watches are streamed one chunk per event. Every connection task lives in a
//! `JoinSet` owned by the accept loop, so aborting that loop stops the server and every open
//! watch with it.

use std::{convert::Infallible, sync::Arc, time::Duration};

use bytes::Bytes;
use futures_util::StreamExt;
use http::{Request, Response, StatusCode, header};
use http_body_util::{BodyExt, Full, StreamBody, combinators::UnsyncBoxBody};
use hyper::{body::Frame, server::conn::http1, service::service_fn};
use hyper_util::rt::TokioIo;
use tokio::{net::TcpListener, task::JoinSet};

use super::{
    handlers::{self, Incoming, Reply},
    log::{RecordedRequest, Recorder},
    routes::Query,
    status::ApiError,
    store::Store,
    watch,
};

type Body = UnsyncBoxBody<Bytes, Infallible>;

/// What the connection tasks share with the test-facing handle.
#[derive(Default)]
pub(crate) struct Shared {
    pub store: Arc<Store>,
    pub recorder: Recorder,
}

/// Accepts connections until the task is aborted.
pub(crate) async fn serve(listener: TcpListener, shared: Arc<Shared>) {
    let mut connections = JoinSet::new();
    loop {
        tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => {
                    let shared = shared.clone();
                    connections.spawn(async move {
                        let service = service_fn(move |request| {
                            let shared = shared.clone();
                            async move { Ok::<_, Infallible>(respond(&shared, request).await) }
                        });
                        if let Err(error) = http1::Builder::new().serve_connection(TokioIo::new(stream), service).await {
                            tracing::debug!(%error, "fake API server: connection ended with an error");
                        }
                    });
                }
                Err(error) => {
                    tracing::warn!(%error, "fake API server: accept failed");
                    tokio::time::sleep(Duration::from_millis(10)).await;
                }
            },
            Some(_) = connections.join_next(), if !connections.is_empty() => {}
        }
    }
}

async fn respond(shared: &Shared, request: Request<hyper::body::Incoming>) -> Response<Body> {
    let (parts, body) = request.into_parts();
    let body = match body.collect().await {
        Ok(collected) => collected.to_bytes(),
        Err(error) => {
            return error_response(&ApiError::bad_request(format!("could not read the request body: {error}")));
        }
    };
    let path = parts.uri.path().to_owned();
    let query = Query::parse(parts.uri.query());
    let reply = match shared.recorder.take_fault(&parts.method, &path) {
        Some(code) => Err(ApiError::from_code(code, format!("injected failure for {} {path}", parts.method))),
        None => handlers::handle(
            &shared.store,
            &Incoming { method: &parts.method, path: &path, query: &query, headers: &parts.headers, body: &body },
        ),
    };
    let response = match reply {
        Ok(Reply::Json(code, bytes)) => json_response(code, bytes),
        Ok(Reply::Watch(spec)) => {
            let lines = watch::lines(shared.store.clone(), spec).map(|line| Ok::<_, Infallible>(Frame::data(line)));
            with_json_type(Response::new(StreamBody::new(lines).boxed_unsync()))
        }
        Err(error) => error_response(&error),
    };
    tracing::debug!(method = %parts.method, %path, status = response.status().as_u16(), "fake API server request");
    let header = |name: header::HeaderName| parts.headers.get(name).and_then(|v| v.to_str().ok()).map(str::to_owned);
    shared.recorder.record(RecordedRequest {
        method: parts.method.clone(),
        path,
        query: query.into_pairs(),
        content_type: header(header::CONTENT_TYPE),
        accept: header(header::ACCEPT),
        body,
        status: response.status().as_u16(),
    });
    response
}

fn json_response(code: u16, bytes: Vec<u8>) -> Response<Body> {
    let mut response = with_json_type(Response::new(Full::new(Bytes::from(bytes)).boxed_unsync()));
    *response.status_mut() = StatusCode::from_u16(code).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    response
}

fn error_response(error: &ApiError) -> Response<Body> {
    let mut body = Vec::new();
    handlers::write_json(&mut body, &error.to_status());
    json_response(error.code, body)
}

fn with_json_type(mut response: Response<Body>) -> Response<Body> {
    response.headers_mut().insert(header::CONTENT_TYPE, header::HeaderValue::from_static("application/json"));
    response
}
