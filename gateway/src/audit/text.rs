//! Values of audit lines that are not plain strings or numbers, written straight into the line
//! by the serialiser (no intermediate `String`): RFC 3339 UTC timestamps
//! (`2026-11-27T22:20:10.091Z`, no time-zone database), USD amounts, IP addresses.

use std::fmt;
use std::time::{SystemTime, UNIX_EPOCH};

/// A UTC instant, shown with `digits` (3: milliseconds, 6: microseconds) of fractional seconds.
#[derive(Debug, Clone, Copy)]
pub struct Rfc3339 {
    /// Seconds since the Unix epoch (not before it: earlier instants show as the epoch).
    secs: u64,
    /// Nanoseconds within the second.
    nanos: u32,
    digits: u8,
}

impl Rfc3339 {
    /// Unix milliseconds, shown to the millisecond.
    pub fn from_millis(millis: u64) -> Self {
        Self { secs: millis / 1000, nanos: (millis % 1000) as u32 * 1_000_000, digits: 3 }
    }

    /// Now, shown to the microsecond.
    pub fn now() -> Self {
        let since = SystemTime::now().duration_since(UNIX_EPOCH).unwrap_or_default();
        Self { secs: since.as_secs(), nanos: since.subsec_nanos(), digits: 6 }
    }
}

impl fmt::Display for Rfc3339 {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let (year, month, day) = civil_from_days(self.secs / 86_400);
        let second_of_day = self.secs % 86_400;
        let (hour, minute, second) = (second_of_day / 3600, second_of_day / 60 % 60, second_of_day % 60);
        let fraction = match self.digits {
            3 => self.nanos / 1_000_000,
            _ => self.nanos / 1_000,
        };
        write!(
            f,
            "{year:04}-{month:02}-{day:02}T{hour:02}:{minute:02}:{second:02}.{fraction:0width$}Z",
            width = usize::from(self.digits)
        )
    }
}

/// Pico-USD shown as USD with the digits it needs: `0.0068`, `0`, `12.5` (as
/// `uprox_crds::prices::Cost::usd`).
#[derive(Debug, Clone, Copy)]
pub struct Usd(pub u128);

impl fmt::Display for Usd {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        const UNIT: u128 = 1_000_000_000_000;
        let (whole, mut fraction) = (self.0 / UNIT, self.0 % UNIT);
        write!(f, "{whole}")?;
        if fraction == 0 {
            return Ok(());
        }
        let mut digits = [0u8; 12];
        for d in digits.iter_mut().rev() {
            *d = b'0' + (fraction % 10) as u8;
            fraction /= 10;
        }
        let used = digits.iter().rposition(|d| *d != b'0').map_or(0, |i| i + 1);
        f.write_str(".")?;
        // ASCII digits.
        f.write_str(std::str::from_utf8(&digits[..used]).unwrap_or_default())
    }
}

/// Any `Display` value serialised as a string, written in place.
#[derive(Debug, Clone, Copy)]
pub struct Shown<T>(pub T);

impl<T: fmt::Display> serde::Serialize for Shown<T> {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(&self.0)
    }
}

/// The proleptic Gregorian date of a day count since 1970-01-01 (Howard Hinnant's algorithm).
fn civil_from_days(days: u64) -> (u64, u64, u64) {
    let z = days + 719_468;
    let era = z / 146_097;
    let day_of_era = z % 146_097;
    let year_of_era = (day_of_era - day_of_era / 1460 + day_of_era / 36_524 - day_of_era / 146_096) / 365;
    let day_of_year = day_of_era - (365 * year_of_era + year_of_era / 4 - year_of_era / 100);
    let mp = (5 * day_of_year + 2) / 153;
    let day = day_of_year - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = year_of_era + era * 400 + u64::from(month <= 2);
    (year, month, day)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    #[test]
    fn matches_jiff_across_the_calendar() {
        // Leap days, year and century boundaries, and a spread of ordinary instants.
        let mut samples: Vec<u64> =
            vec![0, 951_782_400_000, 951_868_799_999, 1_709_164_800_123, 4_107_542_399_999, 1_764_282_010_091];
        samples.extend((0..2000u64).map(|i| i * 2_147_483_647_001 % 7_258_118_400_000));
        for millis in samples {
            let ours = Rfc3339::from_millis(millis).to_string();
            let jiff = k8s_openapi::jiff::Timestamp::from_millisecond(millis as i64).unwrap();
            let theirs = format!("{jiff:.3}");
            assert_eq!(ours, theirs, "{millis}");
        }
    }

    #[test]
    fn usd_is_written_as_the_cost_type_writes_it() {
        for pico in
            [0u128, 1, 6_800_000_000, 1_000_000_000_000, 12_500_000_000_000, 999_999_999_999, u128::from(u64::MAX)]
        {
            let cost = uprox_crds::prices::Cost::from_pico_usd(pico).usd();
            assert_eq!(Usd(pico).to_string(), cost, "{pico}");
        }
        let ip: std::net::IpAddr = "2001:db8::1".parse().unwrap();
        assert_eq!(serde_json::to_string(&Shown(ip)).unwrap(), "\"2001:db8::1\"");
    }

    #[test]
    fn now_has_microseconds_and_serialises_as_a_string() {
        let text = serde_json::to_string(&Shown(Rfc3339::now())).unwrap();
        assert_eq!(text.len(), "\"2026-11-27T22:20:10.101557Z\"".len(), "{text}");
        assert!(text.ends_with("Z\""));
    }
}
