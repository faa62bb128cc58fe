//! Test harness: a scripted upstream on 127.0.0.1:0, a manifest folder written from YAML, and a
//! gateway served in-process on 127.0.0.1:0 from that folder through standalone mode; and, in
//! `golden`, the harness of the wire-format golden tests.

#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

use std::convert::Infallible;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http::{Request, Response};
use http_body_util::BodyExt as _;
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use tokio::sync::oneshot;
use uprox_gateway::app::{Gateway, Settings};
use uprox_gateway::body::Body;
use uprox_gateway::{server, standalone};

pub mod golden;

/// A well-formed token the test configs pre-supply.
pub const TOKEN: &str = "uprox_live_AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA";
/// A second one, for a second token.
pub const TOKEN2: &str = "uprox_live_BBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBB";
/// The provider key the upstream must receive.
pub const PROVIDER_KEY: &str = "sk-test-provider-key-0123456789";

/// What the upstream saw.
#[derive(Debug, Clone)]
pub struct Seen {
    pub method: http::Method,
    pub path: String,
    pub query: Option<String>,
    pub authorization: Option<String>,
    pub headers: http::HeaderMap,
    pub body: Bytes,
}

type Handler = Arc<dyn Fn(Seen) -> futures_util::future::BoxFuture<'static, Response<Body>> + Send + Sync>;

/// A scripted upstream.
pub struct Upstream {
    pub addr: SocketAddr,
    pub seen: Arc<Mutex<Vec<Seen>>>,
}

impl Upstream {
    pub async fn start(handler: Handler) -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let seen = Arc::new(Mutex::new(Vec::new()));
        let log = seen.clone();
        tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    return;
                };
                let handler = handler.clone();
                let log = log.clone();
                tokio::spawn(async move {
                    let service = service_fn(move |r: Request<Incoming>| {
                        let handler = handler.clone();
                        let log = log.clone();
                        async move {
                            let method = r.method().clone();
                            let path = r.uri().path().to_owned();
                            let query = r.uri().query().map(str::to_owned);
                            let authorization =
                                r.headers().get("authorization").map(|v| v.to_str().unwrap().to_owned());
                            let headers = r.headers().clone();
                            let body = r.into_body().collect().await.unwrap().to_bytes();
                            let s = Seen { method, path, query, authorization, headers, body };
                            log.lock().unwrap().push(s.clone());
                            Ok::<_, Infallible>(handler(s).await)
                        }
                    });
                    let _ =
                        auto::Builder::new(TokioExecutor::new()).serve_connection(TokioIo::new(stream), service).await;
                });
            }
        });
        Self { addr, seen }
    }

    /// An upstream that answers like OpenAI through the mock provider (POSTs; anything else is
    /// a 404).
    pub async fn openai_like() -> Self {
        Self::start(Arc::new(|s: Seen| {
            Box::pin(async move {
                if s.method != http::Method::POST {
                    return reply(
                        404,
                        "application/json",
                        r#"{"error":{"message":"not here","type":"invalid_request_error"}}"#,
                    );
                }
                uprox_gateway::providers::mock::respond(&s.body, None).unwrap()
            })
        }))
        .await
    }

    pub fn base_url(&self) -> String {
        format!("http://{}/v1", self.addr)
    }
}

/// Manifests for one team: an openai-compatible provider at `base_url`, a mock provider, a
/// policy, a service and a token with [`TOKEN`].
pub fn manifests(base_url: &str) -> String {
    upstream_provider(base_url, PROVIDER_KEY, r#"["gpt-*", "slow-*"]"#, "timeoutSeconds: 1")
        + r#"
---
apiVersion: uprox.dev/v1alpha1
kind: Provider
metadata: {name: mock, namespace: team}
spec: {type: mock}
---
apiVersion: uprox.dev/v1alpha1
kind: Policy
metadata: {name: p, namespace: team}
spec: {models: ["gpt-*", "slow-*", "mock-*"]}
"# + &identity_with("{policies: [p]}", "")
}

/// The Provider `upstream` of team `team` (openai-compatible at `base_url`, serving `models`, a
/// flow YAML list; `extra` is one more spec line or empty) and the Secret holding its `key`.
pub fn upstream_provider(base_url: &str, key: &str, models: &str, extra: &str) -> String {
    let extra = if extra.is_empty() { String::new() } else { format!("  {extra}\n") };
    format!(
        r#"
apiVersion: uprox.dev/v1alpha1
kind: Provider
metadata: {{name: upstream, namespace: team}}
spec:
  type: openai-compatible
  baseUrl: "{base_url}"
  models: {models}
{extra}  keys: [{{label: main, secretRef: {{name: upstream-key, key: apiKey}}}}]
---
apiVersion: v1
kind: Secret
metadata: {{name: upstream-key, namespace: team}}
stringData: {{apiKey: "{key}"}}
"#
    )
}

/// An anthropic Provider `claude` at `base_url` (no `/v1`) with its key Secret, and
/// [`identity`].
pub fn anthropic_manifests(base_url: &str) -> String {
    anthropic_provider(base_url, "") + &identity()
}

/// The anthropic Provider `claude` at `base_url` with its key Secret; `extra` is one more spec
/// line or empty.
pub fn anthropic_provider(base_url: &str, extra: &str) -> String {
    let extra = if extra.is_empty() { String::new() } else { format!("  {extra}\n") };
    format!(
        r#"
apiVersion: uprox.dev/v1alpha1
kind: Provider
metadata: {{name: claude, namespace: team}}
spec:
  type: anthropic
  baseUrl: "{base_url}"
{extra}  keys: [{{label: main, secretRef: {{name: anthropic-key, key: apiKey}}}}]
---
apiVersion: v1
kind: Secret
metadata: {{name: anthropic-key, namespace: team}}
stringData: {{apiKey: "{PROVIDER_KEY}"}}
"#
    )
}

/// The `mock` Provider alone, and [`identity`].
pub fn mock_manifests() -> String {
    r#"
apiVersion: uprox.dev/v1alpha1
kind: Provider
metadata: {name: mock, namespace: team}
spec: {type: mock}
"#
    .to_owned()
        + &identity()
}

/// The Service `team/app` (no Policy), its MachineToken and the token Secret holding
/// [`TOKEN`]: append to a test's Providers.
pub fn identity() -> String {
    identity_with("{}", "")
}

/// [`identity`] with the Service's spec (flow YAML) and extra MachineToken spec fields (for
/// example `", scopes: [chat]"`).
pub fn identity_with(service_spec: &str, token_extra: &str) -> String {
    identity_of("app", service_spec, token_extra, TOKEN)
}

/// The Service `team/{name}` (spec `service_spec`), its MachineToken (extra spec fields
/// `token_extra`) and the Secret holding `token`.
pub fn identity_of(name: &str, service_spec: &str, token_extra: &str, token: &str) -> String {
    format!(
        r#"
---
apiVersion: uprox.dev/v1alpha1
kind: Service
metadata: {{name: {name}, namespace: team}}
spec: {service_spec}
---
apiVersion: uprox.dev/v1alpha1
kind: MachineToken
metadata: {{name: {name}, namespace: team}}
spec: {{service: {name}, secretName: {name}-token{token_extra}}}
---
apiVersion: v1
kind: Secret
metadata:
  name: {name}-token
  namespace: team
  labels: {{uprox.dev/machine-token: {name}}}
  annotations: {{uprox.dev/rotation: "0"}}
stringData: {{token: "{token}"}}
"#
    )
}

/// Waits until the gateway's response cache holds `entries` answers (an answer is stored as its
/// body ends, a moment after the client has read it).
pub async fn cache_holds(gateway: &Gateway, entries: u64) -> bool {
    let store = gateway.cache.store();
    eventually(Duration::from_secs(10), || async {
        store.weighted_bytes();
        store.entries() >= entries
    })
    .await
}

/// An OpenAI-like chat upstream: a completion naming `gpt-4o-2024-08-06` with `usage`; a
/// first message `fail` answers 500; a stream sends one chunk and then nothing for a long time.
pub async fn chat_upstream(usage: &'static str) -> Upstream {
    Upstream::start(Arc::new(move |s: Seen| {
        Box::pin(async move {
            let request: serde_json::Value = serde_json::from_slice(&s.body).unwrap();
            if request["messages"][0]["content"] == "fail" {
                return reply(500, "application/json", r#"{"error":{"message":"boom","type":"server_error"}}"#);
            }
            if request["stream"] == true {
                return stalled_stream();
            }
            let body = format!(
                r#"{{"id":"c","object":"chat.completion","model":"gpt-4o-2024-08-06","choices":[{{"index":0,"message":{{"role":"assistant","content":"hi"}},"finish_reason":"stop"}}],"usage":{usage}}}"#
            );
            reply(200, "application/json", body)
        })
    }))
    .await
}

/// A gateway serving a manifest folder.
pub struct Harness {
    pub addr: SocketAddr,
    pub gateway: Arc<Gateway>,
    pub dir: tempfile::TempDir,
    pub client: reqwest::Client,
    stop: Option<oneshot::Sender<()>>,
    watcher: Option<tokio::task::JoinHandle<()>>,
}

impl Harness {
    pub async fn start(yaml: &str) -> Self {
        Self::start_with(yaml, Settings::default()).await
    }

    pub async fn start_with(yaml: &str, settings: Settings) -> Self {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(dir.path().join("config")).unwrap();
        std::fs::write(dir.path().join("config/all.yaml"), yaml).unwrap();
        let gateway = Gateway::new(settings);
        let options = Self::options_for(&dir);
        standalone::load_and_install(&gateway, &options).expect("test config must load");
        let watcher = tokio::spawn(standalone::watch(gateway.clone(), options));
        Self::serve(gateway, watcher, dir).await
    }

    /// Serves `gateway` on 127.0.0.1:0, whatever its config source; `watcher` (the source's
    /// task) is stopped with the harness.
    pub async fn serve(gateway: Arc<Gateway>, watcher: tokio::task::JoinHandle<()>, dir: tempfile::TempDir) -> Self {
        let listener = server::bind("127.0.0.1:0".parse().unwrap()).await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (tx, rx) = oneshot::channel::<()>();
        tokio::spawn(server::serve(
            listener,
            gateway.clone(),
            async {
                let _ = rx.await;
            },
            Duration::from_secs(1),
        ));
        Self { addr, gateway, dir, client: reqwest::Client::new(), stop: Some(tx), watcher: Some(watcher) }
    }

    fn options_for(dir: &tempfile::TempDir) -> standalone::Options {
        standalone::Options {
            config_dir: dir.path().join("config"),
            state_dir: dir.path().join("state"),
            poll_interval: Duration::from_millis(50),
        }
    }

    pub fn config_file(&self) -> PathBuf {
        self.dir.path().join("config/all.yaml")
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    pub async fn post(&self, path: &str, token: Option<&str>, body: impl Into<reqwest::Body>) -> reqwest::Response {
        let mut r = self.client.post(self.url(path)).header("content-type", "application/json").body(body);
        if let Some(t) = token {
            r = r.bearer_auth(t);
        }
        r.send().await.unwrap()
    }

    pub async fn chat(&self, body: &str) -> reqwest::Response {
        self.post("/v1/chat/completions", Some(TOKEN), body.to_owned()).await
    }
}

impl Drop for Harness {
    fn drop(&mut self) {
        if let Some(tx) = self.stop.take() {
            let _ = tx.send(());
        }
        if let Some(w) = self.watcher.take() {
            w.abort();
        }
    }
}

/// A response with a status, a content type and a body.
pub fn reply(status: u16, content_type: &'static str, body: impl Into<Bytes>) -> Response<Body> {
    let mut r = Response::new(uprox_gateway::body::full(body.into()));
    *r.status_mut() = http::StatusCode::from_u16(status).unwrap();
    r.headers_mut().insert(http::header::CONTENT_TYPE, http::HeaderValue::from_static(content_type));
    r
}

/// An Anthropic-like upstream: [`ANTHROPIC_STREAM`] to a streamed request, `message` (a
/// Messages API JSON body) otherwise.
pub async fn anthropic_upstream(message: &'static str) -> Upstream {
    Upstream::start(Arc::new(move |s: Seen| {
        Box::pin(async move {
            let request: serde_json::Value = serde_json::from_slice(&s.body).unwrap();
            if request["stream"] == true {
                return reply(200, "text/event-stream", ANTHROPIC_STREAM);
            }
            reply(200, "application/json", message)
        })
    }))
    .await
}

/// A chat completion stream that sends one chunk and then nothing for 30 s (to leave
/// mid-stream).
pub fn stalled_stream() -> Response<Body> {
    use futures_util::StreamExt as _;
    let first = Ok::<_, uprox_gateway::body::BoxError>(http_body::Frame::data(Bytes::from_static(
        b"data: {\"id\":\"c\",\"object\":\"chat.completion.chunk\",\"model\":\"gpt-4o\",\"choices\":[{\"index\":0,\"delta\":{\"content\":\"par\"}}]}\n\n",
    )));
    let stream = futures_util::stream::once(async move { first }).chain(futures_util::stream::once(async {
        tokio::time::sleep(Duration::from_secs(30)).await;
        Err("never".into())
    }));
    let mut r = Response::new(http_body_util::StreamBody::new(stream).boxed_unsync());
    r.headers_mut().insert(http::header::CONTENT_TYPE, http::HeaderValue::from_static("text/event-stream"));
    r
}

/// An error as Anthropic's API answers it.
pub fn anthropic_error(status: u16, kind: &str, message: &str) -> Response<Body> {
    reply(
        status,
        "application/json",
        format!(r#"{{"type":"error","error":{{"type":"{kind}","message":"{message}"}}}}"#),
    )
}

/// A short Anthropic Messages event stream: "Hello there", end_turn, 12 input and 5 output
/// tokens.
pub const ANTHROPIC_STREAM: &str = concat!(
    "event: message_start\ndata: {\"type\":\"message_start\",\"message\":{\"id\":\"msg_1\",\"type\":\"message\",\"role\":\"assistant\",\"content\":[],\"model\":\"claude-x\",\"stop_reason\":null,\"stop_sequence\":null,\"usage\":{\"input_tokens\":12,\"output_tokens\":1}}}\n\n",
    "event: content_block_start\ndata: {\"type\":\"content_block_start\",\"index\":0,\"content_block\":{\"type\":\"text\",\"text\":\"\"}}\n\n",
    "event: ping\ndata: {\"type\":\"ping\"}\n\n",
    "event: content_block_delta\ndata: {\"type\":\"content_block_delta\",\"index\":0,\"delta\":{\"type\":\"text_delta\",\"text\":\"Hello\"}}\n\n",
    "event: content_block_delta\ndata: {\"type\":\"content_block_delta\",\"index\":0,\"delta\":{\"type\":\"text_delta\",\"text\":\" there\"}}\n\n",
    "event: content_block_stop\ndata: {\"type\":\"content_block_stop\",\"index\":0}\n\n",
    "event: message_delta\ndata: {\"type\":\"message_delta\",\"delta\":{\"stop_reason\":\"end_turn\",\"stop_sequence\":null},\"usage\":{\"output_tokens\":5}}\n\n",
    "event: message_stop\ndata: {\"type\":\"message_stop\"}\n\n",
);

/// The `error` object of an OpenAI-shaped error response, after checking its shape.
pub async fn error_of(response: reqwest::Response) -> serde_json::Value {
    assert!(response.headers().contains_key("x-request-id"), "every response carries x-request-id");
    assert_eq!(response.headers()["content-type"], "application/json");
    let v: serde_json::Value = response.json().await.unwrap();
    let e = v["error"].clone();
    assert!(
        e["message"].is_string() && e["type"].is_string() && e.get("param").is_some() && e.get("code").is_some(),
        "not OpenAI-shaped: {v}"
    );
    e
}

/// Polls `check` until it returns true or `within` passes.
pub async fn eventually<F, Fut>(within: Duration, mut check: F) -> bool
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = tokio::time::Instant::now() + within;
    while tokio::time::Instant::now() < deadline {
        if check().await {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    false
}
