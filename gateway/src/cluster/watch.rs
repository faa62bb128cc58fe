//! The IO half of cluster mode: two watches (ConfigMaps and Secrets labelled
//! `uprox.dev/compiled` in one namespace) feeding [`Objects`], and a reconcile step that
//! assembles and installs after every burst of events.
//!
//! Each watch buffers its initial list (`Init` … `InitDone`) and swaps it in whole, so a
//! re-list after a lost watch also forgets objects deleted meanwhile. Nothing is assembled
//! before both initial lists are complete. API errors are logged and retried with kube's
//! default backoff; the gateway keeps serving its last good snapshot through them.

use std::collections::BTreeMap;
use std::pin::pin;
use std::sync::Arc;
use std::time::Duration;

use futures_util::{FutureExt as _, StreamExt as _, stream};
use k8s_openapi::api::core::v1::{ConfigMap, Secret};
use kube::runtime::watcher::{self, Event};
use kube::runtime::{WatchStreamExt as _, watcher as watch_objects};
use kube::{Api, Client, ResourceExt as _};
use tokio::time::Instant;
use uprox_crds::cluster::{COMPILED_LABEL, CONFIG_NAME};

use super::assemble::{AssembleError, Objects, Revision, assemble};
use crate::app::Gateway;

/// How long the objects may look half-written before that is worth a warning. The operator
/// writes a whole update within moments; much longer means it stopped halfway.
const PENDING_GRACE: Duration = Duration::from_secs(10);

/// One item of either watch.
pub(super) enum Change {
    ConfigMap(Result<Event<ConfigMap>, watcher::Error>),
    Secret(Result<Event<Secret>, watcher::Error>),
}

/// Watches the compiled objects in `namespace` and installs every consistent config they
/// describe into `gateway`. Runs until dropped; never returns on its own.
pub async fn watch(gateway: Arc<Gateway>, client: Client, namespace: String) {
    let selector = watcher::Config::default().labels(COMPILED_LABEL);
    let config_maps = watch_objects(Api::<ConfigMap>::namespaced(client.clone(), &namespace), selector.clone())
        .default_backoff()
        .map(Change::ConfigMap);
    let secrets =
        watch_objects(Api::<Secret>::namespaced(client, &namespace), selector).default_backoff().map(Change::Secret);
    let mut changes = pin!(stream::select(config_maps, secrets));
    let mut state = State::new(namespace);
    loop {
        let next = match state.grace_deadline() {
            None => changes.next().await,
            Some(deadline) => match tokio::time::timeout_at(deadline, changes.next()).await {
                Ok(next) => next,
                Err(_) => {
                    state.grace_expired();
                    continue;
                }
            },
        };
        let Some(change) = next else {
            return;
        };
        state.apply(change);
        // Take in whatever else already arrived (the operator writes several objects in a row)
        // before assembling once.
        while let Some(Some(change)) = changes.next().now_or_never() {
            state.apply(change);
        }
        state.reconcile(&gateway);
    }
}

/// What the watch knows.
pub(super) struct State {
    namespace: String,
    objects: Objects,
    /// Initial lists in progress.
    config_map_list: Option<BTreeMap<String, ConfigMap>>,
    secret_list: Option<BTreeMap<String, Secret>>,
    /// Whether each watch has completed an initial list.
    config_maps_listed: bool,
    secrets_listed: bool,
    /// Whether the objects changed since the last reconcile.
    dirty: bool,
    /// What the installed snapshot was built from.
    installed: Option<Revision>,
    /// The last failure logged, so a failure is logged once, not on every event.
    failure: Option<String>,
    /// Since when the objects have looked half-written, and whether that was warned about.
    pending: Option<Pending>,
}

/// A half-written set of objects: normal for a moment (two watches deliver the operator's
/// writes in no common order), worth a warning when it lasts.
struct Pending {
    since: Instant,
    message: String,
    warned: bool,
}

impl State {
    pub(super) fn new(namespace: String) -> Self {
        Self {
            namespace,
            objects: Objects::default(),
            config_map_list: None,
            secret_list: None,
            config_maps_listed: false,
            secrets_listed: false,
            dirty: false,
            installed: None,
            failure: None,
            pending: None,
        }
    }

    pub(super) fn apply(&mut self, change: Change) {
        match change {
            Change::ConfigMap(Ok(event)) => self.config_map_event(event),
            Change::Secret(Ok(event)) => self.secret_event(event),
            Change::ConfigMap(Err(e)) => self.watch_failed("ConfigMaps", &e),
            Change::Secret(Err(e)) => self.watch_failed("Secrets", &e),
        }
    }

    fn watch_failed(&self, what: &str, error: &watcher::Error) {
        let ns = &self.namespace;
        match error {
            // The API server compacted past the watch's resource version: the watcher re-lists,
            // which is routine.
            watcher::Error::WatchError(status) if status.code == 410 => {
                tracing::info!(namespace = %ns, "the watch on {what} expired; listing them again");
            }
            _ => tracing::warn!(namespace = %ns, "watching {what} failed (retrying): {}", describe(error)),
        }
    }

    fn config_map_event(&mut self, event: Event<ConfigMap>) {
        match event {
            Event::Init => self.config_map_list = Some(BTreeMap::new()),
            Event::InitApply(cm) => {
                self.config_map_list.get_or_insert_default().insert(cm.name_any(), cm);
            }
            Event::InitDone => {
                self.objects.set_config_maps(self.config_map_list.take().unwrap_or_default());
                self.config_maps_listed = true;
                self.dirty = true;
            }
            Event::Apply(cm) => {
                self.objects.put_config_map(cm);
                self.dirty = true;
            }
            Event::Delete(cm) => {
                self.objects.remove_config_map(&cm.name_any());
                self.dirty = true;
            }
        }
    }

    fn secret_event(&mut self, event: Event<Secret>) {
        match event {
            Event::Init => self.secret_list = Some(BTreeMap::new()),
            Event::InitApply(secret) => {
                self.secret_list.get_or_insert_default().insert(secret.name_any(), secret);
            }
            Event::InitDone => {
                self.objects.set_secrets(self.secret_list.take().unwrap_or_default());
                self.secrets_listed = true;
                self.dirty = true;
            }
            Event::Apply(secret) => {
                self.objects.put_secret(secret);
                self.dirty = true;
            }
            Event::Delete(secret) => {
                self.objects.remove_secret(&secret.name_any());
                self.dirty = true;
            }
        }
    }

    /// Assembles and installs when the objects changed and both lists are complete.
    pub(super) fn reconcile(&mut self, gateway: &Gateway) {
        if !self.dirty || !self.config_maps_listed || !self.secrets_listed {
            return;
        }
        self.dirty = false;
        if let (Some(installed), Some(current)) = (&self.installed, self.objects.revision())
            && installed.same_as(&current)
        {
            self.pending = None;
            if self.failure.take().is_some() {
                tracing::info!(
                    namespace = %self.namespace,
                    config = %installed.config,
                    "the compiled objects are consistent again with the config being served"
                );
            }
            return;
        }
        match assemble(&self.objects) {
            Ok(assembled) => {
                gateway.install(assembled.snapshot);
                tracing::info!(
                    namespace = %self.namespace,
                    config = %assembled.revision.config,
                    "config installed from the cluster: {}",
                    assembled.counts
                );
                self.installed = Some(assembled.revision);
                self.failure = None;
                self.pending = None;
            }
            Err(e) => {
                if !e.is_pending() && !matches!(e, AssembleError::NoManifest) {
                    gateway.metrics.refused();
                }
                self.fail(&e);
            }
        }
    }

    /// When a half-written set has lasted long enough to warn about.
    pub(super) fn grace_deadline(&self) -> Option<Instant> {
        self.pending.as_ref().filter(|p| !p.warned).map(|p| p.since + PENDING_GRACE)
    }

    /// Warns that the objects have stayed half-written.
    pub(super) fn grace_expired(&mut self) {
        let Some(pending) = self.pending.as_mut().filter(|p| !p.warned) else {
            return;
        };
        pending.warned = true;
        let ns = &self.namespace;
        let message = &pending.message;
        let secs = PENDING_GRACE.as_secs();
        if self.installed.is_some() {
            tracing::warn!(
                namespace = %ns,
                "a config change has been incomplete for {secs}s: {message}; the last good config keeps serving"
            );
        } else {
            tracing::warn!(namespace = %ns, "not ready: the compiled config has been incomplete for {secs}s: {message}");
        }
    }

    /// Reports a failure: a half-written set quietly until [`PENDING_GRACE`] passes, anything
    /// else at once, each distinct failure once. The installed snapshot (if any) keeps serving.
    fn fail(&mut self, error: &AssembleError) {
        let message = error.to_string();
        let ns = &self.namespace;
        if self.installed.is_none() && matches!(error, AssembleError::NoManifest) {
            if self.failure.as_deref() != Some(message.as_str()) {
                tracing::info!(
                    namespace = %ns,
                    "not ready: waiting for the operator's ConfigMap {CONFIG_NAME} in namespace {ns}"
                );
            }
            self.pending = None;
        } else if error.is_pending() {
            tracing::debug!(namespace = %ns, "compiled objects not consistent yet: {message}");
            match &mut self.pending {
                Some(pending) => pending.message.clone_from(&message),
                None => self.pending = Some(Pending { since: Instant::now(), message: message.clone(), warned: false }),
            }
        } else {
            if self.failure.as_deref() != Some(message.as_str()) {
                if self.installed.is_some() {
                    tracing::error!(
                        namespace = %ns,
                        "config change refused: {message}; the last good config keeps serving"
                    );
                } else {
                    tracing::error!(namespace = %ns, "not ready: the compiled config cannot be served: {message}");
                }
            }
            self.pending = None;
        }
        self.failure = Some(message);
    }
}

/// A watch error, with a hint when access is denied, and without anything a decoding error
/// might quote from the object (a Secret's data).
fn describe(error: &watcher::Error) -> String {
    let client_error = match error {
        watcher::Error::InitialListFailed(e) | watcher::Error::WatchStartFailed(e) | watcher::Error::WatchFailed(e) => {
            e
        }
        watcher::Error::WatchError(_) | watcher::Error::NoResourceVersion => return error.to_string(),
    };
    match client_error {
        kube::Error::SerdeError(_) => {
            "an object could not be decoded (details withheld: they may quote a Secret)".to_owned()
        }
        kube::Error::Api(status) if status.code == 401 || status.code == 403 => format!(
            "{error} (the gateway's ServiceAccount needs get, list and watch on configmaps and secrets in its namespace)"
        ),
        _ => error.to_string(),
    }
}
