//! The operator's view of the cluster: one kube-runtime reflector per watched kind (and per
//! watched namespace when the operator is limited to some), each waking the reconciler when
//! anything changes.
//!
//! Secrets are watched twice, both cheaply: token Secrets in full (selected by the
//! `uprox.dev/machine-token` label, so only what uprox wrote), and every Secret's metadata
//! only, which says when a provider-key Secret appears, changes or goes away without holding
//! every Secret's data in memory. The values of the few Secrets Providers name are then read
//! on demand ([`crate::provider_secrets`]).

use std::collections::HashMap;
use std::fmt::Debug;
use std::sync::Arc;

use futures_util::StreamExt as _;
use k8s_openapi::NamespaceResourceScope;
use k8s_openapi::api::core::v1::Secret;
use kube::api::{Api, PartialObjectMeta};
use kube::runtime::WatchStreamExt as _;
use kube::runtime::reflector::{self, Store};
use kube::runtime::watcher::{self, Event};
use kube::{Client, Resource};
use serde::de::DeserializeOwned;
use tokio::sync::Notify;
use tokio::task::JoinSet;
use uprox_crds::{Budget, MachineToken, Policy, Provider, Resources, Service, token};

/// Where to watch: every namespace, or these.
#[derive(Clone, Debug, Default)]
pub struct Scope {
    /// Empty: all namespaces.
    pub namespaces: Vec<String>,
}

/// Which changes of a watched kind wake the reconciler.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Wake {
    /// Every change.
    OnAnyChange,
    /// Creations, deletions and changes of `metadata.generation` (the spec): not the status
    /// writes of the operator itself, nor label or annotation edits.
    OnSpecChange,
}

/// The reflector stores of one kind: one per watched namespace, or one for all.
#[derive(Clone)]
pub struct Watched<K: Resource<DynamicType = ()> + Clone + 'static> {
    readers: Vec<Store<K>>,
}

impl<K> Watched<K>
where
    K: Resource<DynamicType = (), Scope = NamespaceResourceScope>
        + Clone
        + DeserializeOwned
        + Debug
        + Send
        + Sync
        + 'static,
{
    /// Starts the watches of this kind on `tasks`; every change notifies `dirty`.
    pub fn start(
        client: &Client,
        scope: &Scope,
        config: watcher::Config,
        dirty: &Arc<Notify>,
        tasks: &mut JoinSet<()>,
    ) -> Self {
        Self::start_waking(client, scope, config, dirty, tasks, Wake::OnAnyChange)
    }

    /// Starts the watches of this kind on `tasks`; the changes `wake` selects notify `dirty`.
    pub fn start_waking(
        client: &Client,
        scope: &Scope,
        config: watcher::Config,
        dirty: &Arc<Notify>,
        tasks: &mut JoinSet<()>,
        wake: Wake,
    ) -> Self {
        let apis: Vec<Api<K>> = if scope.namespaces.is_empty() {
            vec![Api::all(client.clone())]
        } else {
            scope.namespaces.iter().map(|ns| Api::namespaced(client.clone(), ns)).collect()
        };
        let readers = apis
            .into_iter()
            .map(|api| {
                let (reader, writer) = reflector::store();
                let dirty = dirty.clone();
                // managedFields are dropped before the store: nothing reads them, and they are
                // often the bulk of an object.
                let events = watcher::watcher(api, config.clone())
                    .default_backoff()
                    .modify(|object| object.meta_mut().managed_fields = None);
                let stream = reflector::reflector(writer, events);
                tasks.spawn(async move {
                    let mut stream = std::pin::pin!(stream);
                    let mut generations: HashMap<(String, String), Option<i64>> = HashMap::new();
                    while let Some(event) = stream.next().await {
                        match event {
                            Ok(Event::Apply(object)) if wake == Wake::OnSpecChange => {
                                let meta = object.meta();
                                let key =
                                    (meta.namespace.clone().unwrap_or_default(), meta.name.clone().unwrap_or_default());
                                if generations.insert(key, meta.generation) != Some(meta.generation) {
                                    dirty.notify_one();
                                }
                            }
                            Ok(Event::Delete(object)) if wake == Wake::OnSpecChange => {
                                let meta = object.meta();
                                generations.remove(&(
                                    meta.namespace.clone().unwrap_or_default(),
                                    meta.name.clone().unwrap_or_default(),
                                ));
                                dirty.notify_one();
                            }
                            // The store is consistent after InitDone, Apply and Delete.
                            Ok(Event::InitDone | Event::Apply(_) | Event::Delete(_)) => dirty.notify_one(),
                            Ok(Event::Init | Event::InitApply(_)) => {}
                            Err(e) => tracing::warn!(kind = %K::kind(&()), error = %e, "watch failed; retrying"),
                        }
                    }
                });
                reader
            })
            .collect();
        Self { readers }
    }

    /// Waits until every store has listed once.
    pub async fn wait_ready(&self) {
        for reader in &self.readers {
            // Err means the writer is gone: the task ended, nothing left to wait for.
            let _ = reader.wait_until_ready().await;
        }
    }

    /// Every object, in no particular order.
    pub fn state(&self) -> Vec<Arc<K>> {
        self.readers.iter().flat_map(Store::state).collect()
    }

    /// One object.
    pub fn get(&self, namespace: &str, name: &str) -> Option<Arc<K>> {
        let key = reflector::ObjectRef::new(name).within(namespace);
        self.readers.iter().find_map(|r| r.get(&key))
    }

    fn owned(&self) -> Vec<K> {
        self.readers.iter().flat_map(Store::state).map(|k| K::clone(&k)).collect()
    }
}

/// Every store the reconciler reads.
#[derive(Clone)]
pub struct Stores {
    /// Providers.
    pub providers: Watched<Provider>,
    /// Services.
    pub services: Watched<Service>,
    /// MachineTokens.
    pub tokens: Watched<MachineToken>,
    /// Policies.
    pub policies: Watched<Policy>,
    /// Budgets.
    pub budgets: Watched<Budget>,
    /// Token Secrets, in full.
    pub token_secrets: Watched<Secret>,
    /// Every Secret's metadata.
    pub secret_meta: Watched<PartialObjectMeta<Secret>>,
}

impl Stores {
    /// Starts every watch.
    pub fn start(client: &Client, scope: &Scope, dirty: &Arc<Notify>, tasks: &mut JoinSet<()>) -> Self {
        let all = watcher::Config::default;
        Self {
            providers: Watched::start(client, scope, all(), dirty, tasks),
            services: Watched::start(client, scope, all(), dirty, tasks),
            tokens: Watched::start(client, scope, all(), dirty, tasks),
            policies: Watched::start(client, scope, all(), dirty, tasks),
            // Budget statuses are rewritten as spend moves; those writes need no compilation.
            budgets: Watched::start_waking(client, scope, all(), dirty, tasks, Wake::OnSpecChange),
            token_secrets: Watched::start(client, scope, all().labels(token::SECRET_LABEL), dirty, tasks),
            secret_meta: Watched::start(client, scope, all(), dirty, tasks),
        }
    }

    /// Waits until every store has listed once.
    pub async fn wait_ready(&self) {
        self.providers.wait_ready().await;
        self.services.wait_ready().await;
        self.tokens.wait_ready().await;
        self.policies.wait_ready().await;
        self.budgets.wait_ready().await;
        self.token_secrets.wait_ready().await;
        self.secret_meta.wait_ready().await;
    }

    /// The resources as `compile()` reads them, with the token Secrets. Provider-key Secrets
    /// are added by the caller. A MachineToken's Secret that exists but was not issued by
    /// uprox is included by its metadata only, so compile can say why it is not used.
    pub fn resources(&self) -> Resources {
        let tokens = self.tokens.owned();
        let mut secrets = self.token_secrets.owned();
        for mt in &tokens {
            let namespace = mt.metadata.namespace.as_deref().unwrap_or_default();
            let name = mt.secret_name();
            if self.token_secrets.get(namespace, &name).is_some() {
                continue;
            }
            if let Some(meta) = self.secret_meta.get(namespace, &name) {
                secrets.push(Secret { metadata: meta.metadata.clone(), ..Secret::default() });
            }
        }
        Resources {
            providers: self.providers.owned(),
            services: self.services.owned(),
            tokens,
            policies: self.policies.owned(),
            budgets: self.budgets.owned(),
            secrets,
        }
    }

    /// The Secret a MachineToken names: in full when uprox issued it, by metadata otherwise.
    pub fn token_secret(&self, namespace: &str, name: &str) -> Option<Arc<Secret>> {
        if let Some(full) = self.token_secrets.get(namespace, name) {
            return Some(full);
        }
        self.secret_meta
            .get(namespace, name)
            .map(|m| Arc::new(Secret { metadata: m.metadata.clone(), ..Secret::default() }))
    }
}
