//! Cluster mode: the gateway serves the config the uprox operator compiled, read from the
//! Kubernetes API of its own namespace (watched, not mounted).
//!
//! **What it watches.** ConfigMaps and Secrets with the label `uprox.dev/compiled` (any value)
//! in one namespace: the manifest ConfigMap `uprox-config` and its parts `uprox-config-N`, the
//! sealed provider keys (Secret `uprox-provider-keys`) and the master key that opens them
//! (Secret `uprox-master-key`). Names, labels and formats are the contract in
//! [`uprox_crds::cluster`].
//!
//! **The consistency rule.** The operator writes the parts, then the sealed keys, then the
//! manifest. A snapshot is built only from a set that agrees with itself: every part the
//! manifest lists is present with its listed size and SHA-256, the master key opens every
//! sealed key, and every key id the config uses is in the sealed map. A set caught halfway
//! through an update fails one of these checks and is simply not used yet: the next event
//! completes it. Events that arrive together are applied together before assembling once, and
//! a set that names what is already installed (same config digest, same Secret
//! `resourceVersion`s) is not rebuilt.
//!
//! **A bad config.** Nothing changes for clients: the last good snapshot keeps serving and the
//! reason is logged once (a warning while it looks half-written, an error when it cannot be
//! served at all). Until the first good snapshot the gateway is not ready (`/readyz` answers
//! 503 and requests get 503), and it keeps watching; a missing config is no reason to exit.
//! Messages name objects and key ids, never secret values.
//!
//! [`assemble`] is the pure half (objects in, snapshot out); [`watch`](watch()) is the IO around it.

pub mod assemble;
pub mod peers;
mod watch;

#[cfg(test)]
mod tests;

pub use assemble::{AssembleError, Assembled, Objects, Revision};
pub use watch::watch;

/// Where a pod finds its own namespace.
const POD_NAMESPACE_FILE: &str = "/var/run/secrets/kubernetes.io/serviceaccount/namespace";

/// The namespace used when the pod's is unknown (outside a cluster).
pub const DEFAULT_NAMESPACE: &str = "uprox-system";

/// The pod's own namespace (from its service account), else [`DEFAULT_NAMESPACE`].
pub fn pod_namespace() -> String {
    std::fs::read_to_string(POD_NAMESPACE_FILE)
        .ok()
        .map(|s| s.trim().to_owned())
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| DEFAULT_NAMESPACE.to_owned())
}
