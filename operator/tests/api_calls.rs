//! The operator's writes, checked call by call against a mock API server (tower-test): each
//! test scripts the responses and asserts every request's method, path, query and body.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::VecDeque;

use http::{Method, Request, Response, StatusCode};
use k8s_openapi::ByteString;
use k8s_openapi::api::core::v1::Secret;
use kube::Client;
use kube::api::Api;
use kube::client::Body;
use serde_json::{Value, json};
use uprox_crds::cluster::{self, FIELD_MANAGER};
use uprox_crds::config::KeyMaterial;
use uprox_crds::sealed::MasterKey;
use uprox_crds::secret::SecretString;
use uprox_crds::{Compiled, MachineToken, MachineTokenSpec, token};
use uprox_operator::outputs::{Outputs, ensure_master_key};
use uprox_operator::status_writer;
use uprox_operator::tokens::{Issue, issue};

/// One request as the mock API server saw it.
#[derive(Debug, Clone)]
struct Seen {
    method: Method,
    path: String,
    query: String,
    body: Value,
}

/// A scripted reply: status and JSON body.
type Reply = (StatusCode, Value);

/// Starts a client whose every request is answered from `replies`, in order, and returns the
/// requests it received once the scenario ends. A request beyond the script fails the test.
async fn scenario<F, Fut>(replies: Vec<Reply>, run: F) -> Vec<Seen>
where
    F: FnOnce(Client) -> Fut,
    Fut: std::future::Future<Output = ()>,
{
    let (service, mut handle) = tower_test::mock::pair::<Request<Body>, Response<Body>>();
    let client = Client::new(service, "default");
    let server = tokio::spawn(async move {
        let mut replies = VecDeque::from(replies);
        let mut seen = Vec::new();
        while let Some((request, send)) = handle.next_request().await {
            let (parts, body) = request.into_parts();
            let bytes = body.collect_bytes().await.unwrap();
            let body = if bytes.is_empty() { Value::Null } else { serde_json::from_slice(&bytes).unwrap() };
            seen.push(Seen {
                method: parts.method.clone(),
                path: parts.uri.path().to_owned(),
                query: parts.uri.query().unwrap_or_default().to_owned(),
                body,
            });
            let Some((status, reply)) = replies.pop_front() else {
                panic!("unexpected request {} {}", parts.method, parts.uri);
            };
            let response =
                Response::builder().status(status).body(Body::from(serde_json::to_vec(&reply).unwrap())).unwrap();
            send.send_response(response);
        }
        assert!(replies.is_empty(), "the scenario ended with {} scripted replies unused", replies.len());
        seen
    });
    run(client).await;
    // Dropping the client (moved into `run`) closes the channel and ends the server loop.
    tokio::time::timeout(std::time::Duration::from_secs(5), server).await.unwrap().unwrap()
}

fn not_found() -> Reply {
    (
        StatusCode::NOT_FOUND,
        json!({"kind": "Status", "apiVersion": "v1", "status": "Failure", "reason": "NotFound", "code": 404, "message": "not found"}),
    )
}

fn conflict() -> Reply {
    (
        StatusCode::CONFLICT,
        json!({"kind": "Status", "apiVersion": "v1", "status": "Failure", "reason": "AlreadyExists", "code": 409, "message": "exists"}),
    )
}

fn ok(body: Value) -> Reply {
    (StatusCode::OK, body)
}

fn machine_token(rotation: u32) -> MachineToken {
    let mut mt = MachineToken::new("app", MachineTokenSpec { service: "svc".into(), rotation, ..Default::default() });
    mt.metadata.namespace = Some("team".into());
    mt.metadata.uid = Some("uid-1".into());
    mt
}

fn secret_json(name: &str) -> Value {
    json!({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": name, "namespace": "team", "resourceVersion": "7"}})
}

#[tokio::test]
async fn a_new_token_is_created_once_owned_by_its_machine_token() {
    let mt = machine_token(0);
    let seen = scenario(vec![(StatusCode::CREATED, secret_json("app-token"))], |client| async move {
        let outcome = issue(&client, &mt, None, "2026-11-27T00:00:00Z").await.unwrap();
        assert!(matches!(outcome, Issue::Issued { .. }));
    })
    .await;
    assert_eq!(seen.len(), 1);
    let call = &seen[0];
    assert_eq!(call.method, Method::POST);
    assert_eq!(call.path, "/api/v1/namespaces/team/secrets");
    let body = &call.body;
    assert_eq!(body["metadata"]["name"], "app-token");
    assert_eq!(body["metadata"]["labels"][token::SECRET_LABEL], "app");
    assert_eq!(body["metadata"]["annotations"][token::ROTATION_ANNOTATION], "0");
    assert_eq!(body["metadata"]["ownerReferences"][0]["uid"], "uid-1");
    assert_eq!(body["metadata"]["ownerReferences"][0]["kind"], "MachineToken");
    assert!(token::is_well_formed(body["stringData"]["token"].as_str().unwrap()));
}

#[tokio::test]
async fn a_current_or_foreign_secret_is_left_alone() {
    let mt = machine_token(0);
    let current = mt.issued_secret("uprox_live_x", "t");
    let mut foreign = Secret::default();
    foreign.metadata.name = Some("app-token".into());
    let seen = scenario(Vec::new(), |client| async move {
        assert_eq!(issue(&client, &mt, Some(&current), "t").await.unwrap(), Issue::Unchanged);
        assert_eq!(issue(&client, &mt, Some(&foreign), "t").await.unwrap(), Issue::Unchanged);
        let mut revoked = mt.clone();
        revoked.spec.revoked = true;
        assert_eq!(issue(&client, &revoked, None, "t").await.unwrap(), Issue::Unchanged);
    })
    .await;
    assert!(seen.is_empty(), "{seen:?}");
}

#[tokio::test]
async fn rotation_replaces_the_secret_with_a_precondition() {
    let old = machine_token(0).issued_secret("uprox_live_old", "t");
    let mut stored = old.clone();
    stored.metadata.resource_version = Some("41".into());
    let mt = machine_token(1);
    let seen = scenario(vec![ok(secret_json("app-token"))], |client| async move {
        let outcome = issue(&client, &mt, Some(&stored), "t").await.unwrap();
        assert!(matches!(outcome, Issue::Rotated { .. }));
    })
    .await;
    assert_eq!(seen[0].method, Method::PUT);
    assert_eq!(seen[0].path, "/api/v1/namespaces/team/secrets/app-token");
    assert_eq!(seen[0].body["metadata"]["resourceVersion"], "41");
    assert_eq!(seen[0].body["metadata"]["annotations"][token::ROTATION_ANNOTATION], "1");
    assert_ne!(seen[0].body["stringData"]["token"], "uprox_live_old");
}

#[tokio::test]
async fn a_lost_create_race_is_not_an_error() {
    let mt = machine_token(0);
    scenario(vec![conflict()], |client| async move {
        assert_eq!(issue(&client, &mt, None, "t").await.unwrap(), Issue::Unchanged);
    })
    .await;
}

#[tokio::test]
async fn the_master_key_is_created_when_absent_and_never_overwritten() {
    // Absent: one GET, one POST with a fresh 32-byte key.
    let seen =
        scenario(vec![not_found(), (StatusCode::CREATED, secret_json("uprox-master-key"))], |client| async move {
            let secrets: Api<Secret> = Api::namespaced(client, "uprox-system");
            ensure_master_key(&secrets, "uprox-system").await.unwrap();
        })
        .await;
    assert_eq!((seen[0].method.clone(), seen[1].method.clone()), (Method::GET, Method::POST));
    assert_eq!(seen[1].path, "/api/v1/namespaces/uprox-system/secrets");
    let encoded = seen[1].body["data"][cluster::MASTER_KEY_KEY].as_str().unwrap();
    let decoded: ByteString = serde_json::from_value(json!(encoded)).unwrap();
    MasterKey::from_base64(std::str::from_utf8(&decoded.0).unwrap()).unwrap();

    // Present: read, never written.
    let existing =
        serde_json::to_value(cluster::master_key_secret("uprox-system", &MasterKey::from_bytes([5; 32]))).unwrap();
    let seen = scenario(vec![ok(existing.clone())], |client| async move {
        let secrets: Api<Secret> = Api::namespaced(client, "uprox-system");
        assert_eq!(ensure_master_key(&secrets, "uprox-system").await.unwrap(), MasterKey::from_bytes([5; 32]));
    })
    .await;
    assert_eq!(seen.len(), 1);

    // Lost a race with another replica: its key is read back and used.
    let seen = scenario(vec![not_found(), conflict(), ok(existing)], |client| async move {
        let secrets: Api<Secret> = Api::namespaced(client, "uprox-system");
        assert_eq!(ensure_master_key(&secrets, "uprox-system").await.unwrap(), MasterKey::from_bytes([5; 32]));
    })
    .await;
    assert_eq!(seen.iter().map(|s| s.method.clone()).collect::<Vec<_>>(), [Method::GET, Method::POST, Method::GET]);
}

fn compiled_with_key(value: &str) -> Compiled {
    let mut compiled = Compiled::default();
    compiled.config.version = uprox_crds::config::CONFIG_VERSION;
    compiled.keys = KeyMaterial([("team/openai/main".to_owned(), SecretString::new(value))].into());
    compiled
}

#[tokio::test]
async fn outputs_are_applied_parts_then_keys_then_manifest_and_only_when_changed() {
    let master = serde_json::to_value(cluster::master_key_secret("gw", &MasterKey::from_bytes([1; 32]))).unwrap();
    let list = json!({"apiVersion": "v1", "kind": "ConfigMapList", "metadata": {}, "items": []});
    let opening = vec![ok(master.clone()), not_found(), not_found(), ok(list)];
    let applied = |kind: &str, name: &str| ok(json!({"apiVersion": "v1", "kind": kind, "metadata": {"name": name}}));
    let mut replies = opening;
    // Every write reads the master key first.
    replies.push(ok(master.clone()));
    replies.push(applied("ConfigMap", "uprox-config-0"));
    replies.push(applied("Secret", cluster::KEYS_SECRET));
    replies.push(applied("ConfigMap", cluster::CONFIG_NAME));
    // Second write, nothing changed: only the master key is read.
    replies.push(ok(master.clone()));
    // Third write, new key value: only the sealed keys.
    replies.push(ok(master.clone()));
    replies.push(applied("Secret", cluster::KEYS_SECRET));
    // Fourth write, the master key was deleted (rotation): a new one, the keys sealed anew.
    replies.push(not_found());
    replies.push((StatusCode::CREATED, secret_json("uprox-master-key")));
    replies.push(applied("Secret", cluster::KEYS_SECRET));
    let seen = scenario(replies, |client| async move {
        let mut outputs = Outputs::open(client, "gw").await.unwrap();
        let first = outputs.write(&compiled_with_key("sk-1")).await.unwrap();
        assert!(first.config_changed && first.keys_changed);
        let same = outputs.write(&compiled_with_key("sk-1")).await.unwrap();
        assert!(!same.config_changed && !same.keys_changed, "an unchanged config must not be rewritten");
        let rotated = outputs.write(&compiled_with_key("sk-2")).await.unwrap();
        assert!(!rotated.config_changed && rotated.keys_changed);
        let new_master = outputs.write(&compiled_with_key("sk-2")).await.unwrap();
        assert!(!new_master.config_changed && new_master.keys_changed, "a new master key re-seals the keys");
    })
    .await;
    let writes: Vec<&Seen> = seen.iter().filter(|s| s.method == Method::PATCH).collect();
    let paths: Vec<&str> = writes.iter().map(|s| s.path.as_str()).collect();
    assert_eq!(
        paths,
        [
            "/api/v1/namespaces/gw/configmaps/uprox-config-0",
            "/api/v1/namespaces/gw/secrets/uprox-provider-keys",
            "/api/v1/namespaces/gw/configmaps/uprox-config",
            "/api/v1/namespaces/gw/secrets/uprox-provider-keys",
            "/api/v1/namespaces/gw/secrets/uprox-provider-keys",
        ]
    );
    for write in &writes {
        assert!(write.query.contains(&format!("fieldManager={FIELD_MANAGER}")), "{}", write.query);
        assert!(write.query.contains("force=true"), "{}", write.query);
    }
    let keys_text = writes[1].body.to_string();
    assert!(!keys_text.contains("sk-1"), "provider keys must be sealed");
    assert_ne!(writes[1].body["data"], writes[3].body["data"]);
}

#[tokio::test]
async fn a_status_is_applied_to_the_status_subresource() {
    let mt = machine_token(0);
    let desired = uprox_crds::MachineTokenStatus { observed_generation: Some(4), ..Default::default() };
    let seen = scenario(vec![ok(json!({"apiVersion": "uprox.dev/v1alpha1", "kind": "MachineToken", "metadata": {"name": "app"}, "spec": {"service": "svc"}}))], |client| async move {
        assert!(status_writer::needs_write(&mt, &desired));
        status_writer::write(&client, None, &mt, &desired).await.unwrap();
    })
    .await;
    assert_eq!(seen[0].method, Method::PATCH);
    assert_eq!(seen[0].path, "/apis/uprox.dev/v1alpha1/namespaces/team/machinetokens/app/status");
    assert!(seen[0].query.contains("fieldManager=uprox-operator"));
    assert_eq!(seen[0].body["status"]["observedGeneration"], 4);
    assert_eq!(seen[0].body["kind"], "MachineToken");
    assert!(seen[0].body.get("spec").is_none(), "a status write must not carry the spec");
}

#[tokio::test]
async fn missing_crds_are_named_with_the_command_that_installs_them() {
    let empty = json!({"apiVersion": "v1", "kind": "List", "metadata": {}, "items": []});
    // Provider and Budget installed; Service, MachineToken and Policy missing.
    let replies = vec![ok(empty.clone()), not_found(), not_found(), not_found(), ok(empty)];
    let seen = scenario(replies, |client| async move {
        let err = uprox_operator::preflight::check(&client, None).await.unwrap_err().to_string();
        assert!(err.contains("services.uprox.dev, machinetokens.uprox.dev, policies.uprox.dev"), "{err}");
        assert!(err.contains("kubectl apply -f crds/"), "{err}");
    })
    .await;
    assert_eq!(seen[0].path, "/apis/uprox.dev/v1alpha1/providers");
    assert!(seen[0].query.contains("limit=1"));
}
