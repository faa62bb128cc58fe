//! An in-memory Kubernetes API server for tests: [`FakeApiServer`].
//!
//! A real HTTP server on `127.0.0.1` (random port) that speaks enough of the Kubernetes REST API
//! for kube-rs clients, watchers, reflectors, controllers, `Recorder` Events and
//! kube-lease-manager, generically over every group, version and plural (nothing is hard-coded
//! per kind; core paths are `/api/v1/...`, others `/apis/{group}/{version}/...`).
//!
//! # Faithful to the real API server
//!
//! - CRUD: `GET`, list, `POST` (201, 409 `AlreadyExists`, `generateName`), `PUT` (404 when
//!   absent, 409 `Conflict` on a stale `metadata.resourceVersion`), `DELETE` (returns the last
//!   state; `preconditions`), delete-collection; `dryRun` writes nothing.
//! - Server-owned metadata: `uid`, one global `resourceVersion` counter, `creationTimestamp`,
//!   `generation` (1 on create, +1 when anything outside `metadata` and `status` changes).
//!   Writes that change nothing do not bump `resourceVersion` and fire no watch event.
//! - Status subresource semantics for every kind: creates drop `.status`, writes to the object
//!   keep it, writes to `/status` change only it (and never `generation`).
//! - Patches: JSON merge patch, JSON patch (RFC 6902, e.g. kube's `finalizer` helper), and
//!   server-side apply with `managedFields`: conflicts (409, `FieldManagerConflict`) unless
//!   `force`, shared ownership of equal values, removal of fields a manager stopped applying.
//!   Any patch carrying a stale `metadata.resourceVersion` gets 409.
//! - Label selectors (`=`, `==`, `!=`, exists, `!k`, `in`, `notin`) and field selectors.
//! - Watches: `ADDED`/`MODIFIED`/`DELETED` from a resource version (replayed from a history of
//!   the last 10,000 changes), or from a snapshot (`resourceVersion` unset or `0`,
//!   `sendInitialEvents`); `BOOKMARK`s; selector edges as `ADDED`/`DELETED`; a too-old
//!   resource version is a 410 `Expired` `ERROR` event inside a 200 stream, which is what makes
//!   kube's watcher re-list (an HTTP 410 would make it retry the same version forever).
//! - Metadata-only requests (`Accept: ...;as=PartialObjectMetadata[List]`), so
//!   `Api::get_metadata`, `list_metadata` and `metadata_watcher` work.
//! - Finalizers: deleting an object with finalizers sets `deletionTimestamp`; the update that
//!   removes the last finalizer deletes it.
//! - Garbage collection: deleting an object deletes (immediately, recursively) every object whose
//!   `ownerReferences` name it once none of their owners is left; `propagationPolicy: Orphan`
//!   leaves them.
//! - Errors are Kubernetes `Status` bodies, so kube-rs reports `kube::Error::Api` with the
//!   real `code` and `reason`.
//!
//! # Approximations and gaps
//!
//! - No schemas, validation, defaulting, admission, authentication or RBAC; any JSON is stored.
//!   Namespaces need not exist. Whether a kind is namespaced is not known: a collection path
//!   without `namespaces/{ns}/` lists every namespace, an object path without it addresses a
//!   cluster-scoped object.
//! - Versions are separate stores: `v1alpha1` and `v1` of a group/plural do not see each other.
//! - Strategic merge patch is a JSON merge patch (lists are replaced, not merged by key).
//! - Server-side apply treats lists as atomic and tracks ownership per field path only.
//! - Lists ignore `limit`/`continue` (everything in one page) and `resourceVersion` (always the
//!   latest state); `GET` ignores `resourceVersion` too.
//! - Garbage collection ignores `blockOwnerDeletion` and foreground deletion, and does not
//!   collect objects whose owners never existed.
//! - Subresources other than `/status` (`/scale`, `/exec`, ...) and discovery (`/api`, `/apis`)
//!   are 404; `/version` answers a fixed v1.33.
//! - `put`, `get`, `list` and `remove` on the handle bypass HTTP: `put` stores exactly what it
//!   is given (status included) without recording field ownership.
//!
//! # kube-rs details worth knowing
//!
//! - kube's client retries 429, 503 and 504 by itself, so [`FakeApiServer::fail_next`] with
//!   those codes may be absorbed; use 500 or 409 to see an error surface.
//! - kube's `Api::delete` returns `Either::Left(object)` here (the real server answers some
//!   kinds with a `Status`).

mod handlers;
mod log;
mod managed;
mod meta;
mod patch;
mod routes;
mod selector;
mod server;
mod status;
mod store;
mod watch;

use std::{
    any::TypeId,
    net::{Ipv4Addr, SocketAddr},
    sync::Arc,
    time::Duration,
};

use kube::Resource;
use serde::{Serialize, de::DeserializeOwned};
use serde_json::Value;
use tokio::{net::TcpListener, task::JoinHandle};

pub use self::log::RecordedRequest;
use self::{
    meta::{ObjectKey, ResourceKey},
    selector::Filter,
    server::Shared,
    store::DeleteOptions,
};

/// An in-memory Kubernetes API server on `127.0.0.1`; see the [module docs](self).
///
/// Dropping it (or [`shutdown`](Self::shutdown)) stops the server and ends every open watch.
pub struct FakeApiServer {
    address: SocketAddr,
    shared: Arc<Shared>,
    task: JoinHandle<()>,
}

impl FakeApiServer {
    /// Binds `127.0.0.1:0` and serves on a task of the current tokio runtime.
    ///
    /// # Panics
    ///
    /// When no local port can be bound.
    pub async fn start() -> Self {
        let listener = match TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).await {
            Ok(listener) => listener,
            Err(error) => panic!("fake API server: cannot bind 127.0.0.1:0: {error}"),
        };
        let address = match listener.local_addr() {
            Ok(address) => address,
            Err(error) => panic!("fake API server: no local address: {error}"),
        };
        let shared = Arc::new(Shared::default());
        let task = tokio::spawn(server::serve(listener, shared.clone()));
        Self { address, shared, task }
    }

    /// `http://127.0.0.1:PORT`.
    pub fn url(&self) -> String {
        format!("http://{}", self.address)
    }

    /// A kube client for this server: default namespace `default`, no authentication.
    ///
    /// # Panics
    ///
    /// When kube cannot build a client for the URL (it always can for `http://127.0.0.1`).
    pub fn client(&self) -> kube::Client {
        let uri = match self.url().parse::<http::Uri>() {
            Ok(uri) => uri,
            Err(error) => panic!("fake API server: bad URL {}: {error}", self.url()),
        };
        let mut config = kube::Config::new(uri);
        config.default_namespace = "default".to_owned();
        config.connect_timeout = Some(Duration::from_secs(5));
        config.write_timeout = Some(Duration::from_secs(10));
        // No read timeout: an idle watch is healthy, and it ends with its `timeoutSeconds`.
        config.read_timeout = None;
        match kube::Client::try_from(config) {
            Ok(client) => client,
            Err(error) => panic!("fake API server: cannot build a kube client: {error}"),
        }
    }

    /// Creates or replaces `object` directly (no HTTP, no request log), firing watch events.
    ///
    /// The server stamps `uid`, `resourceVersion`, `creationTimestamp` and `generation` as it
    /// would; everything else, `.status` included, is stored as given. A namespaced object
    /// without a namespace goes to `default`. Returns the stored object.
    ///
    /// # Panics
    ///
    /// When `object` has no `metadata.name` or does not round-trip through JSON.
    pub fn put<K>(&self, object: &K) -> K
    where
        K: Resource<DynamicType = ()> + Serialize + DeserializeOwned,
        K::Scope: 'static,
    {
        let resource = resource_key::<K>();
        let Some(name) = object.meta().name.clone() else {
            panic!("FakeApiServer::put: a {} needs metadata.name", K::kind(&()));
        };
        let mut value = match serde_json::to_value(object) {
            Ok(value) => value,
            Err(error) => panic!("FakeApiServer::put: cannot serialize {} {name}: {error}", K::kind(&())),
        };
        if let Some(map) = value.as_object_mut() {
            map.insert("apiVersion".to_owned(), Value::String(K::api_version(&()).into_owned()));
            map.insert("kind".to_owned(), Value::String(K::kind(&()).into_owned()));
        }
        let key = ObjectKey { namespace: scoped_namespace::<K>(object.meta().namespace.as_deref()), name };
        let written = self.shared.store.write(&resource, &key, false, |current| {
            managed::keep_entries(current, &mut value);
            Ok(value)
        });
        match written {
            Ok(written) => decode(&written.object),
            Err(error) => panic!("FakeApiServer::put: {}", error.message),
        }
    }

    /// The stored object, read directly. `namespace` is ignored for cluster-scoped kinds and
    /// defaults to `default` for namespaced ones.
    ///
    /// # Panics
    ///
    /// When the stored object does not deserialize as `K`.
    pub fn get<K>(&self, namespace: Option<&str>, name: &str) -> Option<K>
    where
        K: Resource<DynamicType = ()> + DeserializeOwned,
        K::Scope: 'static,
    {
        let key = ObjectKey { namespace: scoped_namespace::<K>(namespace), name: name.to_owned() };
        self.shared.store.get(&resource_key::<K>(), &key).map(|object| decode(&object))
    }

    /// Every stored `K` in `namespace` (`None`: all namespaces), ordered by namespace and name.
    ///
    /// # Panics
    ///
    /// When a stored object does not deserialize as `K`.
    pub fn list<K>(&self, namespace: Option<&str>) -> Vec<K>
    where
        K: Resource<DynamicType = ()> + DeserializeOwned,
        K::Scope: 'static,
    {
        let namespace = namespace.filter(|_| is_namespaced::<K>()).map(str::to_owned);
        let (items, _, _) = self.shared.store.list(&resource_key::<K>(), &Filter { namespace, ..Filter::default() });
        items.iter().map(|object| decode(object)).collect()
    }

    /// Deletes directly, as a `DELETE` would: finalizers defer it (the object only gets a
    /// `deletionTimestamp`), and dependents are garbage-collected. `false` when absent.
    pub fn remove<K>(&self, namespace: Option<&str>, name: &str) -> bool
    where
        K: Resource<DynamicType = ()>,
        K::Scope: 'static,
    {
        let key = ObjectKey { namespace: scoped_namespace::<K>(namespace), name: name.to_owned() };
        self.shared.store.delete(&resource_key::<K>(), &key, &DeleteOptions::default()).is_ok()
    }

    /// The current (global) resource version.
    pub fn resource_version(&self) -> u64 {
        self.shared.store.resource_version()
    }

    /// Every request answered so far, in order.
    pub fn requests(&self) -> Vec<RecordedRequest> {
        self.shared.recorder.requests()
    }

    /// Forgets the recorded requests.
    pub fn clear_requests(&self) {
        self.shared.recorder.clear();
    }

    /// Answers the next `method` request whose path starts with `path_prefix` with `status`
    /// (a Kubernetes `Status` body) instead of handling it. Faults queue up; each fires once.
    pub fn fail_next(&self, method: http::Method, path_prefix: &str, status: u16) {
        self.shared.recorder.add_fault(method, path_prefix, status);
    }

    /// Ends every open watch stream, as a dropped connection would; clients resume from their
    /// last resource version.
    pub fn close_watches(&self) {
        self.shared.store.close_watches();
    }

    /// Compacts the watch history and sends every open watch a 410 `Expired` error, so every
    /// watcher has to re-list (as after an etcd compaction or a too-slow watcher).
    pub fn expire_watches(&self) {
        self.shared.store.expire_watches();
    }

    /// Stops the server and waits for it to be gone.
    pub async fn shutdown(mut self) {
        self.task.abort();
        let _ = (&mut self.task).await;
    }
}

impl Drop for FakeApiServer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

fn resource_key<K: Resource<DynamicType = ()>>() -> ResourceKey {
    ResourceKey::new(&K::group(&()), &K::version(&()), &K::plural(&()))
}

fn is_namespaced<K>() -> bool
where
    K: Resource<DynamicType = ()>,
    K::Scope: 'static,
{
    TypeId::of::<K::Scope>() != TypeId::of::<k8s_openapi::ClusterResourceScope>()
}

fn scoped_namespace<K>(namespace: Option<&str>) -> String
where
    K: Resource<DynamicType = ()>,
    K::Scope: 'static,
{
    if is_namespaced::<K>() { namespace.unwrap_or("default").to_owned() } else { String::new() }
}

fn decode<K: DeserializeOwned>(object: &Value) -> K {
    match K::deserialize(object) {
        Ok(decoded) => decoded,
        Err(error) => panic!(
            "FakeApiServer: stored {} {} does not deserialize as {}: {error}",
            object.get("kind").and_then(Value::as_str).unwrap_or("object"),
            meta::meta_str(object, "name").unwrap_or_default(),
            std::any::type_name::<K>()
        ),
    }
}
