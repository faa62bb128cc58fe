//! The object store: JSON objects keyed by resource and name, one resource-version counter,
//! the watch-event history and garbage collection.
//!
//! All writes go through [`Store::write`] or [`Store::delete`], which hold one lock while they
//! read the current object, let the caller compute the next one, stamp the metadata the server
//! owns (`uid`, `resourceVersion`, `creationTimestamp`, `generation`, `deletionTimestamp`),
//! record the change in the bounded history and broadcast it to open watches. Holding the lock
//! across the whole step makes `resourceVersion` checks atomic, as etcd's compare-and-swap does.
//! A write that changes nothing is not stored and fires no event, like the real server.

use std::{
    collections::{BTreeMap, BTreeSet, HashMap, VecDeque},
    hash::{BuildHasher, RandomState},
    sync::{Arc, Mutex, MutexGuard, PoisonError},
};

use serde_json::{Map, Value};
use tokio::sync::broadcast;

use super::{
    meta::{
        ObjectKey, ResourceKey, finalizers, guess_kind, has_meta, meta_str, now, owner_uids, remove_meta, set_meta,
        spec_changed,
    },
    selector::Filter,
    status::ApiError,
};

/// How many changes a watch can replay from; older resource versions get 410 Expired.
pub(crate) const HISTORY_LIMIT: usize = 10_000;
/// Open watches that fall this far behind catch up from the history instead.
const BROADCAST_CAPACITY: usize = 4_096;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum ChangeType {
    Added,
    Modified,
    Deleted,
}

/// One stored change, as watches see it.
#[derive(Debug)]
pub(crate) struct Change {
    pub rv: u64,
    pub resource: ResourceKey,
    pub change: ChangeType,
    /// The new state; for deletions the last state, carrying the deletion's resource version.
    pub object: Arc<Value>,
    /// The state before a modification (watches with selectors turn edges into ADDED/DELETED).
    pub previous: Option<Arc<Value>>,
}

/// What open watches are told.
#[derive(Debug, Clone)]
pub(crate) enum Notice {
    Change(Arc<Change>),
    /// End every watch stream; clients resume from their last resource version.
    Close,
    /// Send every watch a 410 Expired error; clients re-list.
    Expire,
}

/// The result of a write.
#[derive(Debug, Clone)]
pub(crate) struct Written {
    pub object: Arc<Value>,
    pub created: bool,
}

/// What a `DELETE` asks for beyond the name.
#[derive(Debug, Clone, Default)]
pub(crate) struct DeleteOptions {
    pub uid: Option<String>,
    pub resource_version: Option<String>,
    /// `propagationPolicy: Orphan`: leave dependents alone.
    pub orphan: bool,
    pub dry_run: bool,
}

/// A watch's starting point: what to replay and where new changes arrive.
pub(crate) struct Subscription {
    pub replay: Vec<Arc<Change>>,
    pub receiver: broadcast::Receiver<Notice>,
    pub rv: u64,
}

#[derive(Default)]
struct Collection {
    kind: Option<String>,
    objects: BTreeMap<ObjectKey, Arc<Value>>,
}

struct State {
    rv: u64,
    collections: HashMap<ResourceKey, Collection>,
    /// Every stored object's uid.
    uids: HashMap<String, (ResourceKey, ObjectKey)>,
    /// Owner uid → objects naming it in `ownerReferences`.
    dependents: HashMap<String, BTreeSet<(ResourceKey, ObjectKey)>>,
    history: VecDeque<Arc<Change>>,
    /// Every change after this resource version is still in `history`.
    floor: u64,
    hasher: RandomState,
    ids: u64,
}

/// The object store shared by the HTTP handlers and the test-facing API.
pub(crate) struct Store {
    state: Mutex<State>,
    notices: broadcast::Sender<Notice>,
}

impl Default for Store {
    fn default() -> Self {
        let (notices, _) = broadcast::channel(BROADCAST_CAPACITY);
        let state = State {
            rv: 1,
            collections: HashMap::new(),
            uids: HashMap::new(),
            dependents: HashMap::new(),
            history: VecDeque::new(),
            floor: 1,
            hasher: RandomState::new(),
            ids: 0,
        };
        Self { state: Mutex::new(state), notices }
    }
}

impl Store {
    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    pub fn resource_version(&self) -> u64 {
        self.lock().rv
    }

    /// The kind stored objects of `resource` have, if any was ever stored.
    pub fn kind_of(&self, resource: &ResourceKey) -> Option<String> {
        self.lock().collections.get(resource).and_then(|c| c.kind.clone())
    }

    pub fn get(&self, resource: &ResourceKey, key: &ObjectKey) -> Option<Arc<Value>> {
        self.lock().get(resource, key)
    }

    /// Matching objects in key order, the current resource version and the collection's kind.
    pub fn list(&self, resource: &ResourceKey, filter: &Filter) -> (Vec<Arc<Value>>, u64, Option<String>) {
        let state = self.lock();
        let Some(collection) = state.collections.get(resource) else {
            return (Vec::new(), state.rv, None);
        };
        let items = collection.objects.values().filter(|o| filter.matches(o)).cloned().collect();
        (items, state.rv, collection.kind.clone())
    }

    /// A random-looking suffix for `metadata.generateName`.
    pub fn name_suffix(&self) -> String {
        const ALPHABET: &[u8] = b"bcdfghjklmnpqrstvwxz2456789";
        let mut state = self.lock();
        let mut bits = state.next_id();
        (0..5)
            .map(|_| {
                let index = usize::try_from(bits % ALPHABET.len() as u64).unwrap_or_default();
                bits /= ALPHABET.len() as u64;
                ALPHABET.get(index).copied().map_or('x', char::from)
            })
            .collect()
    }

    /// Creates or replaces one object: `build` gets the current object and returns the next.
    ///
    /// With `dry_run` the next object is stamped and returned but not stored.
    pub fn write(
        &self,
        resource: &ResourceKey,
        key: &ObjectKey,
        dry_run: bool,
        build: impl FnOnce(Option<&Value>) -> Result<Value, ApiError>,
    ) -> Result<Written, ApiError> {
        let mut state = self.lock();
        let current = state.get(resource, key);
        let mut next = build(current.as_deref())?;
        let kind = state.collections.get(resource).and_then(|c| c.kind.clone());
        state.stamp(&mut next, current.as_deref(), resource, key, kind.as_deref());
        if let Some(current) = &current
            && **current == next
        {
            return Ok(Written { object: current.clone(), created: false });
        }
        if dry_run {
            return Ok(Written { object: Arc::new(next), created: current.is_none() });
        }
        state.rv += 1;
        let rv = state.rv;
        set_meta(&mut next, "resourceVersion", Value::String(rv.to_string()));
        if has_meta(&next, "deletionTimestamp") && finalizers(&next).is_empty() {
            // The last finalizer is gone: the deletion completes now.
            let object = Arc::new(next);
            state.remove(&self.notices, resource, key, object.clone(), rv, true);
            return Ok(Written { object, created: false });
        }
        let object = Arc::new(next);
        state.insert(resource, key, object.clone());
        let change = if current.is_some() { ChangeType::Modified } else { ChangeType::Added };
        state.record(&self.notices, resource, change, object.clone(), current.clone());
        Ok(Written { object, created: current.is_none() })
    }

    /// Deletes one object, or marks it deleted while it has finalizers; returns its last state.
    pub fn delete(
        &self,
        resource: &ResourceKey,
        key: &ObjectKey,
        options: &DeleteOptions,
    ) -> Result<Arc<Value>, ApiError> {
        let mut state = self.lock();
        let Some(current) = state.get(resource, key) else {
            return Err(ApiError::not_found(resource, &key.name));
        };
        let uid_differs = options.uid.as_deref().is_some_and(|uid| Some(uid) != meta_str(&current, "uid"));
        let rv_differs =
            options.resource_version.as_deref().is_some_and(|rv| Some(rv) != meta_str(&current, "resourceVersion"));
        if uid_differs || rv_differs {
            return Err(ApiError::conflict(resource, &key.name));
        }
        if options.dry_run {
            return Ok(current);
        }
        Ok(state.delete_cascading(&self.notices, resource, key, !options.orphan).unwrap_or(current))
    }

    /// Starts a watch from resource version `from`: 410 Expired when the history no longer
    /// reaches back that far, or when `from` is in the future (a client of another server).
    pub fn subscribe_from(&self, from: u64) -> Result<Subscription, ApiError> {
        let state = self.lock();
        if from < state.floor {
            return Err(ApiError::expired(from, state.floor));
        }
        if from > state.rv {
            let message = format!("resource version {from} is newer than the server's {}", state.rv);
            return Err(ApiError::new(410, "Expired", message));
        }
        let start = state.history.partition_point(|change| change.rv <= from);
        Ok(Subscription {
            replay: state.history.range(start..).cloned().collect(),
            receiver: self.notices.subscribe(),
            rv: state.rv,
        })
    }

    /// Starts a watch with the current objects of `resource` (as synthetic ADDED events).
    pub fn subscribe_snapshot(&self, resource: &ResourceKey) -> (Vec<Arc<Value>>, Subscription) {
        let state = self.lock();
        let objects =
            state.collections.get(resource).map(|c| c.objects.values().cloned().collect()).unwrap_or_default();
        let subscription = Subscription { replay: Vec::new(), receiver: self.notices.subscribe(), rv: state.rv };
        (objects, subscription)
    }

    /// Ends every open watch (clients reconnect from their last resource version).
    pub fn close_watches(&self) {
        let _ = self.notices.send(Notice::Close);
    }

    /// Forgets the history and sends every open watch a 410 Expired error (clients re-list).
    pub fn expire_watches(&self) {
        let mut state = self.lock();
        state.history.clear();
        state.floor = state.rv;
        let _ = self.notices.send(Notice::Expire);
    }
}

impl State {
    fn get(&self, resource: &ResourceKey, key: &ObjectKey) -> Option<Arc<Value>> {
        self.collections.get(resource).and_then(|c| c.objects.get(key)).cloned()
    }

    fn next_id(&mut self) -> u64 {
        self.ids += 1;
        self.hasher.hash_one(self.ids)
    }

    fn new_uid(&mut self) -> String {
        let (a, b) = (self.next_id(), self.next_id());
        format!(
            "{:08x}-{:04x}-4{:03x}-8{:03x}-{:012x}",
            a >> 32,
            (a >> 16) & 0xffff,
            a & 0xfff,
            b >> 52,
            b & 0xffff_ffff_ffff
        )
    }

    /// Sets the metadata the server owns, keeping `current`'s where it exists.
    fn stamp(
        &mut self,
        next: &mut Value,
        current: Option<&Value>,
        resource: &ResourceKey,
        key: &ObjectKey,
        kind: Option<&str>,
    ) {
        if !next.is_object() {
            *next = Value::Object(Map::new());
        }
        if let Some(map) = next.as_object_mut() {
            map.entry("apiVersion").or_insert_with(|| Value::String(resource.api_version()));
            if !map.contains_key("kind") {
                let kind = kind.map_or_else(|| guess_kind(&resource.plural), str::to_owned);
                map.insert("kind".to_owned(), Value::String(kind));
            }
        }
        set_meta(next, "name", Value::String(key.name.clone()));
        if key.namespace.is_empty() {
            remove_meta(next, "namespace");
        } else {
            set_meta(next, "namespace", Value::String(key.namespace.clone()));
        }
        match current {
            Some(current) => {
                for field in
                    ["uid", "creationTimestamp", "resourceVersion", "deletionTimestamp", "deletionGracePeriodSeconds"]
                {
                    match current.get("metadata").and_then(|m| m.get(field)) {
                        Some(value) => set_meta(next, field, value.clone()),
                        None => remove_meta(next, field),
                    }
                }
                let generation = current.pointer("/metadata/generation").and_then(Value::as_i64).unwrap_or(1);
                let bump = i64::from(spec_changed(current, next));
                set_meta(next, "generation", Value::from(generation + bump));
            }
            None => {
                let uid = self.new_uid();
                set_meta(next, "uid", Value::String(uid));
                set_meta(next, "creationTimestamp", Value::String(now()));
                set_meta(next, "generation", Value::from(1));
                for field in ["resourceVersion", "deletionTimestamp", "deletionGracePeriodSeconds", "selfLink"] {
                    remove_meta(next, field);
                }
            }
        }
    }

    fn insert(&mut self, resource: &ResourceKey, key: &ObjectKey, object: Arc<Value>) {
        let entry = (resource.clone(), key.clone());
        let collection = self.collections.entry(resource.clone()).or_default();
        if let Some(kind) = object.get("kind").and_then(Value::as_str) {
            collection.kind = Some(kind.to_owned());
        }
        let previous = collection.objects.insert(key.clone(), object.clone());
        if let Some(previous) = previous {
            for owner in owner_uids(&previous) {
                self.unlink(&owner, &entry);
            }
        }
        for owner in owner_uids(&object) {
            self.dependents.entry(owner).or_default().insert(entry.clone());
        }
        if let Some(uid) = meta_str(&object, "uid") {
            self.uids.insert(uid.to_owned(), entry);
        }
    }

    fn unlink(&mut self, owner: &str, dependent: &(ResourceKey, ObjectKey)) {
        if let Some(set) = self.dependents.get_mut(owner) {
            set.remove(dependent);
            if set.is_empty() {
                self.dependents.remove(owner);
            }
        }
    }

    /// Removes a stored object for good and, with `cascade`, deletes its orphaned dependents.
    fn remove(
        &mut self,
        notices: &broadcast::Sender<Notice>,
        resource: &ResourceKey,
        key: &ObjectKey,
        last: Arc<Value>,
        rv: u64,
        cascade: bool,
    ) {
        let entry = (resource.clone(), key.clone());
        if let Some(collection) = self.collections.get_mut(resource) {
            collection.objects.remove(key);
        }
        for owner in owner_uids(&last) {
            self.unlink(&owner, &entry);
        }
        let mut final_state = (*last).clone();
        set_meta(&mut final_state, "resourceVersion", Value::String(rv.to_string()));
        self.record(notices, resource, ChangeType::Deleted, Arc::new(final_state), None);
        let Some(uid) = meta_str(&last, "uid") else {
            return;
        };
        self.uids.remove(uid);
        if !cascade {
            return;
        }
        let dependents: Vec<(ResourceKey, ObjectKey)> =
            self.dependents.get(uid).map(|set| set.iter().cloned().collect()).unwrap_or_default();
        for (dependent_resource, dependent_key) in dependents {
            let Some(dependent) = self.get(&dependent_resource, &dependent_key) else {
                continue;
            };
            // Background garbage collection: a dependent goes when none of its owners is left.
            if owner_uids(&dependent).iter().all(|owner| !self.uids.contains_key(owner)) {
                self.delete_cascading(notices, &dependent_resource, &dependent_key, true);
            }
        }
    }

    /// Deletes now, or sets `deletionTimestamp` while finalizers remain; returns the last state.
    fn delete_cascading(
        &mut self,
        notices: &broadcast::Sender<Notice>,
        resource: &ResourceKey,
        key: &ObjectKey,
        cascade: bool,
    ) -> Option<Arc<Value>> {
        let current = self.get(resource, key)?;
        let finalized = finalizers(&current).is_empty();
        if !finalized && has_meta(&current, "deletionTimestamp") {
            // Already being deleted: nothing changes until the finalizers are gone.
            return Some(current);
        }
        self.rv += 1;
        let rv = self.rv;
        if finalized {
            self.remove(notices, resource, key, current.clone(), rv, cascade);
            let mut last = (*current).clone();
            set_meta(&mut last, "resourceVersion", Value::String(rv.to_string()));
            return Some(Arc::new(last));
        }
        let mut marked = (*current).clone();
        set_meta(&mut marked, "deletionTimestamp", Value::String(now()));
        set_meta(&mut marked, "deletionGracePeriodSeconds", Value::from(0));
        set_meta(&mut marked, "resourceVersion", Value::String(rv.to_string()));
        let marked = Arc::new(marked);
        self.insert(resource, key, marked.clone());
        self.record(notices, resource, ChangeType::Modified, marked.clone(), Some(current));
        Some(marked)
    }

    fn record(
        &mut self,
        notices: &broadcast::Sender<Notice>,
        resource: &ResourceKey,
        change: ChangeType,
        object: Arc<Value>,
        previous: Option<Arc<Value>>,
    ) {
        let change = Arc::new(Change { rv: self.rv, resource: resource.clone(), change, object, previous });
        self.history.push_back(change.clone());
        while self.history.len() > HISTORY_LIMIT {
            if let Some(dropped) = self.history.pop_front() {
                self.floor = dropped.rv;
            }
        }
        // No receiver means no open watch: nothing to tell.
        let _ = notices.send(Notice::Change(change));
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn configmaps() -> ResourceKey {
        ResourceKey::new("", "v1", "configmaps")
    }

    fn key(name: &str) -> ObjectKey {
        ObjectKey { namespace: "ns".into(), name: name.into() }
    }

    fn put(store: &Store, name: &str, body: Value) -> Arc<Value> {
        match store.write(&configmaps(), &key(name), false, |_| Ok(body)) {
            Ok(written) => written.object,
            Err(error) => panic!("{error:?}"),
        }
    }

    #[test]
    fn stamps_server_metadata_and_skips_noop_writes() {
        let store = Store::default();
        let first = put(&store, "a", json!({"data": {"x": "1"}}));
        assert_eq!(first.get("kind"), Some(&json!("Configmap")));
        assert_eq!(first.pointer("/metadata/generation"), Some(&json!(1)));
        assert_eq!(first.pointer("/metadata/namespace"), Some(&json!("ns")));
        let rv = store.resource_version();
        let same = put(&store, "a", json!({"data": {"x": "1"}, "kind": "Configmap"}));
        assert_eq!(store.resource_version(), rv);
        assert_eq!(same, first);
        let changed = put(&store, "a", json!({"data": {"x": "2"}}));
        assert_eq!(changed.pointer("/metadata/generation"), Some(&json!(2)));
        assert_eq!(changed.pointer("/metadata/uid"), first.pointer("/metadata/uid"));
        let status_only = put(&store, "a", json!({"data": {"x": "2"}, "status": {"ok": true}}));
        assert_eq!(status_only.pointer("/metadata/generation"), Some(&json!(2)));
    }

    #[test]
    fn history_replays_and_expires() {
        let store = Store::default();
        let start = store.resource_version();
        put(&store, "a", json!({}));
        put(&store, "b", json!({}));
        let replay = store.subscribe_from(start).map(|s| s.replay.len()).ok();
        assert_eq!(replay, Some(2));
        store.expire_watches();
        assert!(store.subscribe_from(start).is_err());
        assert!(store.subscribe_from(store.resource_version()).is_ok());
    }

    #[test]
    fn cascade_deletes_dependents_once_all_owners_are_gone() {
        let store = Store::default();
        let owner = put(&store, "owner", json!({}));
        let other = put(&store, "other", json!({}));
        let uid = |o: &Value| o.pointer("/metadata/uid").cloned().unwrap_or_default();
        put(&store, "child", json!({"metadata": {"ownerReferences": [{"uid": uid(&owner)}]}}));
        put(
            &store,
            "grandchild",
            json!({"metadata": {"ownerReferences": [{"uid": store.get(&configmaps(), &key("child")).map(|c| uid(&c)).unwrap_or_default()}]}}),
        );
        put(&store, "shared", json!({"metadata": {"ownerReferences": [{"uid": uid(&owner)}, {"uid": uid(&other)}]}}));
        assert!(store.delete(&configmaps(), &key("owner"), &DeleteOptions::default()).is_ok());
        assert!(store.get(&configmaps(), &key("child")).is_none());
        assert!(store.get(&configmaps(), &key("grandchild")).is_none());
        assert!(store.get(&configmaps(), &key("shared")).is_some());
        assert!(store.delete(&configmaps(), &key("other"), &DeleteOptions::default()).is_ok());
        assert!(store.get(&configmaps(), &key("shared")).is_none());
    }

    #[test]
    fn finalizers_defer_deletion_until_removed() {
        let store = Store::default();
        put(&store, "f", json!({"metadata": {"finalizers": ["x"]}}));
        let marked = store.delete(&configmaps(), &key("f"), &DeleteOptions::default()).ok();
        assert!(marked.is_some_and(|m| m.pointer("/metadata/deletionTimestamp").is_some()));
        assert!(store.get(&configmaps(), &key("f")).is_some());
        put(&store, "f", json!({"metadata": {"finalizers": []}}));
        assert!(store.get(&configmaps(), &key("f")).is_none());
    }
}
