//! The scale check of the operator and the cluster-mode gateway (a bench, not a test):
//! 1,000 Services and 10,000 MachineTokens are created in the in-memory API server; the
//! operator issues every token, compiles, writes the config, and the gateway loads it. Prints
//! the issue and compile times, the config size, and change-to-effect times for a revocation
//! and a Policy change at that size.
//!
//!     make bench-scale        (SCALE_SERVICES, SCALE_TOKENS to change the size)

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::print_stdout)]

use std::time::{Duration, Instant};

use http::StatusCode;
use k8s_openapi::api::core::v1::{ConfigMap, Secret};
use uprox_cluster_tests::{Cluster, GATEWAY_NAMESPACE};
use uprox_crds::{MachineToken, MachineTokenSpec, Policy, Service, ServiceSpec};

const TIMEOUT: Duration = Duration::from_secs(600);

fn env(name: &str, default: usize) -> usize {
    std::env::var(name).ok().and_then(|v| v.parse().ok()).unwrap_or(default)
}

fn main() {
    let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
    runtime.block_on(run(env("SCALE_SERVICES", 1_000), env("SCALE_TOKENS", 10_000)));
}

async fn run(services: usize, tokens: usize) {
    let cluster = Cluster::start().await;
    cluster.apply_yaml(
        r#"
apiVersion: uprox.dev/v1alpha1
kind: Provider
metadata: {name: mock, namespace: team}
spec: {type: mock, models: ["mock-*"]}
---
apiVersion: uprox.dev/v1alpha1
kind: Policy
metadata: {name: chat, namespace: team}
spec: {scopes: [chat], models: ["mock-*"]}
"#,
    );
    let started = Instant::now();
    for i in 0..services {
        let mut s =
            Service::new(&format!("svc-{i}"), ServiceSpec { policies: vec!["chat".into()], ..Default::default() });
        s.metadata.namespace = Some("team".into());
        cluster.api.put(&s);
    }
    for i in 0..tokens {
        let spec = MachineTokenSpec { service: format!("svc-{}", i % services), ..Default::default() };
        let mut t = MachineToken::new(&format!("tok-{i}"), spec);
        t.metadata.namespace = Some("team".into());
        cluster.api.put(&t);
    }
    let created = started.elapsed();

    let (_, issued) = Cluster::eventually("every token issued", TIMEOUT, || async {
        (cluster.api.list::<Secret>(Some("team")).len() >= tokens).then_some(())
    })
    .await;
    let mut reports = cluster.reports.clone();
    let (report, compiled) = Cluster::eventually("every token compiled", TIMEOUT, || {
        let report = reports.borrow_and_update().clone();
        async move { report.filter(|r| r.tokens == tokens && r.written.config_changed) }
    })
    .await;
    let last = cluster.token("team", &format!("tok-{}-token", tokens - 1)).unwrap();
    let (_, served) = Cluster::eventually("the gateway accepts the last token", TIMEOUT, || async {
        (cluster.chat(&last, "mock-1").await.0 == StatusCode::OK).then_some(())
    })
    .await;
    let parts = cluster.api.list::<ConfigMap>(Some(GATEWAY_NAMESPACE)).len() - 1;

    // Revocations at full size: the median of five.
    let mut revocations = Vec::new();
    for i in 0..5 {
        let token = cluster.token("team", &format!("tok-{i}-token")).unwrap();
        cluster.until_status(&token, "mock-1", StatusCode::OK, TIMEOUT).await;
        let mut mt: MachineToken = cluster.api.get(Some("team"), &format!("tok-{i}")).unwrap();
        mt.spec.revoked = true;
        cluster.api.put(&mt);
        revocations.push(cluster.until_status(&token, "mock-1", StatusCode::UNAUTHORIZED, TIMEOUT).await);
    }
    revocations.sort();

    let phases = cluster.reports.borrow().as_ref().map(|r| r.phases).unwrap_or_default();
    // A Policy change at full size.
    let mut policy: Policy = cluster.api.get(Some("team"), "chat").unwrap();
    policy.spec.models = vec![uprox_crds::common::Pattern::new("gpt-*")];
    cluster.api.put(&policy);
    let policy_change = cluster.until_status(&last, "mock-1", StatusCode::FORBIDDEN, TIMEOUT).await;

    println!(
        "scale: {services} Services, {tokens} MachineTokens (operator and gateway in one process, in-memory API server)"
    );
    println!("| step | result |");
    println!("| --- | --- |");
    println!("| create {} objects in the API server | {:.2} s |", services + tokens, created.as_secs_f64());
    println!("| every token issued into its Secret | {:.2} s |", issued.as_secs_f64());
    println!("| compiled with every token | {:.2} s after the last token was issued |", compiled.as_secs_f64());
    println!("| compile() at full size | {:.1} ms |", report.compile_time.as_secs_f64() * 1e3);
    println!("| compiled config | {} bytes in {parts} ConfigMap part(s) |", report.written.config_bytes);
    println!("| gateway accepts the last token | {:.2} s later |", served.as_secs_f64());
    println!(
        "| revoked → 401 (5 runs) | median {:.0} ms, max {:.0} ms |",
        revocations[2].as_secs_f64() * 1e3,
        revocations[4].as_secs_f64() * 1e3
    );
    println!("| Policy change → 403 | {:.0} ms |", policy_change.as_secs_f64() * 1e3);
    let ms = |d: Duration| d.as_secs_f64() * 1e3;
    println!(
        "| the operator's last pass | read {:.0} ms, compile {:.0} ms, write config {:.0} ms, issue {:.0} ms, statuses {:.0} ms |",
        ms(phases[0]),
        ms(phases[1]),
        ms(phases[2]),
        ms(phases[3]),
        ms(phases[4])
    );
}
