//! The money units: [`Rate`] (a price per million tokens, held as an integer of micro-USD per
//! million tokens, which is the same number as pico-USD per token) and [`Price`], the rates of
//! one model. Parsing and printing decimal strings lives here so the catalog file, the Provider
//! spec and the compiled config all spell prices the same way.
//!
//! Nothing here is a float: `"2.50"` becomes `Rate(2_500_000)` and prints back as `"2.5"`.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

/// Decimal digits kept after the point of a USD-per-million-tokens price.
pub const RATE_DECIMALS: u32 = 6;
/// The regular expression every price string must match: up to six digits before the point
/// and up to six after it (USD per million tokens, so the smallest step is $0.000001 per million
/// tokens and the largest price $999,999.999999 per million tokens).
pub const RATE_REGEX: &str = r"^[0-9]{1,6}(\.[0-9]{1,6})?$";

/// A price in USD per million tokens, held exactly as micro-USD per million tokens — which is
/// the same integer as pico-USD (10⁻¹² USD) per token, so `tokens × rate` is an exact pico-USD
/// amount.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Rate(u64);

impl Rate {
    /// Free.
    pub const ZERO: Rate = Rate(0);

    /// A rate from micro-USD per million tokens (= pico-USD per token).
    pub const fn from_micro_usd_per_mtok(micro: u64) -> Self {
        Rate(micro)
    }

    /// Micro-USD per million tokens, which is also pico-USD per token.
    pub const fn pico_usd_per_token(self) -> u64 {
        self.0
    }
}

/// Why a price string was refused.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error(
    "`{0}` is not a price: write USD per million tokens as a decimal like \"2.50\" (up to 6 digits before and after the point)"
)]
pub struct InvalidRate(pub String);

impl FromStr for Rate {
    type Err = InvalidRate;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        parse_decimal(s, 6, RATE_DECIMALS)
            .and_then(|micro| u64::try_from(micro).ok())
            .map(Rate)
            .ok_or_else(|| InvalidRate(s.to_owned()))
    }
}

/// A plain decimal (`"12"`, `"0.5"`; no sign, no exponent, digits on both sides of a point) with
/// at most `max_whole` digits before the point and `scale` after it, as an integer of
/// `10^-scale` units: `parse_decimal("2.5", 6, 6) == Some(2_500_000)`. Every money string of the
/// API (prices, Budget ceilings, ledger amounts) is read with it.
pub fn parse_decimal(text: &str, max_whole: usize, scale: u32) -> Option<u128> {
    let (whole, frac) = match text.split_once('.') {
        Some((_, "")) => return None,
        Some(parts) => parts,
        None => (text, ""),
    };
    let digits = |part: &str| part.bytes().all(|b| b.is_ascii_digit());
    if whole.is_empty() || whole.len() > max_whole || !digits(whole) || frac.len() > scale as usize || !digits(frac) {
        return None;
    }
    let mut value: u128 = whole.parse().ok()?;
    for i in 0..scale as usize {
        let digit = frac.as_bytes().get(i).map_or(0, |b| u128::from(b - b'0'));
        value = value.checked_mul(10)?.checked_add(digit)?;
    }
    Some(value)
}

impl fmt::Display for Rate {
    /// The shortest exact decimal: `2.5`, `0.075`, `10`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&decimal(u128::from(self.0), RATE_DECIMALS))
    }
}

impl Serialize for Rate {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Rate {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = String::deserialize(deserializer)?;
        text.parse().map_err(serde::de::Error::custom)
    }
}

/// `value / 10^scale` as the shortest exact decimal string (no trailing zeros, no trailing
/// point): `decimal(1_500_000, 6) == "1.5"`.
pub(crate) fn decimal(value: u128, scale: u32) -> String {
    let unit = 10u128.pow(scale);
    let whole = value / unit;
    let frac = value % unit;
    if frac == 0 {
        return whole.to_string();
    }
    let frac = format!("{frac:0width$}", width = scale as usize);
    format!("{whole}.{}", frac.trim_end_matches('0'))
}

/// One set of rates: what a model costs in one context tier.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Rates {
    /// Uncached input (prompt) tokens.
    pub input: Rate,
    /// Output (completion) tokens, reasoning tokens included.
    pub output: Rate,
    /// Input tokens read from the provider's prompt cache; unset bills them at `input`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cached_input: Option<Rate>,
    /// Input tokens written to the prompt cache (Anthropic: the 5-minute cache); unset bills
    /// them at `input`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cache_write: Option<Rate>,
    /// Input tokens written to Anthropic's 1-hour cache; unset bills them at `cache_write`
    /// (else `input`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cache_write_1h: Option<Rate>,
}

impl Rates {
    /// The cache-read rate in effect.
    pub fn cached_input_rate(&self) -> Rate {
        self.cached_input.unwrap_or(self.input)
    }
    /// The 5-minute cache-write rate in effect.
    pub fn cache_write_rate(&self) -> Rate {
        self.cache_write.unwrap_or(self.input)
    }
    /// The 1-hour cache-write rate in effect.
    pub fn cache_write_1h_rate(&self) -> Rate {
        self.cache_write_1h.or(self.cache_write).unwrap_or(self.input)
    }
}

/// Rates that apply to a whole request once its prompt is longer than a threshold.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct LongContext {
    /// The tier applies when the prompt (uncached input + cache reads + cache writes) has
    /// strictly more tokens than this.
    pub above_input_tokens: u64,
    /// The rates of the long tier, for every token of the request (output included).
    #[serde(flatten)]
    pub rates: Rates,
}

/// What one model costs.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Price {
    /// The standard rates.
    #[serde(flatten)]
    pub rates: Rates,
    /// The long-context tier, when the provider has one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub long_context: Option<LongContext>,
}

impl Price {
    /// The rates for a request whose prompt has `prompt_tokens` tokens in all, and whether
    /// they are the long-context tier.
    pub fn rates_for(&self, prompt_tokens: u64) -> (&Rates, bool) {
        match &self.long_context {
            Some(long) if prompt_tokens > long.above_input_tokens => (&long.rates, true),
            _ => (&self.rates, false),
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn rates_parse_exactly_and_print_shortest() {
        for (text, micro, back) in [
            ("2.50", 2_500_000, "2.5"),
            ("0.075", 75_000, "0.075"),
            ("10", 10_000_000, "10"),
            ("0", 0, "0"),
            ("0.000001", 1, "0.000001"),
            ("999999.999999", 999_999_999_999, "999999.999999"),
        ] {
            let rate: Rate = text.parse().unwrap();
            assert_eq!(rate.pico_usd_per_token(), micro, "{text}");
            assert_eq!(rate.to_string(), back);
        }
    }

    #[test]
    fn malformed_rates_are_refused() {
        for text in ["", ".5", "5.", "-1", "1e3", "1.0000001", "1234567", " 1", "1,5", "NaN", "1.2.3"] {
            assert!(text.parse::<Rate>().is_err(), "{text:?} should be refused");
        }
    }

    #[test]
    fn rates_round_trip_through_json_as_strings() {
        let price = Price {
            rates: Rates {
                input: Rate(3_000_000),
                output: Rate(15_000_000),
                cached_input: Some(Rate(300_000)),
                ..Rates::default()
            },
            long_context: None,
        };
        let json = serde_json::to_value(price).unwrap();
        assert_eq!(json, serde_json::json!({"input": "3", "output": "15", "cachedInput": "0.3"}));
        assert_eq!(serde_json::from_value::<Price>(json).unwrap(), price);
    }
}
