//! The exporter: one task on the control runtime looks at the queue every [`PACE`] and POSTs
//! what is waiting to the OTLP/HTTP endpoint, in batches of up to [`MAX_BATCH`] spans. It only
//! ever `try_recv`s, so a serving thread that queues a span never wakes it (a wake per request
//! would cost every request a system call). A batch the collector refuses with 429, 502, 503 or 504
//! (or that cannot reach it) is tried again twice, after 1 s and 2 s; then it is dropped and
//! counted. Failures are logged once when they start and once when export works again, not per
//! batch. At shutdown the queue is drained and sent within the time given.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use bytes::Bytes;
use http::{HeaderValue, Request, StatusCode, header};
use http_body_util::{BodyExt as _, Full};
use tokio::sync::{mpsc, oneshot};

use super::otlp;
use super::{Config, Counts};

/// The most spans in one export request.
pub const MAX_BATCH: usize = 512;
/// How often the queue is looked at.
const PACE: Duration = Duration::from_millis(200);
/// How long one export request may take.
const TIMEOUT: Duration = Duration::from_secs(10);
/// Waits before the second and third attempt of a batch.
const BACKOFF: [Duration; 2] = [Duration::from_secs(1), Duration::from_secs(2)];

/// The exporting task's state.
pub struct Exporter {
    pub(super) config: Config,
    pub(super) queue: mpsc::Receiver<Vec<u8>>,
    pub(super) stop: oneshot::Receiver<oneshot::Sender<()>>,
    pub(super) counts: Arc<Counts>,
    pub(super) client: hyper_util::client::legacy::Client<
        hyper_rustls::HttpsConnector<hyper_util::client::legacy::connect::HttpConnector>,
        Full<Bytes>,
    >,
    /// Whether the last export failed (to log changes, not every batch).
    pub(super) failing: bool,
}

impl Exporter {
    /// Runs until stopped; then drains the queue and answers the stop.
    pub async fn run(mut self) {
        let mut batch = Vec::with_capacity(MAX_BATCH);
        let mut pace = tokio::time::interval(PACE);
        pace.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                biased;
                done = &mut self.stop => {
                    while let Ok(span) = self.queue.try_recv() {
                        batch.push(span);
                        if batch.len() == MAX_BATCH {
                            self.export_once(&mut batch).await;
                        }
                    }
                    self.export_once(&mut batch).await;
                    if let Ok(done) = done {
                        let _ = done.send(());
                    }
                    return;
                }
                _ = pace.tick() => {}
            }
            loop {
                while batch.len() < MAX_BATCH {
                    let Ok(span) = self.queue.try_recv() else { break };
                    batch.push(span);
                }
                let full = batch.len() == MAX_BATCH;
                if batch.is_empty() {
                    break;
                }
                self.export(&mut batch).await;
                if !full {
                    break;
                }
            }
        }
    }

    /// Sends `batch` (emptying it), retrying as the module says.
    async fn export(&mut self, batch: &mut Vec<Vec<u8>>) {
        let body = self.encode(batch);
        let count = batch.len() as u64;
        batch.clear();
        let mut outcome = self.send(body.clone()).await;
        for wait in BACKOFF {
            match &outcome {
                Err(Failure { retry: true, .. }) => {
                    tokio::time::sleep(wait).await;
                    outcome = self.send(body.clone()).await;
                }
                _ => break,
            }
        }
        self.settle(outcome, count);
    }

    /// Sends `batch` once (at shutdown: no time for retries).
    async fn export_once(&mut self, batch: &mut Vec<Vec<u8>>) {
        if batch.is_empty() {
            return;
        }
        let body = self.encode(batch);
        let count = batch.len() as u64;
        batch.clear();
        let outcome = self.send(body).await;
        self.settle(outcome, count);
    }

    fn encode(&self, batch: &[Vec<u8>]) -> Bytes {
        Bytes::from(otlp::request(self.config.protocol, &self.config.resource, batch))
    }

    fn settle(&mut self, outcome: Result<(), Failure>, count: u64) {
        match outcome {
            Ok(()) => {
                self.counts.exported.fetch_add(count, Ordering::Relaxed);
                if self.failing {
                    tracing::info!(endpoint = %self.config.endpoint, "trace export works again");
                    self.failing = false;
                }
            }
            Err(failure) => {
                self.counts.failed.fetch_add(count, Ordering::Relaxed);
                if !self.failing {
                    tracing::warn!(endpoint = %self.config.endpoint, error = %failure.reason, spans = count, "trace export failed; spans are dropped until it works again");
                    self.failing = true;
                }
            }
        }
    }

    async fn send(&self, body: Bytes) -> Result<(), Failure> {
        let mut request = Request::new(Full::new(body));
        *request.method_mut() = http::Method::POST;
        *request.uri_mut() = self.config.endpoint.clone();
        let headers = request.headers_mut();
        headers.insert(header::CONTENT_TYPE, HeaderValue::from_static(self.config.protocol.content_type()));
        headers
            .insert(header::USER_AGENT, HeaderValue::from_static(concat!("uprox-gateway/", env!("CARGO_PKG_VERSION"))));
        for (name, value) in &self.config.headers {
            headers.insert(name, value.clone());
        }
        let response = match tokio::time::timeout(TIMEOUT, self.client.request(request)).await {
            Err(_) => return Err(Failure { retry: true, reason: format!("no answer within {}s", TIMEOUT.as_secs()) }),
            Ok(Err(e)) => return Err(Failure { retry: true, reason: crate::upstream::describe(&e).to_owned() }),
            Ok(Ok(r)) => r,
        };
        let status = response.status();
        // Read the (small) answer so the connection can be reused.
        let _ = tokio::time::timeout(TIMEOUT, response.into_body().collect()).await;
        if status.is_success() {
            return Ok(());
        }
        let retry = matches!(
            status,
            StatusCode::TOO_MANY_REQUESTS
                | StatusCode::BAD_GATEWAY
                | StatusCode::SERVICE_UNAVAILABLE
                | StatusCode::GATEWAY_TIMEOUT
        );
        Err(Failure { retry, reason: format!("the collector answered {status}") })
    }
}

/// Why an export failed.
struct Failure {
    retry: bool,
    reason: String,
}
