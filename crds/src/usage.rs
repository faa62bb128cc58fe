//! The usage ledger: what every Service spent in the current UTC day and month, shared by every
//! gateway replica and read by the operator for Budget status.
//!
//! **Shape.** One document ([`Ledger`]) holding, per Service (`namespace/name`), the spend of
//! the current day and month as exact USD decimals (12 decimals: pico-USD), request counts and
//! the models served without a price. It records every Service, budgeted or not, so a Budget
//! created mid-month counts the month's spend from its first moment.
//!
//! **Where it lives.** In cluster mode a ConfigMap [`LEDGER_NAME`] in the gateway namespace
//! (key [`LEDGER_KEY`]); in standalone mode a file in the state directory. Both are written the
//! same way: read, [`Ledger::apply`] this replica's delta, write back only if nobody wrote in
//! between (the ConfigMap's `resourceVersion`, a file lock), else read again and retry.
//!
//! **Exactly once.** Each writer numbers its deltas; the ledger remembers the last number
//! applied per writer ([`Writer`]), so a delta whose write had an unknown outcome (a timeout
//! after the API server committed it) is applied at most once when retried. Nothing needs
//! merging when a replica goes away: its flushed spend is already in the shared totals, and
//! what it had not flushed is the documented loss bound (one flush interval of its spend).
//!
//! **Windows.** UTC calendar days and months ([`Windows`]). A delta counts in the windows of
//! the moment it is applied; an entry of an earlier window reads as zero and is reset by the
//! next write.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::ConfigMap;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use serde::{Deserialize, Serialize};

/// The ConfigMap holding the ledger, in the gateway namespace.
pub const LEDGER_NAME: &str = "uprox-usage";
/// Its data key.
pub const LEDGER_KEY: &str = "usage.json";
/// Label on the ledger ConfigMap.
pub const LEDGER_LABEL: &str = "uprox.dev/usage";
/// The ledger shape version written by this crate.
pub const LEDGER_VERSION: u32 = 1;
/// At most this many unpriced model names are kept per Service (the count goes on).
pub const MAX_UNPRICED_MODELS: usize = 20;
/// Writers not heard from for this long are forgotten.
pub const WRITER_RETENTION_SECS: i64 = 7 * 86_400;

/// The UTC calendar windows containing one instant.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Windows {
    /// Days since 1970-01-01.
    pub day: i64,
    /// Civil year.
    pub year: i64,
    /// Month, 1 to 12.
    pub month: u32,
    /// Day of month, 1 to 31.
    pub day_of_month: u32,
}

impl Windows {
    /// The windows containing `unix_secs`.
    pub fn at(unix_secs: i64) -> Self {
        let day = unix_secs.div_euclid(86_400);
        let (year, month, day_of_month) = civil_from_days(day);
        Windows { day, year, month, day_of_month }
    }

    /// `YYYY-MM-DD`.
    pub fn day_key(&self) -> String {
        format!("{:04}-{:02}-{:02}", self.year, self.month, self.day_of_month)
    }

    /// `YYYY-MM`.
    pub fn month_key(&self) -> String {
        format!("{:04}-{:02}", self.year, self.month)
    }

    /// When the day window ends (next midnight UTC), Unix seconds.
    pub fn day_resets_at(&self) -> i64 {
        (self.day + 1) * 86_400
    }

    /// When the month window ends (the 1st of next month, 00:00 UTC), Unix seconds.
    pub fn month_resets_at(&self) -> i64 {
        let (year, month) = if self.month == 12 { (self.year + 1, 1) } else { (self.year, self.month + 1) };
        days_from_civil(year, month, 1) * 86_400
    }
}

/// Days since 1970-01-01 of a civil date (proleptic Gregorian).
pub fn days_from_civil(year: i64, month: u32, day: u32) -> i64 {
    let y = if month <= 2 { year - 1 } else { year };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let m = i64::from(month);
    let doy = (153 * (if m > 2 { m - 3 } else { m + 9 }) + 2) / 5 + i64::from(day) - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// The civil date `(year, month, day)` of a day count since 1970-01-01.
pub fn civil_from_days(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let month = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let year = yoe + era * 400 + i64::from(month <= 2);
    (year, month, day)
}

/// An RFC 3339 UTC timestamp of Unix seconds, e.g. `2026-12-01T00:00:00Z`.
pub fn rfc3339(unix_secs: i64) -> String {
    let (year, month, day) = civil_from_days(unix_secs.div_euclid(86_400));
    let secs = unix_secs.rem_euclid(86_400);
    format!("{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}Z", secs / 3600, secs % 3600 / 60, secs % 60)
}

/// An exact USD amount held as pico-USD (10⁻¹² USD), written as a decimal string with up to 12
/// decimals (`"0.000123"`, `"25"`), so the figures in the ledger are readable and exact.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct PicoUsd(pub u128);

impl PicoUsd {
    /// Parses `"12.5"` (at most 12 decimals).
    pub fn parse(text: &str) -> Option<Self> {
        crate::prices::parse_decimal(text, 24, 12).map(PicoUsd)
    }
}

impl std::fmt::Display for PicoUsd {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&crate::prices::Cost::from_pico_usd(self.0).usd())
    }
}

impl Serialize for PicoUsd {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for PicoUsd {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = String::deserialize(deserializer)?;
        PicoUsd::parse(&text).ok_or_else(|| serde::de::Error::custom(format!("`{text}` is not a USD amount")))
    }
}

/// The whole ledger.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Ledger {
    /// Shape version ([`LEDGER_VERSION`]).
    pub version: u32,
    /// Increases by one with every applied delta: a reader keeps the newest it has seen.
    #[serde(default)]
    pub revision: u64,
    /// Spend per Service, by `namespace/name`.
    #[serde(default)]
    pub services: BTreeMap<String, ServiceUsage>,
    /// The last delta applied per writer (a gateway replica).
    #[serde(default)]
    pub writers: BTreeMap<String, Writer>,
}

/// What one Service spent in the current windows.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ServiceUsage {
    /// The day of `day_usd`, `YYYY-MM-DD`.
    pub day: String,
    /// USD spent on that day.
    #[serde(rename = "dayUSD")]
    pub day_usd: PicoUsd,
    /// Requests costed on that day.
    #[serde(default)]
    pub day_requests: u64,
    /// The month of `month_usd`, `YYYY-MM`.
    pub month: String,
    /// USD spent in that month.
    #[serde(rename = "monthUSD")]
    pub month_usd: PicoUsd,
    /// Requests costed in that month.
    #[serde(default)]
    pub month_requests: u64,
    /// Requests this month to models without a price (costed at 0), by model.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub unpriced: BTreeMap<String, u64>,
}

impl ServiceUsage {
    /// The spend of the windows `at`: `(day, month)` in pico-USD, zero for a window that has
    /// passed.
    pub fn spent(&self, at: &Windows) -> (u128, u128) {
        let day = if self.day == at.day_key() { self.day_usd.0 } else { 0 };
        let month = if self.month == at.month_key() { self.month_usd.0 } else { 0 };
        (day, month)
    }

    /// The unpriced models of the month `at` (empty when the entry is of an earlier month).
    pub fn unpriced_in(&self, at: &Windows) -> &BTreeMap<String, u64> {
        static EMPTY: BTreeMap<String, u64> = BTreeMap::new();
        if self.month == at.month_key() { &self.unpriced } else { &EMPTY }
    }
}

/// The last delta applied from one writer.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Writer {
    /// The writer's last applied sequence number.
    pub sequence: u64,
    /// When, in Unix seconds.
    pub at: i64,
}

/// Spend one writer adds in one write.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Delta {
    /// Per Service, by `namespace/name`.
    pub services: BTreeMap<String, ServiceDelta>,
}

/// Spend of one Service in a [`Delta`].
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ServiceDelta {
    /// Pico-USD.
    pub pico_usd: u128,
    /// Requests.
    pub requests: u64,
    /// Requests to models without a price, by model.
    pub unpriced: BTreeMap<String, u64>,
}

impl Delta {
    /// Whether it adds nothing.
    pub fn is_empty(&self) -> bool {
        self.services.values().all(|s| s.pico_usd == 0 && s.requests == 0 && s.unpriced.is_empty())
    }
}

/// Why a ledger could not be read.
#[derive(Debug, thiserror::Error)]
pub enum LedgerError {
    /// Not the ledger's JSON.
    #[error("the usage ledger does not parse: {0}")]
    Parse(#[from] serde_json::Error),
    /// A version this code does not know.
    #[error("the usage ledger has version {0}; this build reads version {LEDGER_VERSION}")]
    Version(u32),
    /// The ConfigMap lacks the data key.
    #[error("the ConfigMap has no `{LEDGER_KEY}`")]
    Missing,
}

impl Ledger {
    /// An empty ledger.
    pub fn new() -> Self {
        Ledger { version: LEDGER_VERSION, ..Ledger::default() }
    }

    /// Reads the JSON form.
    pub fn parse(json: &str) -> Result<Self, LedgerError> {
        let ledger: Ledger = serde_json::from_str(json)?;
        if ledger.version != LEDGER_VERSION {
            return Err(LedgerError::Version(ledger.version));
        }
        Ok(ledger)
    }

    /// The JSON form.
    pub fn to_json(&self) -> String {
        // A struct of strings, integers and maps with string keys always serialises.
        serde_json::to_string(self).unwrap_or_default()
    }

    /// Whether `writer` already applied delta `sequence`.
    pub fn has_applied(&self, writer: &str, sequence: u64) -> bool {
        self.writers.get(writer).is_some_and(|w| w.sequence >= sequence)
    }

    /// Adds `delta` from `writer` (its `sequence`-th) in the windows of `now` (Unix seconds).
    /// Returns `false`, changing nothing, when that writer's delta `sequence` was applied
    /// already. Entries of earlier windows are reset first; writers silent for
    /// [`WRITER_RETENTION_SECS`] are forgotten.
    pub fn apply(&mut self, writer: &str, sequence: u64, delta: &Delta, now: i64) -> bool {
        self.apply_at(writer, sequence, delta, now, now)
    }

    /// [`apply`](Self::apply) for spend made at `spent_at` and written at `now`: it counts in
    /// the windows of `spent_at`. An entry of an earlier window is reset to that window; one
    /// already in a later window (spend of yesterday written after today's) keeps its day and
    /// takes the spend into its month only when that is the same month.
    pub fn apply_at(&mut self, writer: &str, sequence: u64, delta: &Delta, spent_at: i64, now: i64) -> bool {
        if self.has_applied(writer, sequence) {
            return false;
        }
        let at = Windows::at(spent_at);
        let (day, month) = (at.day_key(), at.month_key());
        for (service, add) in &delta.services {
            let entry = self.services.entry(service.clone()).or_default();
            // Keys are `YYYY-MM-DD` and `YYYY-MM`: they compare as the dates do.
            if entry.day < day {
                entry.day.clone_from(&day);
                entry.day_usd = PicoUsd(0);
                entry.day_requests = 0;
            }
            if entry.month < month {
                entry.month.clone_from(&month);
                entry.month_usd = PicoUsd(0);
                entry.month_requests = 0;
                entry.unpriced.clear();
            }
            if entry.day == day {
                entry.day_usd.0 = entry.day_usd.0.saturating_add(add.pico_usd);
                entry.day_requests = entry.day_requests.saturating_add(add.requests);
            }
            if entry.month != month {
                continue;
            }
            entry.month_usd.0 = entry.month_usd.0.saturating_add(add.pico_usd);
            entry.month_requests = entry.month_requests.saturating_add(add.requests);
            for (model, count) in &add.unpriced {
                if let Some(n) = entry.unpriced.get_mut(model) {
                    *n = n.saturating_add(*count);
                } else if entry.unpriced.len() < MAX_UNPRICED_MODELS {
                    entry.unpriced.insert(model.clone(), *count);
                }
            }
        }
        self.writers.retain(|_, w| now - w.at < WRITER_RETENTION_SECS);
        self.writers.insert(writer.to_owned(), Writer { sequence, at: now });
        self.revision += 1;
        true
    }

    /// The spend of Service `service` (`namespace/name`) in the windows `at`, `(day, month)`
    /// in pico-USD.
    pub fn spent(&self, service: &str, at: &Windows) -> (u128, u128) {
        self.services.get(service).map_or((0, 0), |s| s.spent(at))
    }

    /// The ledger ConfigMap in `namespace`.
    pub fn to_config_map(&self, namespace: &str) -> ConfigMap {
        ConfigMap {
            metadata: ObjectMeta {
                name: Some(LEDGER_NAME.to_owned()),
                namespace: Some(namespace.to_owned()),
                labels: Some(BTreeMap::from([(LEDGER_LABEL.to_owned(), "true".to_owned())])),
                ..ObjectMeta::default()
            },
            data: Some(BTreeMap::from([(LEDGER_KEY.to_owned(), self.to_json())])),
            ..ConfigMap::default()
        }
    }

    /// Reads the ledger ConfigMap.
    pub fn from_config_map(config_map: &ConfigMap) -> Result<Self, LedgerError> {
        let json = config_map.data.as_ref().and_then(|d| d.get(LEDGER_KEY)).ok_or(LedgerError::Missing)?;
        Ledger::parse(json)
    }
}

/// The key of a Service in the ledger: `namespace/name`.
pub fn service_key(namespace: &str, name: &str) -> String {
    format!("{namespace}/{name}")
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use crate::prices::PICO_PER_USD;

    fn delta(service: &str, pico: u128) -> Delta {
        Delta {
            services: BTreeMap::from([(
                service.to_owned(),
                ServiceDelta { pico_usd: pico, requests: 1, unpriced: BTreeMap::new() },
            )]),
        }
    }

    // 2026-11-27T18:00:00Z
    const NOW: i64 = 1_795_802_400;

    #[test]
    fn windows_are_utc_calendar_days_and_months() {
        let at = Windows::at(NOW);
        assert_eq!((at.day_key(), at.month_key()), ("2026-11-27".to_owned(), "2026-11".to_owned()));
        assert_eq!(rfc3339(at.day_resets_at()), "2026-11-28T00:00:00Z");
        assert_eq!(rfc3339(at.month_resets_at()), "2026-12-01T00:00:00Z");
        let december = Windows::at(days_from_civil(2026, 12, 31) * 86_400 + 86_399);
        assert_eq!(december.day_key(), "2026-12-31");
        assert_eq!(rfc3339(december.month_resets_at()), "2027-01-01T00:00:00Z");
        assert_eq!(Windows::at(days_from_civil(2028, 2, 29) * 86_400).day_key(), "2028-02-29");
        for days in [-1, 0, 59, 365 * 30 + 7, 20_000, 100_000] {
            let (y, m, d) = civil_from_days(days);
            assert_eq!(days_from_civil(y, m, d), days);
        }
        assert_eq!(rfc3339(0), "1970-01-01T00:00:00Z");
    }

    #[test]
    fn amounts_are_exact_decimals() {
        for (text, pico) in [("0", 0), ("25", 25 * PICO_PER_USD), ("0.000000000001", 1), ("1.5", 1_500_000_000_000)] {
            assert_eq!(PicoUsd::parse(text), Some(PicoUsd(pico)), "{text}");
            assert_eq!(PicoUsd(pico).to_string(), text.trim_end_matches(".0"));
        }
        for bad in ["", "1.", ".5", "-1", "1e3", "0.0000000000001", "x"] {
            assert_eq!(PicoUsd::parse(bad), None, "{bad}");
        }
    }

    #[test]
    fn deltas_add_once_per_writer_sequence() {
        let mut ledger = Ledger::new();
        assert!(ledger.apply("a", 1, &delta("t/s", 5), NOW));
        assert!(!ledger.apply("a", 1, &delta("t/s", 5), NOW), "a retried delta is not counted twice");
        assert!(ledger.apply("b", 1, &delta("t/s", 7), NOW));
        assert!(ledger.apply("a", 2, &delta("t/s", 1), NOW));
        let at = Windows::at(NOW);
        assert_eq!(ledger.spent("t/s", &at), (13, 13));
        assert_eq!(ledger.revision, 3);
        assert_eq!(ledger.services["t/s"].day_requests, 3);
        let back = Ledger::parse(&ledger.to_json()).unwrap();
        assert_eq!(back, ledger);
        assert_eq!(Ledger::from_config_map(&ledger.to_config_map("uprox")).unwrap(), ledger);
    }

    #[test]
    fn windows_roll_over() {
        let mut ledger = Ledger::new();
        ledger.apply("a", 1, &delta("t/s", 5), NOW);
        let tomorrow = NOW + 86_400;
        assert_eq!(ledger.spent("t/s", &Windows::at(tomorrow)), (0, 5), "a new day keeps the month");
        ledger.apply("a", 2, &delta("t/s", 2), tomorrow);
        assert_eq!(ledger.spent("t/s", &Windows::at(tomorrow)), (2, 7));
        let next_month = days_from_civil(2026, 12, 1) * 86_400;
        assert_eq!(ledger.spent("t/s", &Windows::at(next_month)), (0, 0));
    }

    #[test]
    fn late_spend_counts_in_its_own_window() {
        let mut ledger = Ledger::new();
        let tomorrow = NOW + 86_400;
        ledger.apply("a", 1, &delta("t/s", 5), tomorrow);
        // Spend of today written after tomorrow's: today's total is gone, the month takes it.
        ledger.apply_at("a", 2, &delta("t/s", 2), NOW, tomorrow + 1);
        assert_eq!(ledger.spent("t/s", &Windows::at(tomorrow)), (5, 7));
        // Spend of the previous month written late changes neither window.
        let last_month = days_from_civil(2026, 10, 31) * 86_400;
        ledger.apply_at("a", 3, &delta("t/s", 100), last_month, tomorrow + 2);
        assert_eq!(ledger.spent("t/s", &Windows::at(tomorrow)), (5, 7));
        assert_eq!(ledger.services["t/s"].month_requests, 2);
    }

    #[test]
    fn unpriced_models_are_bounded_and_writers_expire() {
        let mut ledger = Ledger::new();
        for i in 0..(MAX_UNPRICED_MODELS as u64 + 5) {
            let mut d = delta("t/s", 0);
            d.services.get_mut("t/s").unwrap().unpriced.insert(format!("m{i}"), 1);
            ledger.apply("a", i + 1, &d, NOW);
        }
        assert_eq!(ledger.services["t/s"].unpriced.len(), MAX_UNPRICED_MODELS);
        ledger.apply("b", 1, &delta("t/s", 0), NOW + WRITER_RETENTION_SECS + 1);
        assert!(!ledger.writers.contains_key("a"));
        assert!(Ledger::parse(r#"{"version":2}"#).is_err());
    }
}
