//! [`cost()`]: `Usage × Price` in exact integer pico-USD, and [`Cost`], which adds up exactly
//! and prints as a decimal USD string.

use std::iter::Sum;
use std::ops::{Add, AddAssign};

use super::rate::{Price, decimal};
use super::usage::Usage;

/// Pico-USD (10⁻¹² USD) per USD.
pub const PICO_PER_USD: u128 = 1_000_000_000_000;
/// Pico-USD per micro-USD (the unit of Budget ceilings in the config).
pub const PICO_PER_MICRO: u128 = 1_000_000;

/// What one or more requests cost.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Cost {
    /// The amount in pico-USD (10⁻¹² USD): exact.
    pub pico_usd: u128,
    /// How many of the requests summed had no price (counted at 0).
    pub unpriced: u64,
    /// How many were billed at a long-context tier.
    pub long_context: u64,
}

impl Cost {
    /// An exact amount of pico-USD.
    pub const fn from_pico_usd(pico_usd: u128) -> Self {
        Cost { pico_usd, unpriced: 0, long_context: 0 }
    }

    /// The cost of a request whose model has no price: 0, flagged so the caller can count it.
    pub const fn unpriced() -> Self {
        Cost { pico_usd: 0, unpriced: 1, long_context: 0 }
    }

    /// Whether any request in this sum was unpriced.
    pub fn is_unpriced(&self) -> bool {
        self.unpriced > 0
    }

    /// The exact amount in USD, shortest form: `"0.0093"`, `"12.5"`, `"0"`.
    pub fn usd(&self) -> String {
        decimal(self.pico_usd, 12)
    }

    /// The amount in USD with exactly `decimals` digits after the point (at most 12), rounded
    /// half up: `usd_rounded(6) == "1.234567"`. For statuses and people; sums use `pico_usd`.
    pub fn usd_rounded(&self, decimals: u32) -> String {
        let decimals = decimals.min(12);
        let step = 10u128.pow(12 - decimals);
        let rounded = self.pico_usd.saturating_add(step / 2) / step;
        let unit = 10u128.pow(decimals);
        if decimals == 0 {
            return rounded.to_string();
        }
        format!("{}.{:0width$}", rounded / unit, rounded % unit, width = decimals as usize)
    }

    /// The amount in micro-USD rounded up, for comparing with Budget ceilings: a budget is
    /// never under-counted.
    pub fn micro_usd_ceil(&self) -> u128 {
        self.pico_usd.div_ceil(PICO_PER_MICRO)
    }
}

impl Add for Cost {
    type Output = Cost;
    fn add(self, other: Cost) -> Cost {
        Cost {
            pico_usd: self.pico_usd.saturating_add(other.pico_usd),
            unpriced: self.unpriced.saturating_add(other.unpriced),
            long_context: self.long_context.saturating_add(other.long_context),
        }
    }
}

impl AddAssign for Cost {
    fn add_assign(&mut self, other: Cost) {
        *self = *self + other;
    }
}

impl Sum for Cost {
    fn sum<I: Iterator<Item = Cost>>(iter: I) -> Cost {
        iter.fold(Cost::default(), Add::add)
    }
}

/// What `usage` costs at `price`; `None` for the price means the model is unpriced (0,
/// flagged). When the price has a long-context tier and the whole prompt (uncached input +
/// cache reads + cache writes) is longer than its threshold, the tier's rates apply to every
/// token of the request. Exact: `Σ tokens × pico-USD per token` in `u128`.
pub fn cost(price: Option<&Price>, usage: &Usage) -> Cost {
    let Some(price) = price else { return Cost::unpriced() };
    let (rates, long) = price.rates_for(usage.prompt_tokens());
    let term = |tokens: u64, rate: super::Rate| u128::from(tokens) * u128::from(rate.pico_usd_per_token());
    let pico_usd = term(usage.input, rates.input)
        + term(usage.cache_read, rates.cached_input_rate())
        + term(usage.cache_write, rates.cache_write_rate())
        + term(usage.cache_write_1h, rates.cache_write_1h_rate())
        + term(usage.output, rates.output);
    Cost { pico_usd, unpriced: 0, long_context: u64::from(long) }
}
