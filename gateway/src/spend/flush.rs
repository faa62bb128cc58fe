//! The flusher: every interval, writes this replica's pending spend to the shared ledger and
//! installs what the ledger says (everybody's spend) as the view budgets are checked against.
//!
//! Each write is delta number `sequence` of this writer (a name unique to the process), so a
//! write whose outcome is unknown is checked before anything else is sent: if the ledger shows
//! it applied, it is settled; if not, its spend is still pending and goes out with the next
//! delta. Nothing is counted twice and nothing is dropped while the process lives; what a
//! crash loses is what it had not flushed — at most one interval of its spend.

use std::sync::Arc;
use std::time::Duration;

use super::state::{Collected, Spend};
use super::store::{Store, StoreError};
use crate::clock::unix_now;

/// Default time between two flushes.
pub const DEFAULT_INTERVAL: Duration = Duration::from_secs(2);

/// Writes one replica's spend to a [`Store`].
#[derive(Debug)]
pub struct Flusher {
    spend: Arc<Spend>,
    store: Store,
    writer: String,
    sequence: u64,
    /// A delta whose write failed in a way that may still have applied it.
    unresolved: Option<(u64, Collected)>,
}

impl Flusher {
    /// A flusher for `spend` writing to `store` as `writer`.
    pub fn new(spend: Arc<Spend>, store: Store, writer: String) -> Self {
        Self { spend, store, writer, sequence: 0, unresolved: None }
    }

    /// The writer name: `prefix` (the pod or host name) and a random suffix, so a restarted
    /// process never reuses the sequence numbers of its predecessor.
    pub fn writer_name(prefix: &str) -> String {
        let mut random = [0u8; 4];
        let _ = getrandom::fill(&mut random);
        format!("{prefix}-{}", hex::encode(random))
    }

    /// One round: settle an unresolved write, then write what is pending (or, with nothing
    /// pending, read the ledger to learn the other replicas' spend).
    pub async fn round(&mut self, now: i64) -> Result<(), StoreError> {
        if let Some((sequence, collected)) = self.unresolved.take() {
            match self.store.read().await {
                Ok(Some(ledger)) if ledger.has_applied(&self.writer, sequence) => {
                    self.spend.written(collected, &ledger, now);
                }
                Ok(_) => self.spend.unwritten(collected),
                Err(e) => {
                    self.unresolved = Some((sequence, collected));
                    return Err(e);
                }
            }
        }
        let mut days = self.spend.collect().into_iter();
        let Some(mut collected) = days.next() else {
            if let Some(ledger) = self.store.read().await? {
                self.spend.install(&ledger, now);
            }
            return Ok(());
        };
        // One write per day of spend (two only around midnight), each in its own day.
        loop {
            self.sequence += 1;
            let spent_at = collected.day * 86_400;
            match self.store.apply(&self.writer, self.sequence, &collected.delta, spent_at, now).await {
                Ok(ledger) => self.spend.written(collected, &ledger, now),
                Err(e) => {
                    self.unresolved = Some((self.sequence, collected));
                    days.for_each(|rest| self.spend.unwritten(rest));
                    return Err(e);
                }
            }
            match days.next() {
                Some(next) => collected = next,
                None => return Ok(()),
            }
        }
    }

    /// Loads the ledger once, then flushes every `interval` until `stop` resolves, and flushes
    /// one last time.
    pub async fn run(mut self, interval: Duration, stop: impl std::future::Future<Output = ()>) {
        let mut stop = std::pin::pin!(stop);
        let mut ticker = tokio::time::interval(interval);
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut failing = false;
        loop {
            tokio::select! {
                _ = ticker.tick() => {}
                () = &mut stop => break,
            }
            match self.round(unix_now()).await {
                Ok(()) if failing => {
                    failing = false;
                    tracing::info!(store = ?self.store, "the usage ledger is written again");
                }
                Ok(()) => {}
                Err(e) if !failing => {
                    failing = true;
                    tracing::warn!(error = %e, "the usage ledger could not be written; spend stays pending and is retried");
                }
                Err(e) => tracing::debug!(error = %e, "the usage ledger could not be written"),
            }
        }
        // Last round, then settle a write of unknown outcome if the store answers.
        for _ in 0..2 {
            match self.round(unix_now()).await {
                Ok(()) if self.unresolved.is_none() => return,
                Ok(()) => {}
                Err(e) => tracing::warn!(error = %e, "the last usage ledger write failed; unwritten spend is lost"),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use uprox_crds::common::ObjectId;
    use uprox_crds::usage::Windows;

    use super::super::store::FileStore;
    use super::*;

    const NOW: i64 = 1_795_802_400;

    #[tokio::test]
    async fn two_flushers_share_one_ledger() {
        let dir = tempfile::tempdir().unwrap();
        let store = || Store::File(FileStore::new(dir.path()).unwrap());
        let (a, b) = (Arc::new(Spend::default()), Arc::new(Spend::default()));
        let id = ObjectId::new("team", "svc");
        let (meter_a, meter_b) = (a.service(&id), b.service(&id));
        let mut flush_a = Flusher::new(a.clone(), store(), Flusher::writer_name("a"));
        let mut flush_b = Flusher::new(b.clone(), store(), Flusher::writer_name("b"));
        meter_a.charge_on(NOW / 86_400, 3_000_000, None);
        meter_b.charge_on(NOW / 86_400, 4_000_000, None);
        flush_a.round(NOW).await.unwrap();
        flush_b.round(NOW).await.unwrap();
        // b sees both; a sees both once it reads again.
        let at = Windows::at(NOW);
        assert_eq!(meter_b.spent(&at), (7_000_000, 7_000_000));
        flush_a.round(NOW).await.unwrap();
        assert_eq!(meter_a.spent(&at), (7_000_000, 7_000_000));
        // A restart (a new Spend reading the same file) keeps the spend.
        let restarted = Arc::new(Spend::default());
        let meter = restarted.service(&id);
        Flusher::new(restarted.clone(), store(), Flusher::writer_name("a")).round(NOW).await.unwrap();
        assert_eq!(meter.spent(&at), (7_000_000, 7_000_000));
    }

    #[tokio::test]
    async fn a_failed_write_keeps_the_spend_pending() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join(super::super::store::LEDGER_FILE), "damaged").unwrap();
        let spend = Arc::new(Spend::default());
        let meter = spend.service(&ObjectId::new("team", "svc"));
        let mut flusher = Flusher::new(spend.clone(), Store::File(FileStore::new(dir.path()).unwrap()), "w".to_owned());
        meter.charge_on(NOW / 86_400, 5_000_000, Some("m"));
        assert!(flusher.round(NOW).await.is_err());
        assert_eq!(meter.spent(&Windows::at(NOW)), (5_000_000, 5_000_000));
        std::fs::remove_file(dir.path().join(super::super::store::LEDGER_FILE)).unwrap();
        flusher.round(NOW).await.unwrap();
        let ledger = FileStore::new(dir.path()).unwrap().read().unwrap().unwrap();
        assert_eq!(ledger.spent("team/svc", &Windows::at(NOW)), (5_000_000, 5_000_000), "written once");
        assert_eq!(ledger.services["team/svc"].unpriced["m"], 1);
        assert_eq!(meter.spent(&Windows::at(NOW)), (5_000_000, 5_000_000), "not counted twice");
    }
}
