//! The proxy path end to end: a gateway on 127.0.0.1:0 in front of a scripted upstream.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use common::{Harness, PROVIDER_KEY, Seen, TOKEN, Upstream, error_of, manifests};
use futures_util::StreamExt as _;
use http::{HeaderValue, Response, StatusCode, header};
use http_body_util::{BodyExt as _, StreamBody};
use uprox_gateway::body::{Body, BoxError, full};

const CHAT: &str =
    r#"{"model":"gpt-4o","messages":[{"role":"user","content":"hi"}],"x_vendor_extension":{"keep":[1,2,3]}}"#;

fn json_response(status: u16, body: &'static str) -> Response<Body> {
    let mut r = Response::new(full(body));
    *r.status_mut() = StatusCode::from_u16(status).unwrap();
    r.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
    r
}

#[tokio::test]
async fn non_streaming_is_forwarded_untouched_with_the_provider_key() {
    let upstream = Upstream::openai_like().await;
    let h = Harness::start(&manifests(&upstream.base_url())).await;
    let response = h.chat(CHAT).await;
    assert_eq!(response.status(), 200);
    assert!(response.headers().contains_key("x-request-id"));
    let v: serde_json::Value = response.json().await.unwrap();
    assert_eq!(v["object"], "chat.completion");
    assert!(v["usage"]["total_tokens"].as_u64().unwrap() > 0);

    let seen = upstream.seen.lock().unwrap().clone();
    assert_eq!(seen.len(), 1);
    assert_eq!(seen[0].path, "/v1/chat/completions");
    assert_eq!(
        seen[0].authorization.as_deref(),
        Some(format!("Bearer {PROVIDER_KEY}").as_str()),
        "the token is swapped for the provider key"
    );
    assert_eq!(seen[0].body.as_ref(), CHAT.as_bytes(), "the body is forwarded byte for byte, unknown fields included");
}

#[tokio::test]
async fn streaming_is_relayed_frame_by_frame_and_ends_with_done() {
    // The upstream sends two events and then holds the stream open until the client has
    // received them: a gateway that buffered the stream would deadlock here (caught by the
    // timeout), one that relays frames lets the test release the rest.
    let release = Arc::new(tokio::sync::Notify::new());
    let gate = release.clone();
    let upstream = Upstream::start(Arc::new(move |_s: Seen| {
        let gate = gate.clone();
        Box::pin(async move {
            let (tx, rx) = tokio::sync::mpsc::unbounded_channel::<Result<hyper::body::Frame<Bytes>, BoxError>>();
            tokio::spawn(async move {
                let chunk = |t: &str| Bytes::from(format!("data: {{\"object\":\"chat.completion.chunk\",\"choices\":[{{\"index\":0,\"delta\":{{\"content\":\"{t}\"}}}}]}}\n\n"));
                let _ = tx.send(Ok(hyper::body::Frame::data(chunk("Hel"))));
                let _ = tx.send(Ok(hyper::body::Frame::data(chunk("lo"))));
                gate.notified().await;
                let _ = tx.send(Ok(hyper::body::Frame::data(Bytes::from_static(b"data: [DONE]\n\n"))));
            });
            let frames = futures_util::stream::unfold(rx, |mut rx| async move { rx.recv().await.map(|f| (f, rx)) });
            let mut r = Response::new(StreamBody::new(frames).boxed_unsync());
            r.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static("text/event-stream"));
            r
        })
    }))
    .await;
    let h = Harness::start(&manifests(&upstream.base_url())).await;
    let response = h.chat(r#"{"model":"gpt-4o","stream":true,"messages":[{"role":"user","content":"hi"}]}"#).await;
    assert_eq!(response.status(), 200);
    assert_eq!(response.headers()["content-type"], "text/event-stream");
    let mut stream = response.bytes_stream();
    let mut received = Vec::new();
    while !String::from_utf8_lossy(&received).contains("\"lo\"") {
        let chunk = tokio::time::timeout(Duration::from_secs(10), stream.next())
            .await
            .expect("the first events must arrive while the upstream stream is still open: it was buffered")
            .unwrap()
            .unwrap();
        received.extend_from_slice(&chunk);
    }
    release.notify_one();
    while let Some(chunk) = stream.next().await {
        received.extend_from_slice(&chunk.unwrap());
    }
    let text = String::from_utf8(received).unwrap();
    assert!(text.contains("\"Hel\"") && text.contains("\"lo\""));
    assert!(text.ends_with("data: [DONE]\n\n"));
}

#[tokio::test]
async fn upstream_errors_pass_through_but_key_rejections_do_not() {
    let upstream = Upstream::start(Arc::new(|s: Seen| {
        Box::pin(async move {
            let v: serde_json::Value = serde_json::from_slice(&s.body).unwrap();
            match v["model"].as_str().unwrap() {
                "gpt-bad" => json_response(400, r#"{"error":{"message":"Invalid value for temperature","type":"invalid_request_error","param":"temperature","code":null}}"#),
                "gpt-500" => json_response(500, r#"{"error":{"message":"The server had an error","type":"server_error","param":null,"code":null}}"#),
                _ => json_response(401, r#"{"error":{"message":"Incorrect API key provided: sk-test-***6789","type":"invalid_request_error","param":null,"code":"invalid_api_key"}}"#),
            }
        })
    }))
    .await;
    let h = Harness::start(&manifests(&upstream.base_url())).await;

    let r = h.chat(r#"{"model":"gpt-bad","messages":[]}"#).await;
    assert_eq!(r.status(), 400);
    assert_eq!(error_of(r).await["param"], "temperature");

    let r = h.chat(r#"{"model":"gpt-500","messages":[]}"#).await;
    assert_eq!(r.status(), 500);

    let r = h.chat(r#"{"model":"gpt-4o","messages":[]}"#).await;
    assert_eq!(r.status(), 502);
    let e = error_of(r).await;
    assert_eq!(e["code"], "upstream_credentials_rejected");
    assert!(!e.to_string().contains("6789"), "the upstream's 401 body quotes the key and must not reach the client");
}

#[tokio::test]
async fn unreachable_upstream_is_502_and_slow_upstream_is_504() {
    // Bind and drop a listener to get a port where nothing listens.
    let dead = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap().local_addr().unwrap();
    let h = Harness::start(&manifests(&format!("http://{dead}/v1"))).await;
    let r = h.chat(CHAT).await;
    assert_eq!(r.status(), 502);
    assert_eq!(error_of(r).await["code"], "upstream_unavailable");

    let slow = Upstream::start(Arc::new(|_s: Seen| {
        Box::pin(async move {
            tokio::time::sleep(Duration::from_secs(3)).await;
            json_response(200, "{}")
        })
    }))
    .await;
    let h = Harness::start(&manifests(&slow.base_url())).await;
    let r = h.chat(r#"{"model":"slow-1","messages":[]}"#).await;
    assert_eq!(r.status(), 504);
    assert_eq!(error_of(r).await["code"], "upstream_timeout");
}

#[tokio::test]
async fn bad_requests_get_openai_errors() {
    let upstream = Upstream::openai_like().await;
    let settings = uprox_gateway::app::Settings { max_body_bytes: 1024, ..Default::default() };
    let h = Harness::start_with(&manifests(&upstream.base_url()), settings).await;

    let r = h.chat("{not json").await;
    assert_eq!(r.status(), 400);
    assert_eq!(error_of(r).await["type"], "invalid_request_error");

    let r = h.chat(r#"{"messages":[]}"#).await;
    assert_eq!(r.status(), 400);
    assert_eq!(error_of(r).await["param"], "model");

    let r = h.chat(r#"{"model":"llama-3","messages":[]}"#).await;
    assert_eq!(r.status(), 404);
    assert_eq!(error_of(r).await["code"], "model_not_found");

    let r = h
        .chat(&format!(r#"{{"model":"gpt-4o","messages":[{{"role":"user","content":"{}"}}]}}"#, "x".repeat(2000)))
        .await;
    assert_eq!(r.status(), 413);
    error_of(r).await;

    // Chunked (no Content-Length) bodies are limited too.
    let chunks = futures_util::stream::iter((0..8).map(|_| Ok::<_, std::io::Error>(Bytes::from(vec![b' '; 256]))));
    let r = h.post("/v1/chat/completions", Some(TOKEN), reqwest::Body::wrap_stream(chunks)).await;
    assert_eq!(r.status(), 413);

    let r = h.post("/v1/nope", Some(TOKEN), "{}").await;
    assert_eq!(r.status(), 404);
    assert_eq!(error_of(r).await["type"], "not_found_error");

    let r = h.client.get(h.url("/v1/chat/completions")).bearer_auth(TOKEN).send().await.unwrap();
    assert_eq!(r.status(), 405);
    assert_eq!(r.headers()["allow"], "POST");

    assert!(upstream.seen.lock().unwrap().is_empty(), "no bad request reaches the upstream");
}

#[tokio::test]
async fn authentication_failures_are_401() {
    let upstream = Upstream::openai_like().await;
    let h = Harness::start(&manifests(&upstream.base_url())).await;

    let r = h.post("/v1/chat/completions", None, CHAT).await;
    assert_eq!(r.status(), 401);
    let e = error_of(r).await;
    assert_eq!(e["type"], "authentication_error");
    assert_eq!(e["message"], "Missing API key");

    for bad in ["sk-not-a-token", "uprox_live_CCCCCCCCCCCCCCCCCCCCCCCCCCCCCCCCCCCCCCCCCCC"] {
        let r = h.post("/v1/chat/completions", Some(bad), CHAT).await;
        assert_eq!(r.status(), 401);
        assert_eq!(error_of(r).await["message"], "Invalid or revoked API key");
    }

    // Azure- and Anthropic-style headers carry the token too.
    let r = h
        .client
        .post(h.url("/v1/chat/completions"))
        .header("api-key", TOKEN)
        .body(r#"{"model":"mock-1","messages":[{"role":"user","content":"x"}]}"#)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert!(upstream.seen.lock().unwrap().is_empty());
}

#[tokio::test]
async fn health_and_readiness_need_no_token() {
    let upstream = Upstream::openai_like().await;
    let h = Harness::start(&manifests(&upstream.base_url())).await;
    for path in ["/healthz", "/readyz"] {
        let r = h.client.get(h.url(path)).send().await.unwrap();
        assert_eq!(r.status(), 200, "{path}");
        assert!(r.headers().contains_key("x-request-id"));
    }
    let r = h.client.get(h.url("/v1/models")).send().await.unwrap();
    assert_eq!(r.status(), 401, "everything else needs a token");
}

#[tokio::test]
async fn client_request_ids_are_echoed() {
    let upstream = Upstream::openai_like().await;
    let h = Harness::start(&manifests(&upstream.base_url())).await;
    let r = h.client.get(h.url("/healthz")).header("x-request-id", "abc-123").send().await.unwrap();
    assert_eq!(r.headers()["x-request-id"], "abc-123");
}

#[tokio::test]
async fn models_lists_exact_names_and_upstream_listings_within_the_allowlist() {
    let upstream = Upstream::openai_like().await;
    // The openai-compatible provider's list (gpt-*, slow-*) has patterns only, so its upstream
    // is asked — this one cannot list (404) and is skipped; the mock provider contributes
    // mock-1/mock-2 itself.
    let h = Harness::start(&manifests(&upstream.base_url())).await;
    let r = h.client.get(h.url("/v1/models")).bearer_auth(TOKEN).send().await.unwrap();
    assert_eq!(r.status(), 200);
    let v: serde_json::Value = r.json().await.unwrap();
    assert_eq!(v["object"], "list");
    let ids: Vec<&str> = v["data"].as_array().unwrap().iter().map(|m| m["id"].as_str().unwrap()).collect();
    assert_eq!(ids, ["mock-1", "mock-2"]);
    let asked: Vec<String> = upstream.seen.lock().unwrap().iter().map(|s| format!("{} {}", s.method, s.path)).collect();
    assert_eq!(asked, ["GET /v1/models"]);
    assert_eq!(h.gateway.models.list_failures(), 1);
}

#[tokio::test]
async fn worker_threads_share_one_address_and_stop_cleanly() {
    let upstream = Upstream::openai_like().await;
    let h = Harness::start(&manifests(&upstream.base_url())).await;
    let workers = uprox_gateway::server::Workers::start(
        h.gateway.clone(),
        "127.0.0.1:0".parse().unwrap(),
        3,
        Duration::from_secs(1),
    )
    .unwrap();
    assert_eq!(workers.count(), 3);
    assert_ne!(workers.addr.port(), 0, "port 0 is resolved to the real port");
    let url = format!("http://{}/v1/chat/completions", workers.addr);
    // Separate clients open separate connections, which the kernel spreads over the workers.
    for _ in 0..12 {
        let r = reqwest::Client::new().post(&url).bearer_auth(TOKEN).body(CHAT).send().await.unwrap();
        assert_eq!(r.status(), 200);
        r.bytes().await.unwrap();
    }
    let addr = workers.addr;
    tokio::task::spawn_blocking(move || workers.stop_and_join()).await.unwrap();
    assert!(tokio::net::TcpStream::connect(addr).await.is_err(), "nothing listens after stop");
}
