//! Leader election against the in-memory API server: of two replicas one leads, and the other
//! takes over as soon as the first releases the Lease on shutdown.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Duration;

use uprox_operator::leader::{Election, LeaseSettings};
use uprox_testkit::apiserver::FakeApiServer;

fn settings(identity: &str) -> LeaseSettings {
    LeaseSettings {
        name: "uprox-operator".into(),
        namespace: "uprox-system".into(),
        identity: identity.into(),
        duration_seconds: 5,
        grace_seconds: 2,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_replica_leads_and_the_other_takes_over_on_release() {
    let api = FakeApiServer::start().await;
    let mut first = Election::start(api.client(), &settings("replica-a")).await.unwrap();
    assert!(tokio::time::timeout(Duration::from_secs(10), first.acquired()).await.unwrap());

    let mut second = Election::start(api.client(), &settings("replica-b")).await.unwrap();
    let waiting = tokio::time::timeout(Duration::from_millis(1500), second.acquired()).await;
    assert!(waiting.is_err(), "a second replica must not lead while the first holds the Lease");

    let lease: k8s_openapi::api::coordination::v1::Lease = api.get(Some("uprox-system"), "uprox-operator").unwrap();
    assert_eq!(lease.spec.unwrap().holder_identity.as_deref(), Some("replica-a"));

    first.release().await;
    assert!(tokio::time::timeout(Duration::from_secs(15), second.acquired()).await.unwrap());
    second.release().await;
}
