//! The meter of one request: created after routing (budgets checked, an estimate reserved),
//! carried by the upstream call into the relay body, fed every frame the upstream sends, and
//! settled exactly once — when the answer ends, fails, or the client goes away.
//!
//! Settling prices the usage the provider reported ([`UsageReader`]) at the price of the model
//! the answer names (the requested model's price when that one has none; unpriced → $0,
//! counted), adds the cost to the Service's meter, charges the tokens to the caller's
//! tokens-per-minute limits, releases the concurrency slots and the budget reservations.
//!
//! When the answer was cut short (the client left mid-stream, the upstream broke off) or
//! reported no usage, the tokens are estimated: the prompt from the request size (4 bytes a
//! token, which over-counts JSON), the output from the number of stream chunks relayed (one
//! event of one token each for OpenAI streams) or the usage read so far (Anthropic reports the
//! prompt first).
//! Upstream errors (non-2xx) cost nothing.

use std::sync::Arc;

use http::HeaderValue;
use uprox_crds::prices::{Catalog, Price, Usage, cost};

use super::budget;
use super::scan::{UsageReader, Wire};
use crate::error::GatewayError;
use crate::limits::Admission;
use crate::snapshot::{Route, Snapshot};

/// Output tokens reserved for a request that sets no maximum.
pub const DEFAULT_OUTPUT_ESTIMATE: u64 = 4096;
/// Request bytes per estimated prompt token.
const BYTES_PER_TOKEN: u64 = 4;

/// What [`start`] needs to know about a request.
pub struct Request<'a> {
    /// The routed provider and key.
    pub route: Route,
    /// The requested model (or Azure deployment).
    pub model: &'a str,
    /// The upstream wire format of the answer.
    pub wire: Wire,
    /// Size of the request body sent upstream.
    pub body_len: usize,
    /// The request's output maximum (`max_tokens`, `max_completion_tokens`,
    /// `max_output_tokens`), if any.
    pub max_output: Option<u64>,
}

/// What a request's answer took, reported by its meter when it settles (before the body it
/// lives in ends), for the response cache and the audit log.
#[derive(Debug, Default, Clone)]
pub struct Report(Arc<std::sync::OnceLock<Made>>);

/// What a request's answer took.
#[derive(Debug)]
pub struct Made {
    /// Pico-USD.
    pub cost_pico_usd: u128,
    /// The tokens.
    pub usage: Usage,
    /// The model the answer names (the requested one when it names none).
    pub model: Box<str>,
    /// The tokens are an estimate: the answer was cut short or reported no usage.
    pub estimated: bool,
}

impl Report {
    /// Sets the report; only the first one counts.
    pub fn set(&self, made: Made) {
        let _ = self.0.set(made);
    }

    /// The report, once the meter has settled.
    pub fn get(&self) -> Option<&Made> {
        self.0.get()
    }
}

/// See the module documentation.
pub struct Meter {
    snapshot: Arc<Snapshot>,
    service: usize,
    provider: usize,
    wire: Wire,
    requested: Box<str>,
    price: Option<Price>,
    prompt_estimate: u64,
    reserved: u64,
    reader: Option<UsageReader>,
    /// The answer is an event stream.
    sse: bool,
    /// SSE chunks relayed, for estimates.
    events: u64,
    bytes: u64,
    /// The upstream answered 2xx.
    ok: bool,
    /// The upstream body ended normally.
    completed: bool,
    admission: Option<Admission>,
    settled: bool,
    /// Told what the answer took.
    report: Option<Report>,
}

impl std::fmt::Debug for Meter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Meter").field("service", &self.service).field("model", &self.requested).finish()
    }
}

/// The built-in price catalog (empty if it failed to load, which a test rules out).
pub fn catalog() -> &'static Catalog {
    static EMPTY: std::sync::OnceLock<Catalog> = std::sync::OnceLock::new();
    Catalog::builtin().unwrap_or_else(|_| EMPTY.get_or_init(Catalog::default))
}

/// Checks the caller's Budgets and starts metering a request of Service `service`: `Err` with
/// 402 when a blocking Budget is spent; otherwise the meter, holding `admission` and a
/// reservation, and a warning header to send when a Budget is past a threshold.
pub fn start(
    snapshot: &Arc<Snapshot>,
    service: usize,
    request: Request<'_>,
    admission: Option<Admission>,
    now: i64,
) -> Result<(Meter, Option<HeaderValue>), GatewayError> {
    let provider = &snapshot.providers[request.route.provider];
    let price = provider.price(request.model);
    let prompt_estimate = request.body_len as u64 / BYTES_PER_TOKEN;
    let budgets = &snapshot.services[service].budgets;
    let reserved = if budgets.is_empty() {
        0
    } else {
        let output = match request.wire {
            Wire::OpenAiEmbeddings => 0,
            _ => request.max_output.unwrap_or(DEFAULT_OUTPUT_ESTIMATE),
        };
        let estimate = cost(price.as_ref(), &Usage { input: prompt_estimate, output, ..Usage::default() });
        u64::try_from(estimate.pico_usd).unwrap_or(u64::MAX)
    };
    // Reserved in every Budget, or refused with nothing reserved.
    let warning = budget::admit(snapshot, service, now, reserved).map_err(GatewayError::BudgetExceeded)?;
    let meter = Meter {
        snapshot: snapshot.clone(),
        service,
        provider: request.route.provider,
        wire: request.wire,
        requested: request.model.into(),
        price,
        prompt_estimate,
        reserved,
        reader: None,
        sse: false,
        events: 0,
        bytes: 0,
        ok: false,
        completed: false,
        admission,
        settled: false,
        report: None,
    };
    Ok((meter, warning))
}

impl Meter {
    /// The upstream answered with `status`; its body is SSE when `sse`.
    pub fn answered(&mut self, status: http::StatusCode, sse: bool) {
        self.ok = status.is_success();
        self.sse = sse;
        if self.ok {
            self.reader = Some(UsageReader::new(self.wire, sse));
        }
    }

    /// Reports what the answer cost to `report` when the meter settles.
    pub fn report_to(&mut self, report: Report) {
        self.report = Some(report);
    }

    /// The wire format of the answer.
    pub fn wire(&self) -> Wire {
        self.wire
    }

    /// One frame of the upstream body. Returns whether it may hold part of a usage object.
    pub fn feed(&mut self, data: &[u8]) -> bool {
        self.bytes += data.len() as u64;
        // Upstreams write one event per chunk; counting chunks costs nothing, counting `data:`
        // lines would cost a search of every byte.
        if self.sse {
            self.events += 1;
        }
        self.reader.as_mut().is_none_or(|reader| reader.feed(data))
    }

    /// The upstream body ended normally.
    pub fn completed(&mut self) {
        self.completed = true;
        self.settle();
    }

    /// The tokens to charge: as reported, else estimated (see the module documentation).
    fn usage(&self) -> Option<Usage> {
        if !self.ok || self.bytes == 0 {
            return None;
        }
        let read = self.reader.as_ref().and_then(UsageReader::usage);
        match read {
            Some(usage) if self.completed => Some(usage),
            read => {
                let mut usage = read.unwrap_or_default();
                if usage.prompt_tokens() == 0 {
                    usage.input = self.prompt_estimate;
                }
                usage.output = usage.output.max(self.events);
                Some(usage)
            }
        }
    }

    /// Prices and records the request, releases what it held. Runs once.
    pub fn settle(&mut self) {
        if std::mem::replace(&mut self.settled, true) {
            return;
        }
        let snapshot = &self.snapshot;
        if let Some(usage) = self.usage() {
            let entry = &snapshot.providers[self.provider];
            let reported = self.reader.as_ref().and_then(UsageReader::model).filter(|m| *m != &*self.requested);
            let reported_price = reported.and_then(|m| entry.price(m).map(|p| (p, m)));
            let (price, model) = match &reported_price {
                Some((price, model)) => (Some(price), *model),
                None => (self.price.as_ref(), reported.unwrap_or(&self.requested)),
            };
            let cost = cost(price, &usage);
            snapshot.services[self.service].meter.record(&entry.name, model, cost.pico_usd, price.is_some());
            if let Some(report) = &self.report {
                let estimated = !self.completed || self.reader.as_ref().and_then(UsageReader::usage).is_none();
                report.set(Made { cost_pico_usd: cost.pico_usd, usage, model: model.into(), estimated });
            }
            if let Some(admission) = &self.admission {
                admission.charge(usage.total_tokens());
            }
        }
        for &b in snapshot.services[self.service].budgets.iter() {
            snapshot.budgets[b].meter.release(self.reserved);
        }
        self.admission = None;
    }
}

impl Drop for Meter {
    fn drop(&mut self) {
        self.settle();
    }
}
