//! The live limiters by `(Policy, subject)`, kept across snapshot installs.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};

use uprox_crds::common::ObjectId;
use uprox_crds::config::PolicyConfig;

use super::{Limiter, Limits, Subject};

/// Every live limiter by `(Policy, subject)`, and the replica count. Locked only when a
/// snapshot is installed or the replica count changes, never by a request.
#[derive(Debug)]
pub struct Registry {
    limiters: Mutex<HashMap<(ObjectId, Subject), Arc<Limiter>>>,
    replicas: AtomicU32,
}

impl Default for Registry {
    fn default() -> Self {
        Self { limiters: Mutex::new(HashMap::new()), replicas: AtomicU32::new(1) }
    }
}

/// Resolves limiters for one snapshot install: reuses the registry's limiter of a
/// `(Policy, subject)` whose limits did not change, creates the others.
pub struct Resolver<'r> {
    old: HashMap<(ObjectId, Subject), Arc<Limiter>>,
    next: HashMap<(ObjectId, Subject), Arc<Limiter>>,
    replicas: u32,
    registry: &'r Registry,
}

impl Resolver<'_> {
    /// The limiter of `policy` for `subject`, or `None` when the Policy sets no limit.
    pub fn get(&mut self, policy: &PolicyConfig, subject: &Subject) -> Option<Arc<Limiter>> {
        let limits = Limits::of(policy);
        if limits.is_empty() {
            return None;
        }
        let key = (policy.id.clone(), subject.clone());
        if let Some(found) = self.next.get(&key) {
            return Some(found.clone());
        }
        let limiter = match self.old.remove(&key) {
            Some(kept) if kept.limits == limits => kept,
            _ => Arc::new(Limiter::new(policy.id.clone(), limits, self.replicas)),
        };
        self.next.insert(key, limiter.clone());
        Some(limiter)
    }

    /// Makes the resolved limiters the live set; the others are dropped.
    pub fn finish(self) {
        let mut live = self.registry.limiters.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        *live = self.next;
        // The replica count may have changed while resolving.
        let replicas = self.registry.replicas();
        if replicas != self.replicas {
            for limiter in live.values() {
                limiter.rescale(replicas);
            }
        }
    }
}

impl Registry {
    /// Starts resolving the limiters of a new snapshot.
    pub fn resolver(&self) -> Resolver<'_> {
        let old = std::mem::take(&mut *self.limiters.lock().unwrap_or_else(std::sync::PoisonError::into_inner));
        Resolver { old, next: HashMap::new(), replicas: self.replicas(), registry: self }
    }

    /// Ready replicas sharing the limits.
    pub fn replicas(&self) -> u32 {
        self.replicas.load(Ordering::Relaxed)
    }

    /// Sets the number of ready replicas (at least 1) and rescales every limiter.
    pub fn set_replicas(&self, replicas: u32) {
        let replicas = replicas.max(1);
        let live = self.limiters.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        if self.replicas.swap(replicas, Ordering::Relaxed) == replicas {
            return;
        }
        for limiter in live.values() {
            limiter.rescale(replicas);
        }
    }

    /// How many limiters are live.
    pub fn len(&self) -> usize {
        self.limiters.lock().unwrap_or_else(std::sync::PoisonError::into_inner).len()
    }

    /// Whether no limiter is live.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}
