//! The Files API end to end: the gateway in standalone mode on 127.0.0.1:0 in front of an
//! in-process upstream that implements the Files API (with the mock provider's in-memory
//! store) and records what it received. Uploads and downloads are streamed, the size limit
//! answers 413, and a Service never sees, downloads or deletes another Service's files. The
//! cluster ownership store is exercised against the in-memory Kubernetes API server.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::collections::HashSet;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use common::{Harness, PROVIDER_KEY, TOKEN, TOKEN2, error_of, eventually, identity_with};
use http::{Method, Request, Response};
use http_body_util::{BodyExt as _, StreamBody};
use hyper::body::{Frame, Incoming};
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use k8s_openapi::api::core::v1::ConfigMap;
use tokio::sync::Notify;
use uprox_crds::common::ObjectId;
use uprox_gateway::app::{Gateway, Settings};
use uprox_gateway::body::{Body, BoxError};
use uprox_gateway::files::cluster::{ConfigMapOwners, FILES_LABEL, SERVICE_ANNOTATION, config_map_name};
use uprox_gateway::files::standalone::JsonFileOwners;
use uprox_gateway::files::{FileOwners, FileRecord, OwnersError};
use uprox_gateway::providers::mock::files::MockFiles;
use uprox_gateway::standalone;
use uprox_testkit::apiserver::FakeApiServer;

/// A token of a third MachineToken that holds only the `chat` scope.
const CHAT_ONLY: &str = "uprox_live_CCCCCCCCCCCCCCCCCCCCCCCCCCCCCCCCCCCCCCCCCCC";
const BOUNDARY: &str = "uprox-test-boundary-7MA4YWxkTrZu0gW";

/// One request the upstream received.
#[derive(Debug, Clone)]
struct Received {
    method: Method,
    path: String,
    query: Option<String>,
    headers: http::HeaderMap,
    body: Bytes,
}

#[derive(Default)]
struct UpstreamState {
    files: MockFiles,
    received: Mutex<Vec<Received>>,
    /// Fired when the first bytes of an upload body arrive.
    first_bytes: Notify,
    /// When set, file content is sent in two halves with this gate in between.
    content_gate: Mutex<Option<Arc<Notify>>>,
}

/// An OpenAI-like Files API upstream.
struct FilesUpstream {
    addr: SocketAddr,
    state: Arc<UpstreamState>,
}

impl FilesUpstream {
    async fn start() -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let state = Arc::new(UpstreamState::default());
        let shared = state.clone();
        tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                let state = shared.clone();
                tokio::spawn(async move {
                    let service = service_fn(move |r: Request<Incoming>| {
                        let state = state.clone();
                        async move { Ok::<_, Infallible>(answer(&state, r).await) }
                    });
                    let _ =
                        auto::Builder::new(TokioExecutor::new()).serve_connection(TokioIo::new(stream), service).await;
                });
            }
        });
        Self { addr, state }
    }

    fn base_url(&self) -> String {
        format!("http://{}/v1", self.addr)
    }

    fn received(&self) -> Vec<Received> {
        self.state.received.lock().unwrap().clone()
    }

    fn count(&self) -> usize {
        self.state.received.lock().unwrap().len()
    }
}

async fn answer(state: &UpstreamState, request: Request<Incoming>) -> Response<Body> {
    let (parts, mut incoming) = request.into_parts();
    let mut body = Vec::new();
    while let Some(frame) = incoming.frame().await {
        let Ok(frame) = frame else { break };
        if let Ok(data) = frame.into_data() {
            if body.is_empty() && !data.is_empty() {
                state.first_bytes.notify_one();
            }
            body.extend_from_slice(&data);
        }
    }
    // Azure's shapes (`/openai/files…`) are served like OpenAI's.
    let path = parts.uri.path().replacen("/openai/files", "/v1/files", 1);
    state.received.lock().unwrap().push(Received {
        method: parts.method.clone(),
        path: path.clone(),
        query: parts.uri.query().map(str::to_owned),
        headers: parts.headers.clone(),
        body: Bytes::from(body.clone()),
    });
    let id = path.strip_prefix("/v1/files/").map(|rest| rest.trim_end_matches("/content"));
    let result = match (&parts.method, id, path.ends_with("/content")) {
        (&Method::POST, None, _) => {
            let ct = parts.headers.get("content-type").and_then(|v| v.to_str().ok()).unwrap_or_default();
            state.files.upload(ct, &body)
        }
        (&Method::GET, None, _) => state.files.list(parts.uri.query()),
        (&Method::GET, Some(id), true) => {
            let gate = state.content_gate.lock().unwrap().clone();
            match (state.files.content(id), gate) {
                (Ok(r), Some(gate)) => {
                    let data = r.into_body().collect().await.unwrap().to_bytes();
                    let half = data.len() / 2;
                    let (first, second) = (data.slice(..half), data.slice(half..));
                    let stream = futures_util::stream::unfold(0u8, move |step| {
                        let (gate, first, second) = (gate.clone(), first.clone(), second.clone());
                        async move {
                            match step {
                                0 => Some((Ok::<_, BoxError>(Frame::data(first)), 1)),
                                1 => {
                                    gate.notified().await;
                                    Some((Ok(Frame::data(second)), 2))
                                }
                                _ => None,
                            }
                        }
                    });
                    Ok(Response::new(StreamBody::new(Box::pin(stream)).boxed_unsync()))
                }
                (r, _) => r,
            }
        }
        (&Method::GET, Some(id), false) => state.files.retrieve(id),
        (&Method::DELETE, Some(id), _) => state.files.delete(id),
        _ => Ok(common::reply(404, "application/json", "{}")),
    };
    result.unwrap_or_else(|e| e.into_response())
}

/// Two Services of team `team` on the upstream: `app` ([`TOKEN`]) and `other` ([`TOKEN2`]),
/// and a chat-only token for `app` ([`CHAT_ONLY`]).
fn manifests(base_url: &str) -> String {
    let mut yaml = common::upstream_provider(base_url, PROVIDER_KEY, r#"["gpt-*"]"#, "timeoutSeconds: 5");
    yaml += &identity_with("{}", "");
    for (name, token, service, scopes) in
        [("other", TOKEN2, "other", ""), ("chat-only", CHAT_ONLY, "app", ", scopes: [chat]")]
    {
        if service == "other" {
            yaml += "\n---\napiVersion: uprox.dev/v1alpha1\nkind: Service\nmetadata: {name: other, namespace: team}\nspec: {}\n";
        }
        yaml += &format!(
            r#"
---
apiVersion: uprox.dev/v1alpha1
kind: MachineToken
metadata: {{name: {name}, namespace: team}}
spec: {{service: {service}, secretName: {name}-token{scopes}}}
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
        );
    }
    yaml
}

fn multipart(content: &[u8], filename: &str, purpose: &str) -> Vec<u8> {
    let mut body = format!(
        "--{BOUNDARY}\r\nContent-Disposition: form-data; name=\"purpose\"\r\n\r\n{purpose}\r\n--{BOUNDARY}\r\nContent-Disposition: form-data; name=\"file\"; filename=\"{filename}\"\r\nContent-Type: application/octet-stream\r\n\r\n"
    )
    .into_bytes();
    body.extend_from_slice(content);
    body.extend_from_slice(format!("\r\n--{BOUNDARY}--\r\n").as_bytes());
    body
}

fn content_type() -> String {
    format!("multipart/form-data; boundary={BOUNDARY}")
}

/// A gateway with the file ownership store of its state folder, as `main` wires it.
async fn gateway_on(yaml: &str, settings: Settings, dir: Option<tempfile::TempDir>) -> Harness {
    let dir = dir.unwrap_or_else(|| tempfile::tempdir().unwrap());
    std::fs::create_dir_all(dir.path().join("config")).unwrap();
    std::fs::write(dir.path().join("config/all.yaml"), yaml).unwrap();
    let gateway = Gateway::new(settings);
    let options = standalone::Options {
        config_dir: dir.path().join("config"),
        state_dir: dir.path().join("state"),
        poll_interval: Duration::from_millis(50),
    };
    let owners = JsonFileOwners::load(&options.state_dir.join("files")).unwrap();
    gateway.files.set_owners(Arc::new(owners)).unwrap();
    standalone::load_and_install(&gateway, &options).expect("test config must load");
    let watcher = tokio::spawn(standalone::watch(gateway.clone(), options));
    Harness::serve(gateway, watcher, dir).await
}

async fn upload(h: &Harness, token: &str, content: &[u8], purpose: &str) -> serde_json::Value {
    let r = post_file(h, token, multipart(content, "data.jsonl", purpose)).await;
    assert_eq!(r.status(), 200, "upload failed");
    r.json().await.unwrap()
}

/// `POST /v1/files` with `body` as the multipart upload of [`content_type`].
async fn post_file(h: &Harness, token: &str, body: impl Into<reqwest::Body>) -> reqwest::Response {
    h.client
        .post(h.url("/v1/files"))
        .bearer_auth(token)
        .header("content-type", content_type())
        .body(body)
        .send()
        .await
        .unwrap()
}

async fn get(h: &Harness, token: &str, path: &str) -> reqwest::Response {
    h.client.get(h.url(path)).bearer_auth(token).send().await.unwrap()
}

async fn ids(h: &Harness, token: &str) -> HashSet<String> {
    let r = get(h, token, "/v1/files").await;
    assert_eq!(r.status(), 200);
    let v: serde_json::Value = r.json().await.unwrap();
    assert_eq!(v["object"], "list");
    v["data"].as_array().unwrap().iter().map(|f| f["id"].as_str().unwrap().to_owned()).collect()
}

#[tokio::test]
async fn uploads_are_streamed_to_the_upstream_byte_for_byte() {
    let up = FilesUpstream::start().await;
    let h = gateway_on(&manifests(&up.base_url()), Settings::default(), None).await;
    let content = b"{\"a\":1}\n{\"b\":2}\n".repeat(100);
    let body = multipart(&content, "data.jsonl", "batch");
    let (first, rest) = body.split_at(body.len() / 3);
    let (first, rest) = (Bytes::copy_from_slice(first), Bytes::copy_from_slice(rest));

    // The second part is sent only once the upstream has received the first: a gateway that
    // buffered the whole body would never call the upstream, and the test would time out.
    let state = up.state.clone();
    let stream = futures_util::stream::unfold(0u8, move |step| {
        let (state, first, rest) = (state.clone(), first.clone(), rest.clone());
        async move {
            match step {
                0 => Some((Ok::<_, std::io::Error>(first), 1)),
                1 => {
                    state.first_bytes.notified().await;
                    Some((Ok(rest), 2))
                }
                _ => None,
            }
        }
    });
    let send = h
        .client
        .post(h.url("/v1/files"))
        .bearer_auth(TOKEN)
        .header("content-type", content_type())
        .body(reqwest::Body::wrap_stream(stream))
        .send();
    let r = tokio::time::timeout(Duration::from_secs(10), send).await.expect("the upload was not streamed").unwrap();
    assert_eq!(r.status(), 200);
    let file: serde_json::Value = r.json().await.unwrap();
    assert!(file["id"].as_str().unwrap().starts_with("file-"));
    assert_eq!(file["bytes"], content.len());
    assert_eq!(file["purpose"], "batch");

    let seen = up.received();
    let upload = seen.iter().find(|s| s.method == Method::POST).unwrap();
    assert_eq!(upload.path, "/v1/files");
    assert_eq!(upload.body, Bytes::from(body), "the multipart body arrives unchanged");
    assert_eq!(upload.headers["content-type"], content_type().as_str(), "boundary kept");
    assert_eq!(upload.headers["authorization"], format!("Bearer {PROVIDER_KEY}").as_str());
    assert!(upload.headers.get("x-client-request-id").is_some());

    // The uploader owns it.
    let r = get(&h, TOKEN, &format!("/v1/files/{}", file["id"].as_str().unwrap())).await;
    assert_eq!(r.status(), 200);
    assert_eq!(r.json::<serde_json::Value>().await.unwrap()["id"], file["id"]);
}

#[tokio::test]
async fn uploads_over_the_limit_get_413() {
    let up = FilesUpstream::start().await;
    let settings = Settings { max_file_bytes: 1000, ..Settings::default() };
    let h = gateway_on(&manifests(&up.base_url()), settings, None).await;
    let big = multipart(&vec![b'x'; 2000], "big.bin", "batch");

    // Known length: refused before any upstream call.
    let r = post_file(&h, TOKEN, big.clone()).await;
    assert_eq!(r.status(), 413);
    assert_eq!(error_of(r).await["code"], "request_too_large");
    assert_eq!(up.count(), 0, "no upstream call");

    // Chunked: cut when it crosses the limit.
    let chunks: Vec<Result<Bytes, std::io::Error>> = big.chunks(300).map(|c| Ok(Bytes::copy_from_slice(c))).collect();
    let r = post_file(&h, TOKEN, reqwest::Body::wrap_stream(futures_util::stream::iter(chunks))).await;
    assert_eq!(r.status(), 413);
    assert_eq!(error_of(r).await["type"], "invalid_request_error");
    assert!(ids(&h, TOKEN).await.is_empty(), "nothing was stored");

    // Under the limit it works; a body that is not multipart is refused.
    upload(&h, TOKEN, b"small", "batch").await;
    let r = h.post("/v1/files", Some(TOKEN), "{}").await;
    assert_eq!(r.status(), 400);
}

#[tokio::test]
async fn services_only_see_their_own_files() {
    let up = FilesUpstream::start().await;
    let h = gateway_on(&manifests(&up.base_url()), Settings::default(), None).await;
    let mine = upload(&h, TOKEN, b"mine", "assistants").await["id"].as_str().unwrap().to_owned();
    let theirs = upload(&h, TOKEN2, b"theirs", "assistants").await["id"].as_str().unwrap().to_owned();

    assert_eq!(ids(&h, TOKEN).await, HashSet::from([mine.clone()]));
    assert_eq!(ids(&h, TOKEN2).await, HashSet::from([theirs.clone()]));

    // The other Service gets 404 for every operation on `mine`, without an upstream call.
    let before = up.count();
    for path in [format!("/v1/files/{mine}"), format!("/v1/files/{mine}/content")] {
        let r = get(&h, TOKEN2, &path).await;
        assert_eq!(r.status(), 404, "{path}");
        let e = error_of(r).await;
        assert_eq!(e["message"], format!("No such File object: {mine}"));
        assert_eq!(e["type"], "invalid_request_error");
    }
    let r = h.client.delete(h.url(&format!("/v1/files/{mine}"))).bearer_auth(TOKEN2).send().await.unwrap();
    assert_eq!(r.status(), 404);
    assert_eq!(get(&h, TOKEN2, "/openai/files/file-does-not-exist").await.status(), 404);
    assert_eq!(up.count(), before, "foreign ids never reach the upstream");

    // The owner still has it, content included.
    let r = get(&h, TOKEN, &format!("/v1/files/{mine}/content")).await;
    assert_eq!(r.status(), 200);
    assert_eq!(r.bytes().await.unwrap(), "mine");

    // Deleting forgets: afterwards the id is unknown without asking the upstream.
    let r = h.client.delete(h.url(&format!("/v1/files/{mine}"))).bearer_auth(TOKEN).send().await.unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.json::<serde_json::Value>().await.unwrap()["deleted"], true);
    assert_eq!(h.gateway.files.owners().owner(&mine), None);
    let before = up.count();
    assert_eq!(get(&h, TOKEN, &format!("/v1/files/{mine}")).await.status(), 404);
    assert_eq!(up.count(), before);
    assert!(ids(&h, TOKEN).await.is_empty());
    assert_eq!(ids(&h, TOKEN2).await, HashSet::from([theirs]));
}

#[tokio::test]
async fn listing_pages_and_filters() {
    let up = FilesUpstream::start().await;
    let h = gateway_on(&manifests(&up.base_url()), Settings::default(), None).await;
    let mut mine = Vec::new();
    for i in 0..3 {
        mine.push(upload(&h, TOKEN, format!("m{i}").as_bytes(), "batch").await["id"].as_str().unwrap().to_owned());
        upload(&h, TOKEN2, b"x", "batch").await;
    }
    upload(&h, TOKEN, b"a", "assistants").await;
    let r = get(&h, TOKEN, "/v1/files?purpose=batch&limit=2&order=asc").await;
    let page: serde_json::Value = r.json().await.unwrap();
    let data: Vec<&str> = page["data"].as_array().unwrap().iter().map(|f| f["id"].as_str().unwrap()).collect();
    assert_eq!(data, [mine[0].as_str(), mine[1].as_str()]);
    assert_eq!(page["has_more"], true);
    let r = get(&h, TOKEN, &format!("/v1/files?purpose=batch&limit=2&order=asc&after={}", mine[1])).await;
    let page: serde_json::Value = r.json().await.unwrap();
    assert_eq!(page["data"][0]["id"], mine[2].as_str());
    assert_eq!(page["data"].as_array().unwrap().len(), 1);
    assert_eq!(page["has_more"], false);
    // The query the upstream got carries the filters.
    assert!(up.received().iter().any(|r| r.method == Method::GET && r.path == "/v1/files"));
    assert_eq!(get(&h, TOKEN, "/v1/files?limit=0").await.status(), 400);
}

#[tokio::test]
async fn content_is_relayed_as_it_arrives() {
    let up = FilesUpstream::start().await;
    let h = gateway_on(&manifests(&up.base_url()), Settings::default(), None).await;
    let id = upload(&h, TOKEN, b"first half|second half", "batch").await["id"].as_str().unwrap().to_owned();
    let gate = Arc::new(Notify::new());
    *up.state.content_gate.lock().unwrap() = Some(gate.clone());

    let mut r = get(&h, TOKEN, &format!("/v1/files/{id}/content")).await;
    assert_eq!(r.status(), 200);
    // The first half arrives while the upstream still holds back the second.
    let first = tokio::time::timeout(Duration::from_secs(5), r.chunk()).await.expect("not streamed").unwrap().unwrap();
    assert_eq!(first, "first half|");
    gate.notify_one();
    let mut rest = Vec::new();
    while let Some(chunk) = r.chunk().await.unwrap() {
        rest.extend_from_slice(&chunk);
    }
    assert_eq!(rest, b"second half");
}

#[tokio::test]
async fn the_files_scope_is_required() {
    let up = FilesUpstream::start().await;
    let h = gateway_on(&manifests(&up.base_url()), Settings::default(), None).await;
    let r = get(&h, CHAT_ONLY, "/v1/files").await;
    assert_eq!(r.status(), 403);
    assert_eq!(error_of(r).await["type"], "permission_error");
    let r = post_file(&h, CHAT_ONLY, multipart(b"x", "x", "batch")).await;
    assert_eq!(r.status(), 403);
    assert_eq!(get(&h, "", "/v1/files").await.status(), 401);
    let r = h.client.put(h.url("/v1/files")).bearer_auth(TOKEN).send().await.unwrap();
    assert_eq!(r.status(), 405);
    assert_eq!(r.headers()["allow"], "GET, POST");
    assert_eq!(up.count(), 0);
}

#[tokio::test]
async fn ownership_survives_a_restart_in_standalone_mode() {
    let up = FilesUpstream::start().await;
    let yaml = manifests(&up.base_url());
    let mut h = gateway_on(&yaml, Settings::default(), None).await;
    let id = upload(&h, TOKEN, b"kept", "batch").await["id"].as_str().unwrap().to_owned();
    let dir = std::mem::replace(&mut h.dir, tempfile::tempdir().unwrap());
    drop(h);
    let path = dir.path().join("state/files/owners.json");
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt as _;
        assert_eq!(std::fs::metadata(&path).unwrap().permissions().mode() & 0o777, 0o600);
    }
    assert!(std::fs::read_to_string(&path).unwrap().contains(&id));

    let h = gateway_on(&yaml, Settings::default(), Some(dir)).await;
    assert_eq!(get(&h, TOKEN, &format!("/v1/files/{id}")).await.status(), 200);
    assert_eq!(get(&h, TOKEN2, &format!("/v1/files/{id}")).await.status(), 404);
    assert_eq!(ids(&h, TOKEN).await, HashSet::from([id]));
}

#[tokio::test]
async fn the_mock_provider_serves_files_in_memory() {
    let h = gateway_on(&common::mock_manifests(), Settings::default(), None).await;
    let file = upload(&h, TOKEN, b"hello mock", "assistants").await;
    let id = file["id"].as_str().unwrap();
    assert_eq!(file["filename"], "data.jsonl");
    assert_eq!(ids(&h, TOKEN).await, HashSet::from([id.to_owned()]));
    let r = get(&h, TOKEN, &format!("/openai/v1/files/{id}/content")).await;
    assert_eq!(r.bytes().await.unwrap(), "hello mock");
    let r = h.client.delete(h.url(&format!("/v1/files/{id}"))).bearer_auth(TOKEN).send().await.unwrap();
    assert_eq!(r.status(), 200);
    assert!(ids(&h, TOKEN).await.is_empty());
}

#[tokio::test]
async fn a_service_without_a_files_provider_gets_400() {
    let yaml = r#"
apiVersion: uprox.dev/v1alpha1
kind: Provider
metadata: {name: claude, namespace: team}
spec:
  type: anthropic
  keys: [{label: main, secretRef: {name: k, key: apiKey}}]
---
apiVersion: v1
kind: Secret
metadata: {name: k, namespace: team}
stringData: {apiKey: "sk-ant-test"}
"#
    .to_owned()
        + &identity_with("{}", "");
    let h = gateway_on(&yaml, Settings::default(), None).await;
    let r = post_file(&h, TOKEN, multipart(b"x", "x", "batch")).await;
    assert_eq!(r.status(), 400);
    assert!(error_of(r).await["message"].as_str().unwrap().contains("Files API"));
}

#[tokio::test]
async fn azure_providers_get_the_azure_files_urls() {
    let up = FilesUpstream::start().await;
    let yaml = format!(
        r#"
apiVersion: uprox.dev/v1alpha1
kind: Provider
metadata: {{name: azure, namespace: team}}
spec:
  type: azure
  apiVersion: "2024-06-01"
  models: ["gpt4o"]
  keys:
    - {{label: east, endpoint: "http://{addr}", secretRef: {{name: azure-keys, key: east}}}}
---
apiVersion: v1
kind: Secret
metadata: {{name: azure-keys, namespace: team}}
stringData: {{east: key-east}}
"#,
        addr = up.addr
    ) + &identity_with("{}", "");
    let h = gateway_on(&yaml, Settings::default(), None).await;
    // An Azure client: `/openai/files` with its api-version and the token in `api-key`.
    let r = h
        .client
        .post(h.url("/openai/files?api-version=2024-10-21"))
        .header("api-key", TOKEN)
        .header("content-type", content_type())
        .body(multipart(b"azure bytes", "a.jsonl", "batch"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let id = r.json::<serde_json::Value>().await.unwrap()["id"].as_str().unwrap().to_owned();
    let r = h.client.get(h.url(&format!("/openai/files/{id}/content"))).header("api-key", TOKEN).send().await.unwrap();
    assert_eq!(r.bytes().await.unwrap(), "azure bytes");

    let seen = up.received();
    assert_eq!(seen[0].path, "/v1/files", "received at /openai/files");
    for r in &seen {
        assert_eq!(r.query.as_deref(), Some("api-version=2024-06-01"), "the Provider's api-version");
        assert_eq!(r.headers["api-key"], "key-east");
        assert!(r.headers.get("authorization").is_none());
    }
}

/// A store that cannot write.
#[derive(Debug)]
struct Unwritable;

impl FileOwners for Unwritable {
    fn owner(&self, _: &str) -> Option<ObjectId> {
        None
    }
    fn owned_by(&self, _: &ObjectId) -> HashSet<String> {
        HashSet::new()
    }
    fn record<'a>(
        &'a self,
        _: &'a ObjectId,
        _: &'a str,
        _: FileRecord,
    ) -> futures_util::future::BoxFuture<'a, Result<(), OwnersError>> {
        Box::pin(async { Err(OwnersError::Api("ConfigMap uprox-files-x: request entity too large".into())) })
    }
    fn forget<'a>(
        &'a self,
        _: &'a ObjectId,
        _: &'a str,
    ) -> futures_util::future::BoxFuture<'a, Result<(), OwnersError>> {
        Box::pin(async { Ok(()) })
    }
}

#[tokio::test]
async fn an_upload_whose_owner_cannot_be_recorded_is_undone() {
    let up = FilesUpstream::start().await;
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(dir.path().join("config")).unwrap();
    std::fs::write(dir.path().join("config/all.yaml"), manifests(&up.base_url())).unwrap();
    let gateway = Gateway::new(Settings::default());
    gateway.files.set_owners(Arc::new(Unwritable)).unwrap();
    let options = standalone::Options {
        config_dir: dir.path().join("config"),
        state_dir: dir.path().join("state"),
        poll_interval: Duration::from_millis(50),
    };
    standalone::load_and_install(&gateway, &options).unwrap();
    let h = Harness::serve(gateway, tokio::spawn(async {}), dir).await;

    let r = post_file(&h, TOKEN, multipart(b"orphan", "o.txt", "batch")).await;
    assert_eq!(r.status(), 503);
    assert_eq!(error_of(r).await["code"], "file_owners_unavailable");
    let seen = up.received();
    assert_eq!(seen.len(), 2);
    assert_eq!(seen[1].method, Method::DELETE, "the unrecorded file is deleted upstream");
    let listed: serde_json::Value =
        serde_json::from_slice(&up.state.files.list(None).unwrap().into_body().collect().await.unwrap().to_bytes())
            .unwrap();
    assert_eq!(listed["data"].as_array().unwrap().len(), 0);
}

const NS: &str = "uprox-system";

async fn replica(api: &FakeApiServer) -> (Arc<ConfigMapOwners>, tokio::task::JoinHandle<()>) {
    let store = ConfigMapOwners::new(api.client(), NS);
    let task = tokio::spawn(store.clone().run());
    assert!(eventually(Duration::from_secs(10), || async { store.ready() }).await, "the store never listed");
    (store, task)
}

#[tokio::test]
async fn the_cluster_store_is_shared_by_replicas_and_survives_restarts() {
    let api = FakeApiServer::start().await;
    let app = ObjectId::new("team", "app");
    let other = ObjectId::new("team", "other");
    let (one, one_task) = replica(&api).await;
    let (two, two_task) = replica(&api).await;
    let record = |purpose: &str| FileRecord { uploaded_at: 1_700_000_000, purpose: purpose.to_owned() };

    // Recorded on one replica: visible there at once, on the other through its watch.
    one.record(&app, "file-a1", record("batch")).await.unwrap();
    assert_eq!(one.owner("file-a1"), Some(app.clone()));
    assert!(eventually(Duration::from_secs(10), || async { two.owner("file-a1") == Some(app.clone()) }).await);

    // Both replicas write the same Service's ConfigMap: merge patches keep both keys.
    let (a, b) =
        tokio::join!(two.record(&app, "file-a2", record("batch")), one.record(&other, "file-o1", record("assistants")));
    a.unwrap();
    b.unwrap();
    one.record(&app, "file-a3", record("batch")).await.unwrap();
    let expected: HashSet<String> = ["file-a1", "file-a2", "file-a3"].map(str::to_owned).into();
    assert!(
        eventually(Duration::from_secs(10), || async {
            one.owned_by(&app) == expected && two.owned_by(&app) == expected
        })
        .await
    );
    assert_eq!(two.owned_by(&other), HashSet::from(["file-o1".to_owned()]));

    // The layout: one labelled, annotated ConfigMap per Service, a key per file.
    let cm: ConfigMap = api.get(Some(NS), &config_map_name(&app)).unwrap();
    assert_eq!(cm.metadata.annotations.as_ref().unwrap()[SERVICE_ANNOTATION], "team/app");
    assert!(cm.metadata.labels.as_ref().unwrap().contains_key(FILES_LABEL));
    let value: serde_json::Value = serde_json::from_str(&cm.data.as_ref().unwrap()["file-a1"]).unwrap();
    assert_eq!(value["purpose"], "batch");

    // Forget on one replica; the other learns it.
    two.forget(&app, "file-a2").await.unwrap();
    assert!(eventually(Duration::from_secs(10), || async { one.owner("file-a2").is_none() }).await);
    two.forget(&app, "file-never-recorded").await.unwrap();
    two.forget(&ObjectId::new("team", "nobody"), "file-x").await.unwrap();

    // A restarted replica lists what was recorded.
    one_task.abort();
    two_task.abort();
    let (three, _task) = replica(&api).await;
    assert_eq!(three.owner("file-a1"), Some(app.clone()));
    assert_eq!(three.owner("file-a2"), None);
    assert_eq!(three.owner("file-o1"), Some(other));
}
