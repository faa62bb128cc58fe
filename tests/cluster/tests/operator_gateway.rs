//! The operator and a cluster-mode gateway against one API server: a MachineToken becomes a
//! working credential, revoking or deleting it takes effect, a Provider-key Secret change
//! reaches the upstream without touching the Provider, and statuses and Events say what
//! happened. Times are printed (the figures in the README), never asserted beyond generous
//! timeouts: these machines are shared.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::print_stdout)]

use std::time::Duration;

use http::StatusCode;
use k8s_openapi::api::core::v1::{ConfigMap, Secret};
use uprox_cluster_tests::{Cluster, GATEWAY_NAMESPACE, Upstream};
use uprox_crds::{MachineToken, Provider, cluster};

const TIMEOUT: Duration = Duration::from_secs(20);

const TEAM: &str = r#"
apiVersion: uprox.dev/v1alpha1
kind: Provider
metadata: {name: mock, namespace: team}
spec: {type: mock, models: ["mock-*"]}
---
apiVersion: uprox.dev/v1alpha1
kind: Policy
metadata: {name: chat, namespace: team}
spec: {scopes: [chat], models: ["mock-*", "gpt-*"]}
---
apiVersion: uprox.dev/v1alpha1
kind: Service
metadata: {name: app, namespace: team}
spec: {policies: [chat]}
---
apiVersion: uprox.dev/v1alpha1
kind: MachineToken
metadata: {name: app, namespace: team}
spec: {service: app}
"#;

fn condition(status: &serde_json::Value, type_: &str) -> Option<(String, String, String)> {
    let c = status["conditions"].as_array()?.iter().find(|c| c["type"] == type_)?;
    Some((
        c["status"].as_str()?.to_owned(),
        c["reason"].as_str()?.to_owned(),
        c["message"].as_str().unwrap_or_default().to_owned(),
    ))
}

async fn issued_token(cluster: &Cluster) -> String {
    let (token, took) =
        Cluster::eventually("the token Secret", TIMEOUT, || async { cluster.token("team", "app-token") }).await;
    println!("MachineToken created → token Secret written: {took:?}");
    token
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_machine_token_works_until_revoked_or_deleted() {
    let cluster = Cluster::start().await;
    cluster.apply_yaml(TEAM);
    let token = issued_token(&cluster).await;
    assert!(uprox_crds::token::is_well_formed(&token));

    let took = cluster.until_status(&token, "mock-1", StatusCode::OK, TIMEOUT).await;
    println!("token Secret → accepted by the gateway: {took:?}");

    // The owner reference ties the Secret to the MachineToken.
    let secret: Secret = cluster.api.get(Some("team"), "app-token").unwrap();
    let owner = &secret.metadata.owner_references.unwrap()[0];
    assert_eq!((owner.kind.as_str(), owner.name.as_str()), ("MachineToken", "app"));

    // Status: Ready, Issued, the display form, never the token.
    let (status, _) = Cluster::eventually("MachineToken Ready", TIMEOUT, || async {
        let mt: MachineToken = cluster.api.get(Some("team"), "app")?;
        let status = serde_json::to_value(mt.status?).ok()?;
        (condition(&status, "Ready")?.0 == "True").then_some(status)
    })
    .await;
    assert_eq!(condition(&status, "Issued").unwrap().0, "True");
    assert!(status["display"].as_str().unwrap().starts_with("uprox_live_"));
    assert!(!status.to_string().contains(&token), "a status must never carry the token");

    // The compiled config holds the digest, never the token.
    let manifest: ConfigMap = cluster.api.get(Some(GATEWAY_NAMESPACE), cluster::CONFIG_NAME).unwrap();
    let parts: Vec<ConfigMap> = cluster.api.list(Some(GATEWAY_NAMESPACE));
    let by_name = parts.into_iter().map(|c| (c.metadata.name.clone().unwrap_or_default(), c)).collect();
    let config = cluster::read_config(&manifest, &by_name).unwrap();
    assert_eq!(config.tokens.len(), 1);
    assert_eq!(config.tokens[0].digest, uprox_crds::token::digest_hex(&token));
    assert!(!serde_json::to_string(&by_name).unwrap().contains(&token));

    // Revoke: 401 within the target, and back.
    let mut mt: MachineToken = cluster.api.get(Some("team"), "app").unwrap();
    mt.spec.revoked = true;
    cluster.api.put(&mt);
    let took = cluster.until_status(&token, "mock-1", StatusCode::UNAUTHORIZED, TIMEOUT).await;
    println!("revoked: true → 401: {took:?}");
    mt.spec.revoked = false;
    cluster.api.put(&mt);
    cluster.until_status(&token, "mock-1", StatusCode::OK, TIMEOUT).await;

    // Delete: 401, and the Secret goes with its owner.
    assert!(cluster.api.remove::<MachineToken>(Some("team"), "app"));
    let took = cluster.until_status(&token, "mock-1", StatusCode::UNAUTHORIZED, TIMEOUT).await;
    println!("MachineToken deleted → 401: {took:?}");
    assert!(cluster.api.get::<Secret>(Some("team"), "app-token").is_none());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rotation_issues_a_new_token_and_retires_the_old_one() {
    let cluster = Cluster::start().await;
    cluster.apply_yaml(TEAM);
    let old = issued_token(&cluster).await;
    cluster.until_status(&old, "mock-1", StatusCode::OK, TIMEOUT).await;

    let mut mt: MachineToken = cluster.api.get(Some("team"), "app").unwrap();
    mt.spec.rotation = 1;
    cluster.api.put(&mt);
    let (new, took) = Cluster::eventually("a rotated token", TIMEOUT, || async {
        cluster.token("team", "app-token").filter(|t| *t != old)
    })
    .await;
    println!("rotation → new token written: {took:?}");
    cluster.until_status(&new, "mock-1", StatusCode::OK, TIMEOUT).await;
    cluster.until_status(&old, "mock-1", StatusCode::UNAUTHORIZED, TIMEOUT).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn provider_keys_follow_their_secret_and_the_status_says_why() {
    let upstream = Upstream::start().await;
    let cluster = Cluster::start().await;
    cluster.apply_yaml(TEAM);
    cluster.apply_yaml(&format!(
        r#"
apiVersion: uprox.dev/v1alpha1
kind: Provider
metadata: {{name: openai, namespace: team}}
spec:
  type: openai
  baseUrl: http://{}/v1
  models: ["gpt-*"]
  keys:
    - {{label: main, secretRef: {{name: openai-key, key: apiKey}}}}
"#,
        upstream.addr
    ));
    let token = issued_token(&cluster).await;

    // The Secret is missing: the Provider says so, by name.
    let (message, _) = Cluster::eventually("Provider KeysResolved=False", TIMEOUT, || async {
        let p: Provider = cluster.api.get(Some("team"), "openai")?;
        let status = serde_json::to_value(p.status?).ok()?;
        let (s, reason, message) = condition(&status, "KeysResolved")?;
        (s == "False" && reason == "SecretNotFound").then_some(message)
    })
    .await;
    assert!(message.contains("openai-key"), "{message}");

    // Create it: the key reaches the upstream without touching the Provider.
    cluster.apply_yaml(
        "apiVersion: v1\nkind: Secret\nmetadata: {name: openai-key, namespace: team}\ndata: {apiKey: c2stb25l}\n",
    );
    let took = cluster.until_status(&token, "gpt-4o", StatusCode::OK, TIMEOUT).await;
    println!("provider-key Secret created → served: {took:?}");
    assert_eq!(upstream.last_authorization().as_deref(), Some("Bearer sk-one"));

    // Rotate it.
    cluster.apply_yaml(
        "apiVersion: v1\nkind: Secret\nmetadata: {name: openai-key, namespace: team}\ndata: {apiKey: c2stdHdv}\n",
    );
    let started = std::time::Instant::now();
    Cluster::eventually("the rotated key upstream", TIMEOUT, || async {
        let (status, _) = cluster.chat(&token, "gpt-4o").await;
        (status == StatusCode::OK && upstream.last_authorization().as_deref() == Some("Bearer sk-two")).then_some(())
    })
    .await;
    println!("provider-key Secret rotated → new key upstream: {:?}", started.elapsed());

    // The sealed Secret never holds the plaintext.
    let sealed: Secret = cluster.api.get(Some(GATEWAY_NAMESPACE), cluster::KEYS_SECRET).unwrap();
    let text = serde_json::to_string(&sealed).unwrap();
    assert!(!text.contains("sk-two") && !text.contains("c2stdHdv"));

    // Ready again, with an Event recorded for the recovery.
    Cluster::eventually("Provider Ready", TIMEOUT, || async {
        let p: Provider = cluster.api.get(Some("team"), "openai")?;
        let status = serde_json::to_value(p.status?).ok()?;
        (condition(&status, "Ready")?.0 == "True" && status["keys"] == 1).then_some(())
    })
    .await;
    let events: Vec<k8s_openapi::api::events::v1::Event> = cluster.api.list(Some("team"));
    let reasons: Vec<&str> = events.iter().filter_map(|e| e.reason.as_deref()).collect();
    assert!(reasons.contains(&"SecretNotFound"), "{reasons:?}");
    assert!(reasons.contains(&"Issued"), "{reasons:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_large_config_is_split_and_still_served() {
    let cluster = Cluster::start_with(2048).await;
    let mut yaml = TEAM.to_owned();
    for i in 0..40 {
        yaml.push_str(&format!(
            "---\napiVersion: uprox.dev/v1alpha1\nkind: Service\nmetadata: {{name: svc-{i}, namespace: team}}\nspec: {{policies: [chat]}}\n"
        ));
    }
    cluster.apply_yaml(&yaml);
    let token = issued_token(&cluster).await;
    cluster.until_status(&token, "mock-1", StatusCode::OK, TIMEOUT).await;
    let parts: Vec<ConfigMap> = cluster.api.list(Some(GATEWAY_NAMESPACE));
    assert!(parts.len() > 3, "expected the config split over several ConfigMaps, got {}", parts.len());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_settled_cluster_writes_nothing() {
    let cluster = Cluster::start().await;
    cluster.apply_yaml(TEAM);
    let token = issued_token(&cluster).await;
    cluster.until_status(&token, "mock-1", StatusCode::OK, TIMEOUT).await;
    // Let the passes that follow issuance settle.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let mut reports = cluster.reports.clone();
    reports.borrow_and_update();
    cluster.api.clear_requests();

    // An unrelated Secret wakes the operator: a full pass that must find nothing to write.
    cluster.apply_yaml("apiVersion: v1\nkind: Secret\nmetadata: {name: unrelated, namespace: team}\n");
    tokio::time::timeout(TIMEOUT, reports.changed()).await.unwrap().unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;
    let writes: Vec<String> = cluster
        .api
        .requests()
        .into_iter()
        .filter(|r| r.method != http::Method::GET)
        .map(|r| format!("{} {}", r.method, r.path))
        .collect();
    assert!(writes.is_empty(), "a pass over an unchanged cluster wrote: {writes:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_operator_limited_to_some_namespaces_leaves_the_others_alone() {
    let cluster = Cluster::start_scoped(usize::MAX, vec!["team".into(), "empty".into()]).await;
    cluster.apply_yaml(TEAM);
    cluster.apply_yaml(&TEAM.replace("namespace: team", "namespace: other"));
    let token = issued_token(&cluster).await;
    cluster.until_status(&token, "mock-1", StatusCode::OK, TIMEOUT).await;
    let manifest: ConfigMap = cluster.api.get(Some(GATEWAY_NAMESPACE), cluster::CONFIG_NAME).unwrap();
    let parts: Vec<ConfigMap> = cluster.api.list(Some(GATEWAY_NAMESPACE));
    let by_name = parts.into_iter().map(|c| (c.metadata.name.clone().unwrap_or_default(), c)).collect();
    let config = cluster::read_config(&manifest, &by_name).unwrap();
    assert!(config.services.iter().all(|s| s.id.namespace == "team"), "{:?}", config.services);
    assert!(cluster.api.get::<Secret>(Some("other"), "app-token").is_none(), "no token issued outside the scope");
    let other: MachineToken = cluster.api.get(Some("other"), "app").unwrap();
    assert!(other.status.is_none(), "no status written outside the scope");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deleting_the_master_key_rotates_it_without_an_outage() {
    let upstream = Upstream::start().await;
    let cluster = Cluster::start().await;
    cluster.apply_yaml(TEAM);
    cluster.apply_yaml(&format!(
        "apiVersion: uprox.dev/v1alpha1\nkind: Provider\nmetadata: {{name: openai, namespace: team}}\n\
         spec: {{type: openai, baseUrl: 'http://{}/v1', models: ['gpt-*'], \
         keys: [{{label: main, secretRef: {{name: openai-key, key: apiKey}}}}]}}\n---\n\
         apiVersion: v1\nkind: Secret\nmetadata: {{name: openai-key, namespace: team}}\ndata: {{apiKey: c2stb25l}}\n",
        upstream.addr
    ));
    let token = issued_token(&cluster).await;
    cluster.until_status(&token, "gpt-4o", StatusCode::OK, TIMEOUT).await;
    let old: Secret = cluster.api.get(Some(GATEWAY_NAMESPACE), cluster::MASTER_KEY_SECRET).unwrap();
    let old_sealed: Secret = cluster.api.get(Some(GATEWAY_NAMESPACE), cluster::KEYS_SECRET).unwrap();

    assert!(cluster.api.remove::<Secret>(Some(GATEWAY_NAMESPACE), cluster::MASTER_KEY_SECRET));
    // Any change wakes the operator; the gateway serves throughout.
    cluster.apply_yaml("apiVersion: v1\nkind: Secret\nmetadata: {name: nudge, namespace: team}\n");
    let (new, took) = Cluster::eventually("a new master key and keys sealed under it", TIMEOUT, || async {
        let new: Secret = cluster.api.get(Some(GATEWAY_NAMESPACE), cluster::MASTER_KEY_SECRET)?;
        let sealed: Secret = cluster.api.get(Some(GATEWAY_NAMESPACE), cluster::KEYS_SECRET)?;
        let key = cluster::read_master_key(&new).ok()?;
        cluster::read_keys(&sealed, &key).ok()?;
        (sealed.data != old_sealed.data).then_some(new)
    })
    .await;
    println!("master key deleted → re-sealed: {took:?}");
    assert_ne!(new.data, old.data);
    assert_eq!(cluster.chat(&token, "gpt-4o").await.0, StatusCode::OK);
    assert_eq!(upstream.last_authorization().as_deref(), Some("Bearer sk-one"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn spend_reaches_the_budget_status_and_a_spent_budget_refuses() {
    let cluster = Cluster::start().await;
    // The mock answers with realistic usage; at $0.10 a token one answer costs more than $1.
    cluster.apply_yaml(&TEAM.replace(
        r#"spec: {type: mock, models: ["mock-*"]}"#,
        r#"spec: {type: mock, models: ["mock-*"], prices: [{model: "mock-*", inputPerMTok: "100000", outputPerMTok: "100000"}]}"#,
    ));
    cluster.apply_yaml(
        r#"
apiVersion: uprox.dev/v1alpha1
kind: Budget
metadata: {name: cap, namespace: team}
spec: {services: [app], dailyUSD: "1"}
"#,
    );
    let token = issued_token(&cluster).await;
    cluster.until_status(&token, "mock-1", StatusCode::OK, TIMEOUT).await;
    let (status, body) = cluster.chat(&token, "mock-1").await;
    assert_eq!(status, StatusCode::PAYMENT_REQUIRED, "{body}");
    assert!(body.contains("insufficient_quota") && body.contains("team/cap"), "{body}");

    // The spend went through the ledger ConfigMap into the Budget's status, with an Event.
    let (message, took) = Cluster::eventually("the Budget to say Exceeded", TIMEOUT, || async {
        let budget: uprox_crds::Budget = cluster.api.get(Some("team"), "cap")?;
        let status = serde_json::to_value(budget.status?).ok()?;
        let (state, _, message) = condition(&status, "Exceeded")?;
        (state == "True").then_some(message)
    })
    .await;
    println!("spend → Budget status Exceeded: {took:?}");
    assert!(message.contains("daily") && message.contains("402"), "{message}");
    let ledger: ConfigMap = cluster.api.get(Some(GATEWAY_NAMESPACE), uprox_crds::usage::LEDGER_NAME).unwrap();
    let ledger = uprox_crds::usage::Ledger::from_config_map(&ledger).unwrap();
    assert_eq!(ledger.services["team/app"].day_requests, 1, "one answer was costed; the refusal costs nothing");
    // The Event follows the status write.
    Cluster::eventually("a BudgetExceeded Event", TIMEOUT, || async {
        let events: Vec<k8s_openapi::api::events::v1::Event> = cluster.api.list(Some("team"));
        events.iter().any(|e| e.reason.as_deref() == Some("BudgetExceeded")).then_some(())
    })
    .await;
}
