//! Budget statuses from the usage ledger, end to end against the in-memory API server: the
//! reconcile loop sees the ledger ConfigMap change, writes spend, percent and conditions into
//! the Budget's status, sends one Event per alert level and window, and exports the
//! `uprox_budget_*` metrics until the Budget is deleted.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use k8s_openapi::api::core::v1::ConfigMap;
use k8s_openapi::api::events::v1::Event;
use kube::runtime::events::{Recorder, Reporter};
use tokio::sync::{Notify, watch};
use tokio::task::JoinSet;
use uprox_crds::budget::{BudgetAction, Usd};
use uprox_crds::usage::{Delta, Ledger, ServiceDelta};
use uprox_crds::{Budget, BudgetSpec, BudgetStatus, Service, ServiceSpec};
use uprox_operator::metrics::Metrics;
use uprox_operator::outputs::Outputs;
use uprox_operator::reconciler::{PassReport, Reconciler, Timing};
use uprox_operator::stores::{Scope, Stores};
use uprox_testkit::apiserver::FakeApiServer;

const GATEWAY: &str = "uprox-system";
const USD: u128 = 1_000_000_000_000;

async fn eventually<T>(what: &str, mut check: impl FnMut() -> Option<T>) -> T {
    let started = Instant::now();
    loop {
        if let Some(value) = check() {
            return value;
        }
        assert!(started.elapsed() < Duration::from_secs(60), "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn unix_now() -> i64 {
    SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_secs() as i64
}

/// The ledger after one delta of `team/app` per amount in `spent` (pico-USD), each with a
/// request to an unpriced model.
fn ledger(spent: &[u128]) -> ConfigMap {
    let mut ledger = Ledger::new();
    for (i, pico) in spent.iter().enumerate() {
        let service =
            ServiceDelta { pico_usd: *pico, requests: 1, unpriced: BTreeMap::from([("local-llm".to_owned(), 1)]) };
        let delta = Delta { services: BTreeMap::from([("team/app".to_owned(), service)]) };
        ledger.apply("gw-0", i as u64 + 1, &delta, unix_now());
    }
    ledger.to_config_map(GATEWAY)
}

fn budget_events(api: &FakeApiServer) -> Vec<(String, String)> {
    api.list::<Event>(Some("team"))
        .into_iter()
        .filter(|e| e.regarding.as_ref().and_then(|r| r.kind.as_deref()) == Some("Budget"))
        .filter(|e| e.reason.as_deref().is_some_and(|r| r.starts_with("Budget")))
        .map(|e| (e.reason.unwrap_or_default(), e.note.unwrap_or_default()))
        .collect()
}

fn status(api: &FakeApiServer) -> BudgetStatus {
    api.get::<Budget>(Some("team"), "team-budget").and_then(|b| b.status).unwrap_or_default()
}

fn condition(status: &BudgetStatus, type_: &str) -> Option<(String, String)> {
    status.conditions.iter().find(|c| c.type_ == type_).map(|c| (c.status.clone(), c.message.clone()))
}

/// The operator's reconcile loop against `api`, until dropped (as a restart or a new leader).
struct Operator {
    metrics: Metrics,
    reports: watch::Receiver<Option<Arc<PassReport>>>,
    _tasks: JoinSet<()>,
}

impl Operator {
    async fn start(api: &FakeApiServer) -> Self {
        let client = api.client();
        let mut tasks = JoinSet::new();
        let dirty = Arc::new(Notify::new());
        let stores = Stores::start(&client, &Scope::default(), &dirty, &mut tasks);
        let outputs = Outputs::open(client.clone(), GATEWAY).await.unwrap();
        let reporter = Reporter { controller: "uprox-operator".into(), instance: Some("test".into()) };
        let recorder = Recorder::new(client.clone(), reporter);
        let metrics = Metrics::new().unwrap();
        let timing = Timing { budget_interval: Duration::from_millis(300), ..Timing::default() };
        let reconciler = Reconciler::new(client, stores, outputs, Some(recorder), metrics.clone(), timing, dirty);
        let reports = reconciler.reports();
        tasks.spawn(reconciler.run());
        Self { metrics, reports, _tasks: tasks }
    }
}

fn daily_budget(action: BudgetAction, monthly: Option<&str>) -> Budget {
    let mut budget = Budget::new(
        "team-budget",
        BudgetSpec {
            services: vec!["app".into()],
            daily_usd: Some(Usd("10".into())),
            monthly_usd: monthly.map(|m| Usd(m.into())),
            alert_thresholds: vec![80, 100],
            action,
        },
    );
    budget.metadata.namespace = Some("team".into());
    budget
}

/// Waits until today's spend is `percent` of the ceiling.
async fn percent(api: &FakeApiServer, percent: u32) -> BudgetStatus {
    let what = format!("the daily spend at {percent}%");
    eventually(&what, || Some(status(api)).filter(|s| s.daily_percent == Some(percent))).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn budget_status_follows_the_ledger_with_one_event_per_level() {
    let api = FakeApiServer::start().await;
    let mut service = Service::new("app", ServiceSpec::default());
    service.metadata.namespace = Some("team".into());
    api.put(&service);
    api.put(&daily_budget(BudgetAction::Block, Some("300")));
    api.put(&ledger(&[5 * USD, 3 * USD + USD / 2]));
    let operator = Operator::start(&api).await;

    // 85% of the daily ceiling: spend, percent, Warning, and one threshold Event.
    let s = percent(&api, 85).await;
    assert_eq!(s.daily_spend_usd.as_deref(), Some("8.500000"));
    assert_eq!(s.daily_usage.as_deref(), Some("$8.50/$10 (85%)"));
    assert_eq!(s.monthly_percent, Some(2));
    assert!(s.daily_resets_at.as_deref().is_some_and(|t| t.ends_with("T00:00:00Z")));
    assert_eq!(condition(&s, "Warning").unwrap().0, "True");
    assert_eq!(condition(&s, "Exceeded").unwrap().0, "False");
    let (priced, message) = condition(&s, "Priced").unwrap();
    assert_eq!(priced, "False");
    assert!(message.contains("local-llm (2)"), "{message}");
    assert_eq!(condition(&s, "Ready").unwrap().0, "True", "the compiled conditions stay");
    let events = eventually("the threshold Event", || Some(budget_events(&api)).filter(|e| !e.is_empty())).await;
    assert_eq!(events.len(), 1, "{events:?}");
    assert_eq!(events[0].0, "BudgetThreshold");
    assert!(events[0].1.contains("85% of the $10 limit"), "{}", events[0].1);

    // A new operator (a restart, a new leader) reads what was announced from the status.
    drop(operator);
    let operator = Operator::start(&api).await;
    let (metrics, mut reports) = (operator.metrics.clone(), operator.reports.clone());
    api.put(&ledger(&[5 * USD, 4 * USD]));
    percent(&api, 90).await;
    assert_eq!(budget_events(&api).len(), 1, "a restart must not announce a level again");

    // Over the ceiling: Exceeded, and one more Event.
    api.put(&ledger(&[5 * USD, 4 * USD, 3 * USD / 2]));
    let s = percent(&api, 105).await;
    let (exceeded, message) = condition(&s, "Exceeded").unwrap();
    assert_eq!(exceeded, "True");
    assert!(message.contains("HTTP 402"), "{message}");
    let events = eventually("the exceeded Event", || Some(budget_events(&api)).filter(|e| e.len() >= 2)).await;
    assert_eq!(events.iter().filter(|e| e.0 == "BudgetExceeded").count(), 1, "{events:?}");

    // More spend: the Budgets alone are evaluated, nothing is compiled (a pass still due from
    // start-up, on a slow machine, is the one allowed).
    let compiles = metrics.compiles.get();
    api.put(&ledger(&[5 * USD, 4 * USD, 2 * USD]));
    percent(&api, 110).await;
    api.put(&ledger(&[5 * USD, 4 * USD, 2 * USD, USD / 2]));
    percent(&api, 115).await;
    assert!(metrics.compiles.get() <= compiles + 1, "a ledger change must not compile");

    // A full pass: no Event repeats.
    reports.borrow_and_update();
    let mut touched = service.clone();
    touched.spec.cache_ttl_seconds = Some(60);
    api.put(&touched);
    tokio::time::timeout(Duration::from_secs(60), reports.changed()).await.unwrap().unwrap();
    api.put(&ledger(&[5 * USD, 4 * USD, 2 * USD, USD / 2, USD]));
    percent(&api, 125).await;
    let events = budget_events(&api);
    assert_eq!(events.len(), 2, "one Event per level and window: {events:?}");
    assert_eq!(status(&api).alerts.len(), 2);

    let text = metrics.render();
    let spend = r#"uprox_budget_spend_usd{budget="team-budget",namespace="team",window="daily"} 12.5"#;
    assert!(text.contains(spend), "{text}");
    assert!(text.contains(r#"uprox_budget_limit_usd{budget="team-budget",namespace="team",window="monthly"} 300"#));
    assert!(text.contains(
        r#"uprox_budget_alerts_total{budget="team-budget",namespace="team",threshold="100",window="daily"} 1"#
    ));

    // A deleted Budget's series go away.
    api.remove::<Budget>(Some("team"), "team-budget");
    eventually("the series removed", || (!metrics.render().contains("team-budget")).then_some(())).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unreadable_ledger_reads_as_zero_with_a_reason() {
    let api = FakeApiServer::start().await;
    api.put(&daily_budget(BudgetAction::Alert, None));
    let mut broken = ledger(&[USD]);
    broken.data = Some(BTreeMap::from([("usage.json".to_owned(), "{not json".to_owned())]));
    api.put(&broken);
    let _operator = Operator::start(&api).await;

    let s = eventually("the status", || Some(status(&api)).filter(|s| condition(s, "SpendKnown").is_some())).await;
    assert_eq!(s.daily_spend_usd.as_deref(), Some("0.000000"));
    let (known, message) = condition(&s, "SpendKnown").unwrap();
    assert_eq!(known, "False");
    assert!(message.contains("uprox-system/uprox-usage") && message.contains("does not parse"), "{message}");

    // Repaired: the spend shows.
    api.put(&ledger(&[2 * USD]));
    let s = percent(&api, 20).await;
    assert_eq!(condition(&s, "SpendKnown").unwrap().0, "True");
}
