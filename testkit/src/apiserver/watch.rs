//! Watch streams: newline-delimited `{"type": ..., "object": ...}` events.
//!
//! A watch starts either from a snapshot (no `resourceVersion`, `"0"`, or `sendInitialEvents`:
//! synthetic `ADDED` events for what exists now) or from resource version N (every change after
//! N, replayed from the store's history). Then it relays changes as they are committed, one
//! chunk per event, until `timeoutSeconds`, a `close_watches`, or the client going away.
//!
//! As on the real server: a start older than the history, or `expire_watches`, yields one
//! `ERROR` event with a 410 `Expired` Status (kube's watcher then re-lists); a watch with a
//! selector sees an object entering the selection as `ADDED` and leaving it as `DELETED`;
//! `allowWatchBookmarks` adds a `BOOKMARK` every [`BOOKMARK_INTERVAL`], and `sendInitialEvents`
//! ends the initial events with a bookmark annotated `k8s.io/initial-events-end`.

use std::{collections::VecDeque, sync::Arc, time::Duration};

use bytes::Bytes;
use futures_util::Stream;
use serde_json::{Value, json};
use tokio::{
    sync::broadcast::{self, error::RecvError},
    time::Instant,
};

use super::{
    handlers::partial_metadata,
    meta::ResourceKey,
    selector::Filter,
    status::ApiError,
    store::{Change, ChangeType, Notice, Store},
};

/// How often a watch that asked for bookmarks gets one.
pub(crate) const BOOKMARK_INTERVAL: Duration = Duration::from_secs(30);

/// Where a watch starts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Start {
    /// The current objects as `ADDED` events, then changes.
    Snapshot { initial_events_end: bool },
    /// Every change after this resource version.
    From(u64),
}

/// A parsed watch request.
#[derive(Debug, Clone)]
pub(crate) struct WatchSpec {
    pub resource: ResourceKey,
    pub filter: Filter,
    pub metadata_only: bool,
    pub bookmarks: bool,
    pub timeout: Duration,
    pub start: Start,
    /// The objects' kind, for bookmark events.
    pub kind: String,
}

/// The lines of one watch response.
pub(crate) fn lines(store: Arc<Store>, spec: WatchSpec) -> impl Stream<Item = Bytes> + Send + 'static {
    let state = WatchState::open(store, spec);
    futures_util::stream::unfold(state, |mut state| async move {
        let line = state.next_line().await?;
        Some((line, state))
    })
}

struct WatchState {
    store: Arc<Store>,
    spec: WatchSpec,
    pending: VecDeque<Bytes>,
    receiver: Option<broadcast::Receiver<Notice>>,
    /// Every change up to here has been considered (bookmarks carry it).
    progress: u64,
    deadline: Instant,
    next_bookmark: Instant,
}

enum Step {
    Timeout,
    Bookmark,
    Notice(Result<Notice, RecvError>),
}

impl WatchState {
    fn open(store: Arc<Store>, spec: WatchSpec) -> Self {
        let now = Instant::now();
        let deadline = now + spec.timeout;
        let start = spec.start;
        let mut state = Self {
            store,
            spec,
            pending: VecDeque::new(),
            receiver: None,
            progress: 0,
            deadline,
            next_bookmark: now + BOOKMARK_INTERVAL,
        };
        match start {
            Start::Snapshot { initial_events_end } => {
                let (objects, subscription) = state.store.subscribe_snapshot(&state.spec.resource);
                for object in objects.iter().filter(|object| state.spec.filter.matches(object)) {
                    let line = state.event_line("ADDED", object);
                    state.pending.push_back(line);
                }
                state.progress = subscription.rv;
                state.receiver = Some(subscription.receiver);
                if initial_events_end {
                    let line = state.bookmark_line(true);
                    state.pending.push_back(line);
                }
            }
            Start::From(rv) => state.resume(rv),
        }
        state
    }

    /// (Re)subscribes after resource version `from`, replaying what happened since.
    fn resume(&mut self, from: u64) {
        match self.store.subscribe_from(from) {
            Ok(subscription) => {
                for change in &subscription.replay {
                    self.push_change(change);
                }
                self.progress = from.max(subscription.rv);
                self.receiver = Some(subscription.receiver);
            }
            Err(error) => self.expire(error),
        }
    }

    fn expire(&mut self, error: ApiError) {
        self.receiver = None;
        self.pending.push_back(line("ERROR", &error.to_status()));
    }

    async fn next_line(&mut self) -> Option<Bytes> {
        loop {
            if let Some(line) = self.pending.pop_front() {
                return Some(line);
            }
            let receiver = self.receiver.as_mut()?;
            let step = tokio::select! {
                () = tokio::time::sleep_until(self.deadline) => Step::Timeout,
                () = tokio::time::sleep_until(self.next_bookmark), if self.spec.bookmarks => Step::Bookmark,
                notice = receiver.recv() => Step::Notice(notice),
            };
            match step {
                Step::Timeout | Step::Notice(Ok(Notice::Close) | Err(RecvError::Closed)) => return None,
                Step::Bookmark => {
                    self.next_bookmark = Instant::now() + BOOKMARK_INTERVAL;
                    return Some(self.bookmark_line(false));
                }
                Step::Notice(Ok(Notice::Change(change))) => {
                    if change.rv > self.progress {
                        self.progress = change.rv;
                        self.push_change(&change);
                    }
                }
                Step::Notice(Ok(Notice::Expire)) => {
                    let error = ApiError::expired(self.progress, self.store.resource_version());
                    self.expire(error);
                }
                Step::Notice(Err(RecvError::Lagged(_))) => {
                    // Too slow for the broadcast buffer: catch up from the history instead.
                    self.receiver = None;
                    self.resume(self.progress);
                }
            }
        }
    }

    fn push_change(&mut self, change: &Change) {
        if change.resource != self.spec.resource {
            return;
        }
        let filter = &self.spec.filter;
        let now = filter.matches(&change.object);
        let event = match change.change {
            ChangeType::Added => now.then_some("ADDED"),
            ChangeType::Deleted => now.then_some("DELETED"),
            ChangeType::Modified => {
                let before = change.previous.as_deref().is_some_and(|previous| filter.matches(previous));
                match (before, now) {
                    (true, true) => Some("MODIFIED"),
                    (false, true) => Some("ADDED"),
                    (true, false) => Some("DELETED"),
                    (false, false) => None,
                }
            }
        };
        if let Some(event) = event {
            let line = self.event_line(event, &change.object);
            self.pending.push_back(line);
        }
    }

    fn event_line(&self, event: &str, object: &Value) -> Bytes {
        if self.spec.metadata_only { line(event, &partial_metadata(object)) } else { line(event, object) }
    }

    fn bookmark_line(&self, initial_events_end: bool) -> Bytes {
        let (api_version, kind) = if self.spec.metadata_only {
            ("meta.k8s.io/v1".to_owned(), "PartialObjectMetadata".to_owned())
        } else {
            (self.spec.resource.api_version(), self.spec.kind.clone())
        };
        let mut metadata = json!({ "resourceVersion": self.progress.to_string() });
        if let (true, Some(map)) = (initial_events_end, metadata.as_object_mut()) {
            map.insert("annotations".to_owned(), json!({ "k8s.io/initial-events-end": "true" }));
        }
        line("BOOKMARK", &json!({ "apiVersion": api_version, "kind": kind, "metadata": metadata }))
    }
}

fn line(event: &str, object: &Value) -> Bytes {
    let mut out = Vec::with_capacity(512);
    out.extend_from_slice(b"{\"type\":\"");
    out.extend_from_slice(event.as_bytes());
    out.extend_from_slice(b"\",\"object\":");
    super::handlers::write_json(&mut out, object);
    out.extend_from_slice(b"}\n");
    Bytes::from(out)
}
