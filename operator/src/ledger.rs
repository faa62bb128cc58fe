//! The usage ledger as the operator reads it: a watch of the one ConfigMap
//! [`uprox_crds::usage::LEDGER_NAME`] in the gateway namespace, which the gateway replicas
//! rewrite every few seconds, and what it says ([`LedgerRead`]).
//!
//! The watch wakes its own [`Notify`], not the reconciler's: a ledger change re-evaluates the
//! Budgets only, never a compilation. Writing the ledger is the gateway's business.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use futures_util::StreamExt as _;
use k8s_openapi::api::core::v1::ConfigMap;
use kube::api::Api;
use kube::runtime::WatchStreamExt as _;
use kube::runtime::reflector::{self, ObjectRef, Store};
use kube::runtime::watcher::{self, Event};
use kube::{Client, Resource as _};
use tokio::sync::Notify;
use tokio::task::JoinSet;
use uprox_crds::usage::{LEDGER_NAME, Ledger};

/// What the ledger ConfigMap says.
#[derive(Clone, Debug, PartialEq)]
pub enum LedgerRead {
    /// There is none: no gateway has recorded a costed request yet.
    Absent,
    /// There is one, but it cannot be read (the reason).
    Unreadable(String),
    /// The ledger.
    Read(Ledger),
}

impl LedgerRead {
    /// Reads the ledger ConfigMap, if there is one.
    pub fn of(config_map: Option<&ConfigMap>) -> Self {
        match config_map.map(Ledger::from_config_map) {
            None => LedgerRead::Absent,
            Some(Ok(ledger)) => LedgerRead::Read(ledger),
            Some(Err(e)) => LedgerRead::Unreadable(e.to_string()),
        }
    }
}

/// A watch of the ledger ConfigMap.
#[derive(Clone)]
pub struct LedgerWatch {
    store: Store<ConfigMap>,
    synced: Arc<AtomicBool>,
    namespace: String,
}

impl LedgerWatch {
    /// Starts watching the ledger in `namespace` on `tasks`; every change notifies `changed`.
    pub fn start(client: &Client, namespace: &str, changed: &Arc<Notify>, tasks: &mut JoinSet<()>) -> Self {
        let api: Api<ConfigMap> = Api::namespaced(client.clone(), namespace);
        let config = watcher::Config::default().fields(&format!("metadata.name={LEDGER_NAME}"));
        let (store, writer) = reflector::store();
        let synced = Arc::new(AtomicBool::new(false));
        let events =
            watcher::watcher(api, config).default_backoff().modify(|object| object.meta_mut().managed_fields = None);
        let stream = reflector::reflector(writer, events);
        let (flag, changed) = (synced.clone(), changed.clone());
        tasks.spawn(async move {
            let mut stream = std::pin::pin!(stream);
            while let Some(event) = stream.next().await {
                match event {
                    Ok(Event::InitDone | Event::Apply(_) | Event::Delete(_)) => {
                        flag.store(true, Ordering::Release);
                        changed.notify_one();
                    }
                    Ok(Event::Init | Event::InitApply(_)) => {}
                    Err(e) => tracing::warn!(error = %e, "watch of the usage ledger failed; retrying"),
                }
            }
        });
        Self { store, synced, namespace: namespace.to_owned() }
    }

    /// The ledger, or `None` until the watch has listed once (spend is unknown, not zero).
    pub fn read(&self) -> Option<LedgerRead> {
        if !self.synced.load(Ordering::Acquire) {
            return None;
        }
        let key = ObjectRef::new(LEDGER_NAME).within(&self.namespace);
        Some(LedgerRead::of(self.store.get(&key).as_deref()))
    }

    /// `namespace/uprox-usage`, for messages.
    pub fn location(&self) -> String {
        format!("{}/{LEDGER_NAME}", self.namespace)
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;
    use uprox_crds::usage::LEDGER_KEY;

    #[test]
    fn the_config_map_reads_as_absent_unreadable_or_a_ledger() {
        assert_eq!(LedgerRead::of(None), LedgerRead::Absent);
        let ledger = Ledger::new();
        assert_eq!(LedgerRead::of(Some(&ledger.to_config_map("gw"))), LedgerRead::Read(ledger));
        let mut broken = ConfigMap::default();
        assert!(matches!(LedgerRead::of(Some(&broken)), LedgerRead::Unreadable(m) if m.contains(LEDGER_KEY)));
        broken.data = Some(BTreeMap::from([(LEDGER_KEY.to_owned(), "{not json".to_owned())]));
        assert!(matches!(LedgerRead::of(Some(&broken)), LedgerRead::Unreadable(m) if m.contains("does not parse")));
    }
}
