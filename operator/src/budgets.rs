//! Writing Budget statuses: the IO around [`budget_status::evaluate`]. For every Budget it
//! evaluates the status against the usage ledger, applies it when it changed, then sends the
//! alert Events of levels reached for the first time, updates the `uprox_budget_*` metrics,
//! and forgets the series of Budgets that are gone.
//!
//! Alert levels are persisted in the status; this tracker also remembers the levels it wrote
//! until its reflector shows them, so a pass that runs before the watch caught up does not
//! announce a level twice.

use std::collections::{BTreeSet, HashMap};
use std::sync::Arc;
use std::time::Instant;

use futures_util::StreamExt as _;
use futures_util::stream;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::runtime::events::Recorder;
use kube::{Client, Resource as _};
use uprox_crds::common::ObjectId;
use uprox_crds::{Budget, BudgetAlert, BudgetStatus, BudgetWindow};

use crate::budget_status::{self, Evaluation};
use crate::ledger::LedgerRead;
use crate::metrics::Metrics;
use crate::status;
use crate::status_writer;

/// Where statuses and Events go.
pub struct Sink<'a> {
    /// The API.
    pub client: &'a Client,
    /// Events, when recorded.
    pub recorder: Option<&'a Recorder>,
    /// Metrics.
    pub metrics: &'a Metrics,
    /// Concurrent writes.
    pub concurrency: usize,
}

/// The ledger as read for one pass and where it lives (for messages); `None` for the ledger
/// leaves the spend part of every status as it is.
pub type LedgerInput<'a> = Option<(&'a LedgerRead, &'a str)>;

/// What the tracker keeps between passes.
#[derive(Debug, Default)]
pub struct BudgetTracker {
    /// Alert levels written per Budget, with the Budget's uid.
    remembered: HashMap<ObjectId, (Option<String>, Vec<BudgetAlert>)>,
    /// Budgets with metric series.
    exported: BTreeSet<ObjectId>,
}

/// One status to apply.
struct Planned {
    budget: Arc<Budget>,
    id: ObjectId,
    evaluation: Evaluation,
}

impl BudgetTracker {
    /// Evaluates every Budget and applies the statuses that changed. `base` gives the part of
    /// a status that does not depend on the ledger. Returns `(written, failures)`.
    pub async fn sync(
        &mut self,
        sink: &Sink<'_>,
        budgets: &[Arc<Budget>],
        base: impl Fn(&Budget) -> BudgetStatus,
        ledger: LedgerInput<'_>,
        now: &Time,
    ) -> (usize, usize) {
        let started = Instant::now();
        let mut live = BTreeSet::new();
        let mut planned = Vec::new();
        for budget in budgets {
            let id = status::id_of(budget.as_ref());
            live.insert(id.clone());
            let evaluation = match ledger {
                None => {
                    Evaluation { status: base(budget), reached: Vec::new(), events: Vec::new(), gauges: Vec::new() }
                }
                Some((read, location)) => {
                    let remembered = self.remembered(&id, budget.metadata.uid.as_deref());
                    let evaluation = budget_status::evaluate(budget, base(budget), read, location, remembered, now);
                    export(sink.metrics, &id, &evaluation.gauges);
                    self.exported.insert(id.clone());
                    evaluation
                }
            };
            if status_writer::needs_write(budget.as_ref(), &evaluation.status) {
                planned.push(Planned { budget: budget.clone(), id, evaluation });
            }
        }

        let count = planned.len();
        let mut writes = Vec::with_capacity(count);
        for plan in planned {
            writes.push(async move {
                let result =
                    status_writer::write(sink.client, sink.recorder, plan.budget.as_ref(), &plan.evaluation.status)
                        .await;
                if result.is_ok()
                    && let Some(recorder) = sink.recorder
                {
                    let regarding = plan.budget.object_ref(&());
                    for event in &plan.evaluation.events {
                        tracing::info!(budget = %plan.id, reason = %event.reason, note = ?event.note, "budget alert");
                        if let Err(e) = recorder.publish(event, &regarding).await {
                            tracing::warn!(budget = %plan.id, error = %e, "cannot record a budget alert Event");
                        }
                    }
                }
                (plan, result)
            });
        }
        let mut failures = 0;
        let mut results = stream::iter(writes).buffer_unordered(sink.concurrency.max(1));
        while let Some((plan, result)) = results.next().await {
            match result {
                Ok(()) => {
                    for alert in &plan.evaluation.reached {
                        let threshold = alert.threshold.to_string();
                        let labels = [plan.id.namespace.as_str(), &plan.id.name, alert.window.as_str(), &threshold];
                        sink.metrics.budget_alerts.with_label_values(&labels).inc();
                    }
                    let uid = plan.budget.metadata.uid.clone();
                    self.remembered.insert(plan.id, (uid, plan.evaluation.status.alerts));
                }
                // A 404 is a Budget deleted meanwhile: nothing to retry.
                Err(kube::Error::Api(s)) if s.code == 404 => {}
                Err(e) => {
                    tracing::warn!(kind = "Budget", object = %plan.id, error = %e, "cannot write status");
                    sink.metrics.failures.with_label_values(&["Budget", "StatusWriteFailed"]).inc();
                    failures += 1;
                }
            }
        }

        self.remembered.retain(|id, _| live.contains(id));
        for gone in self.exported.difference(&live) {
            sink.metrics.forget_budget(&gone.namespace, &gone.name);
        }
        self.exported.retain(|id| live.contains(id));
        sink.metrics.reconciles.with_label_values(&["Budget"]).inc_by(budgets.len() as u64);
        sink.metrics.reconcile_duration.with_label_values(&["Budget"]).observe(started.elapsed().as_secs_f64());
        (count - failures, failures)
    }

    /// The levels this tracker wrote for the Budget `id` with `uid` (not those of a Budget of
    /// the same name that was deleted and created again).
    fn remembered(&self, id: &ObjectId, uid: Option<&str>) -> &[BudgetAlert] {
        match self.remembered.get(id) {
            Some((written_uid, alerts)) if written_uid.as_deref() == uid => alerts,
            _ => &[],
        }
    }
}

/// Sets the spend and ceiling gauges of one Budget.
fn export(metrics: &Metrics, id: &ObjectId, gauges: &[(BudgetWindow, f64, Option<f64>)]) {
    for (window, spend, limit) in gauges {
        let labels = [id.namespace.as_str(), id.name.as_str(), window.as_str()];
        metrics.budget_spend.with_label_values(&labels).set(*spend);
        match limit {
            Some(limit) => metrics.budget_limit.with_label_values(&labels).set(*limit),
            None => {
                let _ = metrics.budget_limit.remove_label_values(&labels);
            }
        }
    }
}
