//! Cluster mode end to end against an in-memory Kubernetes API server: the compiled objects are
//! written the way the operator writes them (parts, keys, manifest), and the gateway's watch
//! turns them into what it serves — a first config, a revoked token, a half-written update it
//! must ignore, and a rotated provider key.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::time::{Duration, Instant};

use common::{Harness, PROVIDER_KEY, TOKEN, TOKEN2, Upstream};
use k8s_openapi::api::core::v1::ConfigMap;
use uprox_crds::cluster::{config_maps, keys_fingerprint, keys_secret, master_key_secret};
use uprox_crds::compile::{Compiled, compile};
use uprox_crds::sealed::{MasterKey, seal_keys};
use uprox_gateway::app::{Gateway, Settings};
use uprox_gateway::cluster;
use uprox_gateway::standalone::manifests::{Manifests, load_text};
use uprox_testkit::apiserver::FakeApiServer;

const NS: &str = "uprox-system";
/// Small parts, so every config spans several ConfigMaps.
const MAX_PART: usize = 400;
/// How long any change may take to show (generous: CI machines are slow).
const WITHIN: Duration = Duration::from_secs(10);

/// An openai-compatible Provider at `base_url` with `key`, a Service, and a MachineToken for
/// each of `tokens` (`app` holds [`TOKEN`], `app2` holds [`TOKEN2`]).
fn compiled(base_url: &str, key: &str, tokens: &[&str]) -> Compiled {
    let mut yaml = common::upstream_provider(base_url, key, r#"["gpt-*"]"#, "")
        + r#"---
apiVersion: uprox.dev/v1alpha1
kind: Service
metadata: {name: app, namespace: team}
spec: {}
"#;
    for name in tokens {
        let value = if *name == "app" { TOKEN } else { TOKEN2 };
        yaml.push_str(&format!(
            r#"
---
apiVersion: uprox.dev/v1alpha1
kind: MachineToken
metadata: {{name: {name}, namespace: team}}
spec: {{service: app, secretName: {name}-token}}
---
apiVersion: v1
kind: Secret
metadata:
  name: {name}-token
  namespace: team
  labels: {{uprox.dev/machine-token: {name}}}
  annotations: {{uprox.dev/rotation: "0"}}
stringData: {{token: "{value}"}}
"#
        ));
    }
    let mut manifests = Manifests::default();
    let mut errors = Vec::new();
    load_text("test", &yaml, &mut manifests, &mut errors);
    assert!(errors.is_empty(), "{errors:?}");
    let compiled = compile(&manifests.resources.inputs());
    assert!(!compiled.has_errors(), "{:?}", compiled.diagnostics);
    compiled
}

/// The manifest and the parts of a config.
fn config_objects(compiled: &Compiled) -> (ConfigMap, Vec<ConfigMap>) {
    let json = serde_json::to_vec(&compiled.config).unwrap();
    config_maps(NS, &json, MAX_PART)
}

/// Writes what the operator writes for `compiled`, in its order: parts, sealed keys, manifest.
/// Returns when the manifest is written.
fn publish(api: &FakeApiServer, master: &MasterKey, compiled: &Compiled) -> Instant {
    let (manifest, parts) = config_objects(compiled);
    for part in &parts {
        api.put(part);
    }
    let sealed = seal_keys(master, &compiled.keys, || {
        let mut nonce = [0u8; 12];
        getrandom::fill(&mut nonce).unwrap();
        nonce
    })
    .unwrap();
    api.put(&keys_secret(NS, &sealed, &keys_fingerprint(master, &compiled.keys)));
    api.put(&manifest);
    Instant::now()
}

async fn chat_status(h: &Harness, token: &str) -> u16 {
    let body = r#"{"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "hi"}]}"#;
    h.post("/v1/chat/completions", Some(token), body).await.status().as_u16()
}

/// Polls until `token` gets `status`; returns how long after `since` that was first seen.
async fn until_status(h: &Harness, token: &str, status: u16, since: Instant) -> Duration {
    let deadline = Instant::now() + WITHIN;
    loop {
        if chat_status(h, token).await == status {
            return since.elapsed();
        }
        assert!(Instant::now() < deadline, "the token did not get {status} within {WITHIN:?}");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

#[tokio::test]
async fn the_gateway_serves_what_the_operator_writes() {
    let _ = tracing_subscriber::fmt()
        .with_env_filter("uprox_gateway=info,uprox_gateway::cluster=debug")
        .with_test_writer()
        .try_init();
    let upstream = Upstream::openai_like().await;
    let base = upstream.base_url();
    let api = FakeApiServer::start().await;
    let master = MasterKey::from_bytes([9; 32]);
    api.put(&master_key_secret(NS, &master));
    publish(&api, &master, &compiled(&base, PROVIDER_KEY, &["app"]));

    let gateway = Gateway::new(Settings::default());
    let watch = tokio::spawn(cluster::watch(gateway.clone(), api.client(), NS.to_owned()));
    let started = Instant::now();
    let h = Harness::serve(gateway, watch, tempfile::tempdir().unwrap()).await;

    // Ready once the first consistent set is installed.
    let ready = common::eventually(Duration::from_secs(5), || async {
        h.client.get(h.url("/readyz")).send().await.unwrap().status() == 200
    })
    .await;
    assert!(ready, "not ready within 5 s");
    eprintln!("cluster mode: ready {:?} after start", started.elapsed());
    assert_eq!(chat_status(&h, TOKEN).await, 200);
    assert_eq!(
        upstream.seen.lock().unwrap().last().unwrap().authorization.as_deref(),
        Some(&*format!("Bearer {PROVIDER_KEY}"))
    );
    assert_eq!(chat_status(&h, TOKEN2).await, 401);

    // The token is deleted (another one added): it fails within moments.
    let written = publish(&api, &master, &compiled(&base, PROVIDER_KEY, &["app2"]));
    let took = until_status(&h, TOKEN, 401, written).await;
    eprintln!("cluster mode: token removal took effect {took:?} after the manifest was written");
    assert_eq!(chat_status(&h, TOKEN2).await, 200);

    // A half-written update (its manifest is there, one of its parts is not): ignored.
    let broken = compiled(&base, PROVIDER_KEY, &["app"]);
    let (manifest, parts) = config_objects(&broken);
    assert!(parts.len() > 1);
    assert!(api.remove::<ConfigMap>(Some(NS), parts[0].metadata.name.as_deref().unwrap()));
    api.put(&manifest);
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(chat_status(&h, TOKEN2).await, 200, "the last good config keeps serving");
    assert_eq!(chat_status(&h, TOKEN).await, 401);
    assert_eq!(h.client.get(h.url("/readyz")).send().await.unwrap().status(), 200);

    // The provider key is rotated: the same config, a new sealed value.
    let rotated = "sk-rotated-provider-key-9876543210";
    let written = publish(&api, &master, &compiled(&base, rotated, &["app2"]));
    let deadline = Instant::now() + WITHIN;
    let took = loop {
        assert_eq!(chat_status(&h, TOKEN2).await, 200);
        let seen = upstream.seen.lock().unwrap().last().unwrap().authorization.clone();
        if seen.as_deref() == Some(&*format!("Bearer {rotated}")) {
            break written.elapsed();
        }
        assert!(Instant::now() < deadline, "the rotated key was not used within {WITHIN:?}");
        tokio::time::sleep(Duration::from_millis(5)).await;
    };
    eprintln!("cluster mode: key rotation took effect {took:?} after the manifest was written");

    // The watches expire (as after an etcd compaction) and re-list; changes keep flowing.
    api.expire_watches();
    let written = publish(&api, &master, &compiled(&base, rotated, &["app", "app2"]));
    let took = until_status(&h, TOKEN, 200, written).await;
    eprintln!("cluster mode: a change across a re-list took effect {took:?} after the manifest was written");
    assert_eq!(chat_status(&h, TOKEN2).await, 200);
}

#[tokio::test]
async fn without_a_config_the_gateway_waits_unready() {
    let upstream = Upstream::openai_like().await;
    let api = FakeApiServer::start().await;
    let gateway = Gateway::new(Settings::default());
    let watch = tokio::spawn(cluster::watch(gateway.clone(), api.client(), NS.to_owned()));
    let h = Harness::serve(gateway, watch, tempfile::tempdir().unwrap()).await;

    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(h.client.get(h.url("/readyz")).send().await.unwrap().status(), 503);
    assert_eq!(chat_status(&h, TOKEN).await, 503);

    // Objects of another namespace, or without the label, are not the config.
    let master = MasterKey::from_bytes([5; 32]);
    let config = compiled(&upstream.base_url(), PROVIDER_KEY, &["app"]);
    let (mut manifest, _) = config_objects(&config);
    let mut unlabelled = manifest.clone();
    manifest.metadata.namespace = Some("elsewhere".to_owned());
    api.put(&manifest);
    unlabelled.metadata.labels = None;
    api.put(&unlabelled);
    let (_, parts) = config_objects(&config);
    for part in &parts {
        api.put(part);
    }
    api.put(&master_key_secret(NS, &master));
    let keys = seal_keys(&master, &config.keys, || [1; 12]).unwrap();
    api.put(&keys_secret(NS, &keys, "fingerprint"));
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert!(!h.gateway.is_ready(), "the manifest is not labelled or in another namespace");

    publish(&api, &master, &config);
    let ready = common::eventually(Duration::from_secs(5), || async {
        h.client.get(h.url("/readyz")).send().await.unwrap().status() == 200
    })
    .await;
    assert!(ready, "not ready within 5 s of the operator writing the config");
    assert_eq!(chat_status(&h, TOKEN).await, 200);
}
