//! Test fixtures shared by the uprox crates' tests.
//!
//! [`apiserver::FakeApiServer`] is an in-memory Kubernetes API server on `127.0.0.1` that real
//! kube-rs clients, watchers, reflectors and controllers can talk to, so the operator and the
//! gateway's cluster mode are testable end to end without a cluster.

pub mod apiserver;
