//! `uprox-mock-upstream`: a fast stand-in for OpenAI's API on loopback, for tests and
//! benchmarks. `POST /v1/chat/completions` answers with the mock provider's deterministic
//! replies (JSON, or SSE when `"stream": true`); `POST /v1/responses` likewise in the
//! Responses API's shape; `POST /v1/embeddings` with its deterministic vectors;
//! `GET /v1/models` lists two models. Auth is ignored. Prints `listening on http://ADDR` to
//! stderr.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::process::ExitCode;

use bytes::Bytes;
use clap::Parser;
use http::{HeaderValue, Method, Request, Response, StatusCode, header};
use http_body_util::BodyExt as _;
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use uprox_gateway::body::{Body, full};
use uprox_gateway::providers::mock;

#[derive(Debug, Parser)]
struct Args {
    /// Address to listen on.
    #[arg(long, default_value = "127.0.0.1:0")]
    listen: SocketAddr,
}

async fn answer(request: Request<Incoming>) -> Response<Body> {
    let json = |status: StatusCode, body: Bytes| {
        let mut r = Response::new(full(body));
        *r.status_mut() = status;
        r.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
        r
    };
    match (request.method(), request.uri().path()) {
        (&Method::POST, "/v1/chat/completions") => {
            let body = match request.into_body().collect().await {
                Ok(b) => b.to_bytes(),
                Err(_) => return json(StatusCode::BAD_REQUEST, Bytes::from_static(br#"{"error":{"message":"unreadable body","type":"invalid_request_error","param":null,"code":null}}"#)),
            };
            mock::respond(&body, None).unwrap_or_else(|e| e.into_response())
        }
        (&Method::POST, "/v1/embeddings") => {
            let body = match request.into_body().collect().await {
                Ok(b) => b.to_bytes(),
                Err(_) => return json(StatusCode::BAD_REQUEST, Bytes::from_static(br#"{"error":{"message":"unreadable body","type":"invalid_request_error","param":null,"code":null}}"#)),
            };
            mock::embeddings(&body).unwrap_or_else(|e| e.into_response())
        }
        (&Method::POST, "/v1/responses") => {
            let body = match request.into_body().collect().await {
                Ok(b) => b.to_bytes(),
                Err(_) => return json(StatusCode::BAD_REQUEST, Bytes::from_static(br#"{"error":{"message":"unreadable body","type":"invalid_request_error","param":null,"code":null}}"#)),
            };
            mock::responses::respond(&body).unwrap_or_else(|e| e.into_response())
        }
        (&Method::GET, "/v1/models") => json(
            StatusCode::OK,
            Bytes::from_static(br#"{"object":"list","data":[{"id":"mock-1","object":"model","created":0,"owned_by":"mock"},{"id":"mock-2","object":"model","created":0,"owned_by":"mock"}]}"#),
        ),
        _ => json(StatusCode::NOT_FOUND, Bytes::from_static(br#"{"error":{"message":"not found","type":"not_found_error","param":null,"code":null}}"#)),
    }
}

#[tokio::main]
async fn main() -> ExitCode {
    let args = Args::parse();
    let listener = match tokio::net::TcpListener::bind(args.listen).await {
        Ok(l) => l,
        Err(e) => {
            eprintln!("uprox-mock-upstream: cannot listen on {}: {e}", args.listen);
            return ExitCode::FAILURE;
        }
    };
    let local = listener.local_addr().unwrap_or(args.listen);
    eprintln!("uprox-mock-upstream listening on http://{local}");
    let builder = auto::Builder::new(TokioExecutor::new());
    loop {
        let Ok((stream, _)) = listener.accept().await else {
            continue;
        };
        let _ = stream.set_nodelay(true);
        let builder = builder.clone();
        tokio::spawn(async move {
            let service = service_fn(|r| async move { Ok::<_, Infallible>(answer(r).await) });
            let _ = builder.serve_connection(TokioIo::new(stream), service).await;
        });
    }
}
