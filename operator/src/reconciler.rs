//! The reconcile loop. `compile()` is global — one config for every gateway replica — so the
//! operator compiles once per burst of changes rather than once per object: the watches of all
//! five kinds and their Secrets wake one loop, which waits for the burst to settle (debounce),
//! then runs a pass:
//!
//! 1. read the stores (and the provider-key Secrets that changed),
//! 2. `compile()`,
//! 3. write the compiled config and the sealed keys (when they changed),
//! 4. issue tokens that are missing or due for rotation,
//! 5. apply every resource's status that changed, with Events on `Ready` transitions.
//!
//! A pass that could not finish (an API error) is retried with backoff; every 5 minutes a pass
//! runs anyway (statuses drift, e.g. a token expires), and the next token expiry wakes the loop
//! on time so its `Ready` condition and `state` flip to `Expired` when it expires.
//!
//! Budget statuses also depend on the usage ledger, which the gateways rewrite every few
//! seconds. Between passes, a ledger change or a window reset (midnight UTC) re-evaluates the
//! Budgets alone ([`BudgetSchedule`]): no compilation, no other writes.

use std::sync::Arc;
use std::time::{Duration, Instant};

use futures_util::StreamExt as _;
use futures_util::stream;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::jiff::Timestamp;
use kube::Client;
use kube::runtime::events::{Event, EventType, Recorder};
use tokio::sync::{Notify, watch};
use tokio::task::JoinSet;
use uprox_crds::{Compiled, compile};

use crate::budget_schedule::{BudgetSchedule, unix_ms_now};
use crate::budgets::{BudgetTracker, Sink};
use crate::ledger::LedgerWatch;
use crate::metrics::Metrics;
use crate::outputs::{Outputs, Written};
use crate::provider_secrets::{self, ProviderSecrets};
use crate::status::{self, Index};
use crate::status_writer::{self, WithStatus};
use crate::stores::Stores;
use crate::tokens::{self, Issue};

/// How long the first pass waits for the usage ledger to be listed.
const LEDGER_SYNC_WAIT: Duration = Duration::from_secs(5);

/// Tunables of the loop.
#[derive(Clone, Debug)]
pub struct Timing {
    /// A burst is over after this long without a change.
    pub quiet: Duration,
    /// A pass starts at most this long after the first change of a burst.
    pub max_delay: Duration,
    /// A pass runs at least this often.
    pub resync: Duration,
    /// First retry after a failed pass (doubles up to `resync`).
    pub retry: Duration,
    /// Concurrent status and token writes.
    pub concurrency: usize,
    /// Budget re-evaluations after usage ledger changes are at least this far apart.
    pub budget_interval: Duration,
}

impl Default for Timing {
    fn default() -> Self {
        Self {
            quiet: Duration::from_millis(50),
            max_delay: Duration::from_millis(500),
            resync: Duration::from_secs(300),
            retry: Duration::from_millis(500),
            concurrency: 16,
            budget_interval: Duration::from_secs(2),
        }
    }
}

/// What one pass did, for logs, metrics and tests.
#[derive(Clone, Debug, Default)]
pub struct PassReport {
    /// What was written.
    pub written: Written,
    /// Tokens issued or rotated.
    pub issued: usize,
    /// Statuses applied.
    pub statuses: usize,
    /// Steps that failed (retried).
    pub failures: usize,
    /// Compile time.
    pub compile_time: Duration,
    /// Time spent per phase: reading the stores, compiling, writing the config, issuing
    /// tokens, writing statuses.
    pub phases: [Duration; 5],
    /// Live tokens in the compiled config.
    pub tokens: usize,
    /// Services in the compiled config.
    pub services: usize,
}

/// The loop's state.
pub struct Reconciler {
    client: Client,
    stores: Stores,
    outputs: Outputs,
    provider_secrets: ProviderSecrets,
    recorder: Option<Recorder>,
    metrics: Metrics,
    timing: Timing,
    dirty: Arc<Notify>,
    /// The last pass's report, for readiness and tests.
    reports: watch::Sender<Option<Arc<PassReport>>>,
    /// The usage ledger, watched once the loop runs.
    ledger: Option<LedgerWatch>,
    budgets: BudgetTracker,
}

impl Reconciler {
    /// A loop over these stores, writing through `outputs`.
    pub fn new(
        client: Client,
        stores: Stores,
        outputs: Outputs,
        recorder: Option<Recorder>,
        metrics: Metrics,
        timing: Timing,
        dirty: Arc<Notify>,
    ) -> Self {
        let (reports, _) = watch::channel(None);
        Self {
            client,
            stores,
            outputs,
            provider_secrets: ProviderSecrets::default(),
            recorder,
            metrics,
            timing,
            dirty,
            reports,
            ledger: None,
            budgets: BudgetTracker::default(),
        }
    }

    /// Reports of every completed pass (the latest one).
    pub fn reports(&self) -> watch::Receiver<Option<Arc<PassReport>>> {
        self.reports.subscribe()
    }

    /// Runs until the task is dropped.
    pub async fn run(mut self) {
        self.stores.wait_ready().await;
        tracing::info!("caches synced; reconciling");
        // Dropped with this future, which ends the ledger watch.
        let mut watches = JoinSet::new();
        let ledger_changed = Arc::new(Notify::new());
        self.ledger = Some(LedgerWatch::start(&self.client, self.outputs.namespace(), &ledger_changed, &mut watches));
        // The first pass should see the spend; a ledger that cannot be listed (RBAC, say) only
        // delays it: the Budgets are evaluated once the ledger arrives.
        let _ = tokio::time::timeout(LEDGER_SYNC_WAIT, ledger_changed.notified()).await;
        let mut schedule = BudgetSchedule::new(
            self.timing.budget_interval,
            self.timing.quiet,
            tokio::time::Instant::now(),
            unix_ms_now(),
        );
        let mut retry = self.timing.retry;
        loop {
            let started = Instant::now();
            let (report, next_expiry) = self.pass().await;
            let failed = report.failures > 0;
            tracing::info!(
                took_ms = started.elapsed().as_millis() as u64,
                compile_ms = report.compile_time.as_secs_f64() * 1e3,
                config_bytes = report.written.config_bytes,
                config_changed = report.written.config_changed,
                keys_changed = report.written.keys_changed,
                issued = report.issued,
                statuses = report.statuses,
                failures = report.failures,
                "reconciled"
            );
            self.reports.send_replace(Some(Arc::new(report)));
            let mut wait = if failed { retry } else { self.timing.resync };
            retry = if failed { (retry * 2).min(self.timing.resync) } else { self.timing.retry };
            if let Some(expiry) = next_expiry {
                wait = wait.min(expiry);
            }
            schedule.evaluated(tokio::time::Instant::now(), unix_ms_now());
            let next_pass = tokio::time::Instant::now() + wait;
            loop {
                tokio::select! {
                    () = self.dirty.notified() => {
                        self.settle().await;
                        break;
                    }
                    () = tokio::time::sleep_until(next_pass) => break,
                    () = ledger_changed.notified() => schedule.ledger_changed(tokio::time::Instant::now()),
                    () = tokio::time::sleep_until(schedule.due()) => {
                        let (written, failures) = self.budget_pass().await;
                        tracing::debug!(statuses = written, failures, "budgets evaluated");
                        schedule.evaluated(tokio::time::Instant::now(), unix_ms_now());
                    }
                }
            }
        }
    }

    /// Re-evaluates the Budgets alone against the ledger, keeping what the last compilation
    /// said about them. Returns `(written, failures)`.
    pub async fn budget_pass(&mut self) -> (usize, usize) {
        let Some(ledger) = &self.ledger else { return (0, 0) };
        let Some(read) = ledger.read() else { return (0, 0) };
        let location = ledger.location();
        let sink = Sink {
            client: &self.client,
            recorder: self.recorder.as_ref(),
            metrics: &self.metrics,
            concurrency: self.timing.concurrency,
        };
        let base = |b: &uprox_crds::Budget| b.status.clone().unwrap_or_default();
        let now = Time(Timestamp::now());
        self.budgets.sync(&sink, &self.stores.budgets.state(), base, Some((&read, &location)), &now).await
    }

    /// Waits until changes stop arriving for `quiet`, or `max_delay` has passed.
    async fn settle(&self) {
        let deadline = tokio::time::Instant::now() + self.timing.max_delay;
        loop {
            let quiet_end = (tokio::time::Instant::now() + self.timing.quiet).min(deadline);
            tokio::select! {
                () = self.dirty.notified() => {
                    if tokio::time::Instant::now() >= deadline {
                        return;
                    }
                }
                () = tokio::time::sleep_until(quiet_end) => return,
            }
        }
    }

    /// One pass. Returns its report and how long until the next token expiry, if any.
    pub async fn pass(&mut self) -> (PassReport, Option<Duration>) {
        let mut report = PassReport::default();
        let mut phase = Instant::now();
        let mut lap = |i: usize, report: &mut PassReport| {
            report.phases[i] = phase.elapsed();
            phase = Instant::now();
        };
        let mut resources = self.stores.resources();
        let wanted = provider_secrets::wanted(&resources.providers);
        let (provider_secrets, complete) =
            self.provider_secrets.refresh(&self.client, &wanted, &self.stores.secret_meta).await;
        if !complete {
            report.failures += 1;
            self.metrics.failures.with_label_values(&["Provider", "SecretReadFailed"]).inc();
        }
        resources.secrets.extend(provider_secrets);
        lap(0, &mut report);

        let started = Instant::now();
        let compiled = compile(&resources.inputs());
        report.compile_time = started.elapsed();
        report.tokens = compiled.config.tokens.len();
        report.services = compiled.config.services.len();
        self.metrics.compiles.inc();
        self.metrics.compile_duration.observe(report.compile_time.as_secs_f64());
        self.record_diagnostics(&compiled);
        lap(1, &mut report);

        match self.outputs.write(&compiled).await {
            Ok(written) => {
                self.metrics.config_bytes.set(written.config_bytes as i64);
                report.written = written;
            }
            Err(e) => {
                tracing::error!(error = %e, "cannot write the compiled config; the gateways keep the last one");
                self.metrics.failures.with_label_values(&["Config", "WriteFailed"]).inc();
                report.failures += 1;
            }
        }

        lap(2, &mut report);
        let now = Timestamp::now();
        let (issued, issue_failures) = self.issue_tokens(&resources.tokens, &now.to_string()).await;
        report.issued = issued;
        report.failures += issue_failures;
        lap(3, &mut report);

        let (statuses, status_failures) = self.write_statuses(&compiled, &Time(now)).await;
        report.statuses = statuses;
        report.failures += status_failures;
        lap(4, &mut report);

        let next_expiry = resources
            .tokens
            .iter()
            .filter_map(|t| t.spec.expires_at.as_ref())
            .filter(|t| t.0 > now)
            .map(|t| t.0.duration_since(now).unsigned_abs())
            .min()
            .map(|d| d + Duration::from_millis(100));
        (report, next_expiry)
    }

    fn record_diagnostics(&self, compiled: &Compiled) {
        self.metrics.diagnostics.reset();
        for d in &compiled.diagnostics {
            let severity = if d.is_error() { "error" } else { "warning" };
            self.metrics.diagnostics.with_label_values(&[d.kind, severity]).inc();
        }
    }

    async fn issue_tokens(&self, machine_tokens: &[uprox_crds::MachineToken], now: &str) -> (usize, usize) {
        // Collected first: a lazy iterator of closures in the stream trips the compiler's
        // higher-ranked Send check when the loop is spawned.
        let mut work = Vec::new();
        for mt in machine_tokens.iter().filter(|mt| !mt.spec.revoked) {
            let namespace = mt.metadata.namespace.as_deref().unwrap_or_default();
            let existing = self.stores.token_secret(namespace, &mt.secret_name());
            work.push(async move { (mt, tokens::issue(&self.client, mt, existing.as_deref(), now).await) });
        }
        let mut issued = 0;
        let mut failures = 0;
        let mut results = stream::iter(work).buffer_unordered(self.timing.concurrency);
        while let Some((mt, outcome)) = results.next().await {
            let (reason, note) = match outcome {
                Ok(Issue::Unchanged) => continue,
                Ok(Issue::Issued { display }) => {
                    ("Issued", format!("issued token {display} into Secret {}", mt.secret_name()))
                }
                Ok(Issue::Rotated { display }) => (
                    "Rotated",
                    format!(
                        "rotation {}: issued token {display} into Secret {}; the previous token is no longer accepted",
                        mt.spec.rotation,
                        mt.secret_name()
                    ),
                ),
                Err(e) => {
                    tracing::warn!(token = %status::id_of(mt), error = %e, "cannot issue a token");
                    self.metrics.failures.with_label_values(&["MachineToken", "IssueFailed"]).inc();
                    failures += 1;
                    continue;
                }
            };
            issued += 1;
            self.metrics.tokens_issued.inc();
            tracing::info!(token = %status::id_of(mt), "{note}");
            if let Some(recorder) = &self.recorder {
                let event = Event {
                    type_: EventType::Normal,
                    reason: reason.to_owned(),
                    note: Some(note),
                    action: "IssueToken".to_owned(),
                    secondary: None,
                };
                if let Err(e) = recorder.publish(&event, &kube::Resource::object_ref(mt, &())).await {
                    tracing::debug!(error = %e, "cannot record an Event");
                }
            }
        }
        (issued, failures)
    }

    async fn write_statuses(&mut self, compiled: &Compiled, now: &Time) -> (usize, usize) {
        let index = Index::new(compiled);
        let mut written = 0;
        let mut failures = 0;
        let mut tally = |(w, f): (usize, usize)| {
            written += w;
            failures += f;
        };
        tally(self.sync(&self.stores.providers.state(), |p| status::provider(p, &index, now)).await);
        tally(self.sync(&self.stores.services.state(), |s| status::service(s, &index, now)).await);
        tally(self.sync(&self.stores.policies.state(), |p| status::policy(p, &index, now)).await);
        let read = self.ledger.as_ref().and_then(|l| Some((l.read()?, l.location())));
        let sink = Sink {
            client: &self.client,
            recorder: self.recorder.as_ref(),
            metrics: &self.metrics,
            concurrency: self.timing.concurrency,
        };
        let budgets = self.stores.budgets.state();
        let ledger = read.as_ref().map(|(r, l)| (r, l.as_str()));
        tally(self.budgets.sync(&sink, &budgets, |b| status::budget(b, &index, now), ledger, now).await);
        let secret = |mt: &uprox_crds::MachineToken| {
            self.stores.token_secret(mt.metadata.namespace.as_deref().unwrap_or_default(), &mt.secret_name())
        };
        tally(
            self.sync(&self.stores.tokens.state(), |mt| status::machine_token(mt, secret(mt).as_deref(), &index, now))
                .await,
        );
        (written, failures)
    }

    /// Applies the statuses of one kind that changed.
    async fn sync<K: WithStatus>(&self, objects: &[Arc<K>], desired: impl Fn(&K) -> K::Status) -> (usize, usize) {
        let kind = K::kind(&());
        let started = Instant::now();
        let changed: Vec<(&K, K::Status)> = objects
            .iter()
            .map(|o| (o.as_ref(), desired(o)))
            .filter(|(o, d)| status_writer::needs_write(*o, d))
            .collect();
        let count = changed.len();
        let mut writes = Vec::with_capacity(count);
        for (object, status) in &changed {
            let object: &K = object;
            writes.push(async move {
                status_writer::write(&self.client, self.recorder.as_ref(), object, status)
                    .await
                    .map_err(|e| (object, e))
            });
        }
        let mut failures = 0;
        let mut results = stream::iter(writes).buffer_unordered(self.timing.concurrency);
        while let Some(result) = results.next().await {
            if let Err((object, e)) = result {
                // A 404 is an object deleted meanwhile: nothing to retry.
                if matches!(&e, kube::Error::Api(s) if s.code == 404) {
                    continue;
                }
                tracing::warn!(kind = %kind, object = %status::id_of(object), error = %e, "cannot write status");
                self.metrics.failures.with_label_values(&[kind.as_ref(), "StatusWriteFailed"]).inc();
                failures += 1;
            }
        }
        self.metrics.reconciles.with_label_values(&[kind.as_ref()]).inc_by(objects.len() as u64);
        self.metrics.reconcile_duration.with_label_values(&[kind.as_ref()]).observe(started.elapsed().as_secs_f64());
        (count - failures, failures)
    }
}
