//! Coalescing identical misses: while one request (the *leader*) is getting an answer upstream,
//! identical non-streamed requests (*followers*) wait for it and are then answered from the
//! cache, so a burst of the same request costs one upstream call.
//!
//! Streamed requests never wait: a follower would get its first token only when the leader's
//! whole answer is in, later than from the upstream itself. A follower stops waiting when the
//! leader is done — its answer stored, or not (an error, a client that left) — or after the
//! wait limit, and then goes upstream itself (without leading: a failing request does not make
//! every follower wait in turn).
//!
//! The registry holds one entry per key being fetched; only eligible misses touch it.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::Semaphore;

use super::key::CacheKey;

/// The requests being fetched upstream, by key.
#[derive(Clone)]
pub struct Flights {
    /// A semaphore without permits per key: closed when the leader is done, which wakes every
    /// follower, also one that starts waiting after it.
    inner: moka::sync::Cache<CacheKey, Arc<Semaphore>>,
}

impl std::fmt::Debug for Flights {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Flights").field("in_flight", &self.inner.entry_count()).finish()
    }
}

impl Default for Flights {
    fn default() -> Self {
        Self { inner: moka::sync::Cache::builder().build() }
    }
}

/// A request's part in a flight.
pub enum Part {
    /// It fetches the answer; the others wait until this is dropped.
    Leader(Leader),
    /// Another request is fetching it: wait with [`Follower::wait`].
    Follower(Follower),
}

/// Held by the leader; dropping it (when its answer is stored or abandoned) wakes the followers.
#[derive(Debug)]
pub struct Leader {
    flights: Flights,
    key: CacheKey,
    done: Arc<Semaphore>,
}

/// A request waiting for a leader.
pub struct Follower {
    done: Arc<Semaphore>,
}

impl Flights {
    /// Joins the flight of `key`: leads it when there is none.
    pub fn join(&self, key: CacheKey) -> Part {
        let entry = self.inner.entry(key).or_insert_with(|| Arc::new(Semaphore::new(0)));
        let done = entry.value().clone();
        if entry.is_fresh() {
            Part::Leader(Leader { flights: self.clone(), key, done })
        } else {
            Part::Follower(Follower { done })
        }
    }

    /// Keys being fetched.
    pub fn in_flight(&self) -> u64 {
        self.inner.run_pending_tasks();
        self.inner.entry_count()
    }
}

impl Follower {
    /// Waits until the leader is done, or at most `limit`.
    pub async fn wait(self, limit: Duration) {
        let _ = tokio::time::timeout(limit, self.done.acquire()).await;
    }
}

impl Drop for Leader {
    fn drop(&mut self) {
        self.flights.inner.invalidate(&self.key);
        self.done.close();
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;

    #[tokio::test]
    async fn followers_wait_for_the_leader_and_the_next_request_leads_again() {
        let flights = Flights::default();
        let key = CacheKey([7; 32]);
        let Part::Leader(leader) = flights.join(key) else { panic!("the first request leads") };
        let Part::Follower(early) = flights.join(key) else { panic!("the second follows") };
        let waiting = tokio::spawn(early.wait(Duration::from_secs(30)));
        tokio::time::sleep(Duration::from_millis(20)).await;
        assert!(!waiting.is_finished(), "waits while the leader fetches");
        let Part::Follower(late) = flights.join(key) else { panic!("still in flight") };
        drop(leader);
        tokio::time::timeout(Duration::from_secs(5), waiting).await.expect("woken").unwrap();
        // A follower that starts waiting after the leader is done does not wait.
        tokio::time::timeout(Duration::from_secs(5), late.wait(Duration::from_secs(30))).await.expect("at once");
        assert!(matches!(flights.join(key), Part::Leader(_)), "a new flight");
        assert_eq!(flights.in_flight(), 0, "and it ended with its leader");
    }

    #[tokio::test(start_paused = true)]
    async fn a_follower_stops_waiting_at_the_limit() {
        let flights = Flights::default();
        let key = CacheKey([8; 32]);
        let _leader = flights.join(key);
        let Part::Follower(follower) = flights.join(key) else { panic!("follows") };
        let started = tokio::time::Instant::now();
        follower.wait(Duration::from_secs(3)).await;
        assert_eq!(started.elapsed().as_secs(), 3);
    }
}
