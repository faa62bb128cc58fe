//! How many gateway replicas share the rate limits: the ready endpoints of the gateway's own
//! Kubernetes Service, counted from its EndpointSlices (`kubernetes.io/service-name=NAME` in the
//! gateway's namespace) and handed to [`Registry::set_replicas`](crate::limits::Registry).
//!
//! An endpoint counts when its `ready` condition is not `false` (unset means ready, as the API
//! documents). One pod listed in two slices (dual-stack: one slice per address family) counts
//! once, by its `targetRef` (else its first address). Zero ready endpoints — this pod not ready
//! yet, or the slices not listed — counts as 1: a replica never enforces more than the whole
//! limit. Watch errors are retried with kube's default backoff; the last count stays meanwhile.

use std::collections::{BTreeMap, BTreeSet};
use std::pin::pin;
use std::sync::Arc;

use futures_util::StreamExt as _;
use k8s_openapi::api::discovery::v1::EndpointSlice;
use kube::runtime::watcher::{self, Event};
use kube::runtime::{WatchStreamExt as _, watcher as watch_objects};
use kube::{Api, Client, ResourceExt as _};

use crate::app::Gateway;

/// The label EndpointSlices carry naming their Service.
const SERVICE_NAME_LABEL: &str = "kubernetes.io/service-name";

/// The identities of the ready endpoints of one slice.
pub fn ready_endpoints(slice: &EndpointSlice) -> BTreeSet<String> {
    slice
        .endpoints
        .iter()
        .filter(|e| e.conditions.as_ref().and_then(|c| c.ready) != Some(false))
        .filter_map(|e| {
            e.target_ref
                .as_ref()
                .and_then(|r| r.name.clone().map(|n| format!("{}/{n}", r.namespace.clone().unwrap_or_default())))
                .or_else(|| e.addresses.first().cloned())
        })
        .collect()
}

/// Ready replicas across `slices`, at least 1.
pub fn count(slices: &BTreeMap<String, BTreeSet<String>>) -> u32 {
    let all: BTreeSet<&String> = slices.values().flatten().collect();
    u32::try_from(all.len()).unwrap_or(u32::MAX).max(1)
}

/// Watches the EndpointSlices of Service `service` in `namespace` and keeps the gateway's
/// replica count current. Runs until dropped.
pub async fn watch(gateway: Arc<Gateway>, client: Client, namespace: String, service: String) {
    let selector = watcher::Config::default().labels(&format!("{SERVICE_NAME_LABEL}={service}"));
    let mut events =
        pin!(watch_objects(Api::<EndpointSlice>::namespaced(client, &namespace), selector).default_backoff());
    let mut slices: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    let mut listing: Option<BTreeMap<String, BTreeSet<String>>> = None;
    while let Some(event) = events.next().await {
        match event {
            Ok(Event::Init) => listing = Some(BTreeMap::new()),
            Ok(Event::InitApply(slice)) => {
                listing.get_or_insert_default().insert(slice.name_any(), ready_endpoints(&slice));
                continue;
            }
            Ok(Event::InitDone) => slices = listing.take().unwrap_or_default(),
            Ok(Event::Apply(slice)) => {
                slices.insert(slice.name_any(), ready_endpoints(&slice));
            }
            Ok(Event::Delete(slice)) => {
                slices.remove(&slice.name_any());
            }
            Err(e) => {
                tracing::warn!(%namespace, %service, "watching the gateway's EndpointSlices failed (retrying): {e}");
                continue;
            }
        }
        let replicas = count(&slices);
        if replicas != gateway.limits.replicas() {
            tracing::info!(replicas, "ready gateway replicas changed; each enforces its share of every rate limit");
            gateway.limits.set_replicas(replicas);
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn slice(endpoints: serde_json::Value) -> EndpointSlice {
        serde_json::from_value(serde_json::json!({
            "metadata": {"name": "s"}, "addressType": "IPv4", "endpoints": endpoints
        }))
        .unwrap()
    }

    #[test]
    fn counts_ready_endpoints_once_across_slices() {
        let v4 = slice(serde_json::json!([
            {"addresses": ["10.0.0.1"], "conditions": {"ready": true}, "targetRef": {"kind": "Pod", "namespace": "ns", "name": "a"}},
            {"addresses": ["10.0.0.2"], "conditions": {}, "targetRef": {"kind": "Pod", "namespace": "ns", "name": "b"}},
            {"addresses": ["10.0.0.3"], "conditions": {"ready": false}, "targetRef": {"kind": "Pod", "namespace": "ns", "name": "c"}},
            {"addresses": ["10.0.0.4"]}
        ]));
        let v6 = slice(serde_json::json!([
            {"addresses": ["fd00::1"], "conditions": {"ready": true}, "targetRef": {"kind": "Pod", "namespace": "ns", "name": "a"}}
        ]));
        let mut slices = BTreeMap::new();
        slices.insert("v4".to_owned(), ready_endpoints(&v4));
        assert_eq!(count(&slices), 3, "a, b (unset is ready) and the address-only one; c is not ready");
        slices.insert("v6".to_owned(), ready_endpoints(&v6));
        assert_eq!(count(&slices), 3, "pod a in both families counts once");
        assert_eq!(count(&BTreeMap::new()), 1, "unknown is 1");
    }
}
