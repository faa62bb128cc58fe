//! A whole uprox installation in one process, for end-to-end tests and the scale bench: the
//! in-memory API server ([`FakeApiServer`]), the operator's reconcile loop against it, and a
//! gateway in cluster mode watching what the operator writes, serving on `127.0.0.1`.
//!
//! Everything between them is the real thing — kube-rs clients, watches, server-side apply,
//! the compiled ConfigMaps and the sealed-keys Secret — except the API server, whose fidelity
//! limits are listed in `uprox_testkit::apiserver`.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::print_stdout)]

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{Request, Response, StatusCode};
use http_body_util::{BodyExt as _, Full};
use hyper::body::Incoming;
use hyper_util::client::legacy::Client as HttpClient;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::{TokioExecutor, TokioIo};
use k8s_openapi::api::core::v1::Secret;
use tokio::sync::{Notify, watch};
use tokio::task::JoinSet;
use uprox_crds::{Budget, MachineToken, Policy, Provider, Service};
use uprox_gateway::app::{Gateway, Settings};
use uprox_gateway::server::Workers;
use uprox_gateway::spend::flush::Flusher;
use uprox_gateway::spend::store::Store;
use uprox_operator::metrics::Metrics;
use uprox_operator::outputs::Outputs;
use uprox_operator::reconciler::{PassReport, Reconciler, Timing};
use uprox_operator::stores::{Scope, Stores};
use uprox_testkit::apiserver::FakeApiServer;

/// The gateway's namespace.
pub const GATEWAY_NAMESPACE: &str = "uprox-system";

/// Operator, gateway and API server.
pub struct Cluster {
    /// The API server.
    pub api: FakeApiServer,
    /// A client of it.
    pub client: kube::Client,
    /// The gateway's state.
    pub gateway: Arc<Gateway>,
    /// Reports of the operator's passes.
    pub reports: watch::Receiver<Option<Arc<PassReport>>>,
    workers: Option<Workers>,
    tasks: JoinSet<()>,
    http: HttpClient<HttpConnector, Full<Bytes>>,
}

impl Cluster {
    /// Starts the API server, the operator (with Events) and a gateway with one worker.
    pub async fn start() -> Self {
        Self::start_with(usize::MAX).await
    }

    /// Like [`start`](Self::start), with config parts of at most `max_part` bytes.
    pub async fn start_with(max_part: usize) -> Self {
        Self::start_scoped(max_part, Vec::new()).await
    }

    /// Like [`start_with`](Self::start_with), the operator watching only `namespaces` (all
    /// when empty).
    pub async fn start_scoped(max_part: usize, namespaces: Vec<String>) -> Self {
        let api = FakeApiServer::start().await;
        let client = api.client();
        let mut tasks = JoinSet::new();

        let dirty = Arc::new(Notify::new());
        let stores = Stores::start(&client, &Scope { namespaces }, &dirty, &mut tasks);
        let mut outputs = Outputs::open(client.clone(), GATEWAY_NAMESPACE).await.expect("operator outputs");
        if max_part != usize::MAX {
            outputs = outputs.with_max_part(max_part);
        }
        let recorder = kube::runtime::events::Recorder::new(
            client.clone(),
            kube::runtime::events::Reporter { controller: "uprox-operator".into(), instance: Some("test".into()) },
        );
        let reconciler = Reconciler::new(
            client.clone(),
            stores,
            outputs,
            Some(recorder),
            Metrics::new().expect("metrics"),
            Timing::default(),
            dirty,
        );
        let reports = reconciler.reports();
        tasks.spawn(reconciler.run());

        let gateway = Gateway::new(Settings::default());
        tasks.spawn(uprox_gateway::cluster::watch(gateway.clone(), client.clone(), GATEWAY_NAMESPACE.to_owned()));
        // The gateway's usage ledger, flushed faster than in production so tests wait less.
        let ledger = Store::config_map(client.clone(), GATEWAY_NAMESPACE);
        let flusher = Flusher::new(gateway.spend.clone(), ledger, Flusher::writer_name("gateway"));
        tasks.spawn(flusher.run(Duration::from_millis(200), std::future::pending()));
        let workers = Workers::start(gateway.clone(), "127.0.0.1:0".parse().unwrap(), 1, Duration::from_secs(1))
            .expect("gateway workers");
        let http = HttpClient::builder(TokioExecutor::new()).build_http();
        Self { api, client, gateway, reports, workers: Some(workers), tasks, http }
    }

    /// The gateway's address.
    pub fn addr(&self) -> SocketAddr {
        self.workers.as_ref().map(|w| w.addr).expect("workers")
    }

    /// Puts every document of a multi-document YAML into the API server.
    pub fn apply_yaml(&self, yaml: &str) {
        use serde::Deserialize as _;
        for doc in serde_yaml::Deserializer::from_str(yaml) {
            let value = serde_yaml::Value::deserialize(doc).unwrap();
            if value.is_null() {
                continue;
            }
            match value["kind"].as_str().unwrap_or_default() {
                "Provider" => drop(self.api.put(&serde_yaml::from_value::<Provider>(value).unwrap())),
                "Service" => drop(self.api.put(&serde_yaml::from_value::<Service>(value).unwrap())),
                "MachineToken" => drop(self.api.put(&serde_yaml::from_value::<MachineToken>(value).unwrap())),
                "Policy" => drop(self.api.put(&serde_yaml::from_value::<Policy>(value).unwrap())),
                "Budget" => drop(self.api.put(&serde_yaml::from_value::<Budget>(value).unwrap())),
                "Secret" => drop(self.api.put(&serde_yaml::from_value::<Secret>(value).unwrap())),
                other => panic!("apply_yaml: unexpected kind {other:?}"),
            }
        }
    }

    /// The token in a token Secret, once the operator has issued it.
    pub fn token(&self, namespace: &str, secret: &str) -> Option<String> {
        let secret: Secret = self.api.get(Some(namespace), secret)?;
        let from_string_data = secret.string_data.as_ref().and_then(|d| d.get("token")).cloned();
        let from_data =
            secret.data.as_ref().and_then(|d| d.get("token")).and_then(|b| String::from_utf8(b.0.clone()).ok());
        from_string_data.or(from_data)
    }

    /// `POST /v1/chat/completions` with `token` for `model`; the status and body.
    pub async fn chat(&self, token: &str, model: &str) -> (StatusCode, String) {
        let body = format!(r#"{{"model":"{model}","messages":[{{"role":"user","content":"hi"}}]}}"#);
        let request = Request::post(format!("http://{}/v1/chat/completions", self.addr()))
            .header("authorization", format!("Bearer {token}"))
            .header("content-type", "application/json")
            .body(Full::new(Bytes::from(body)))
            .unwrap();
        let response = self.http.request(request).await.expect("gateway request");
        let status = response.status();
        let bytes = response.into_body().collect().await.map(|b| b.to_bytes()).unwrap_or_default();
        (status, String::from_utf8_lossy(&bytes).into_owned())
    }

    /// Polls `check` every 10 ms until it returns `Some`, and returns it with the time taken;
    /// panics naming `what` after `timeout`.
    pub async fn eventually<T, F, Fut>(what: &str, timeout: Duration, mut check: F) -> (T, Duration)
    where
        F: FnMut() -> Fut,
        Fut: std::future::Future<Output = Option<T>>,
    {
        let started = Instant::now();
        loop {
            if let Some(value) = check().await {
                return (value, started.elapsed());
            }
            assert!(started.elapsed() < timeout, "timed out after {timeout:?} waiting for: {what}");
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    /// Waits until `token` gets `status` for `model`; returns the time it took.
    pub async fn until_status(&self, token: &str, model: &str, status: StatusCode, timeout: Duration) -> Duration {
        let what = format!("{status} for {model}");
        Self::eventually(&what, timeout, || async { (self.chat(token, model).await.0 == status).then_some(()) }).await.1
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        self.tasks.abort_all();
        if let Some(workers) = self.workers.take() {
            workers.stop_and_join();
        }
    }
}

/// An OpenAI-shaped upstream on `127.0.0.1` that records the `Authorization` header of every
/// request and answers a fixed chat completion.
pub struct Upstream {
    /// Its address.
    pub addr: SocketAddr,
    /// The `Authorization` headers seen, in order.
    pub authorizations: Arc<Mutex<Vec<String>>>,
}

impl Upstream {
    /// Starts it on the current runtime.
    pub async fn start() -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let authorizations = Arc::new(Mutex::new(Vec::new()));
        let seen = authorizations.clone();
        tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else { return };
                let seen = seen.clone();
                tokio::spawn(async move {
                    let service = hyper::service::service_fn(move |request: Request<Incoming>| {
                        let auth = request
                            .headers()
                            .get("authorization")
                            .and_then(|v| v.to_str().ok())
                            .unwrap_or_default()
                            .to_owned();
                        seen.lock().unwrap().push(auth);
                        async move {
                            let body = r#"{"id":"chatcmpl-1","object":"chat.completion","created":1,"model":"gpt-4o","choices":[{"index":0,"message":{"role":"assistant","content":"ok"},"finish_reason":"stop"}],"usage":{"prompt_tokens":1,"completion_tokens":1,"total_tokens":2}}"#;
                            let response = Response::builder()
                                .header("content-type", "application/json")
                                .body(Full::new(Bytes::from_static(body.as_bytes())))
                                .unwrap();
                            Ok::<_, std::convert::Infallible>(response)
                        }
                    });
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), service)
                        .await;
                });
            }
        });
        Self { addr, authorizations }
    }

    /// The last `Authorization` header seen.
    pub fn last_authorization(&self) -> Option<String> {
        self.authorizations.lock().unwrap().last().cloned()
    }
}
