//! Money: what a model costs and what one request cost, exactly.
//!
//! - [`Rate`] is a price in USD per million tokens held as an integer of micro-USD per million
//!   tokens — the same integer as **pico-USD (10⁻¹² USD) per token**. Every price in the
//!   catalog and every price a Provider may declare has at most six decimals in USD per
//!   million tokens, so every rate is an exact integer in this unit.
//! - [`Cost`] is a sum of `tokens × rate`, i.e. an exact integer of pico-USD in a `u128`. Sums
//!   over any number of requests stay exact (a `u128` of pico-USD holds 3.4 × 10²⁶ USD); there
//!   is no float and no rounding anywhere until [`Cost::usd_rounded`] prints a figure for a
//!   person.
//! - The built-in [`Catalog`] is the data file `crds/src/prices/catalog.yaml`, embedded in the binary and
//!   parsed once: OpenAI's GPT-5.x, GPT-4.1, GPT-4o, o1/o3/o4-mini and embedding models and
//!   Anthropic's Claude 5, 4.x and current 3.x models, standard-tier text tokens, each provider
//!   with its `source` and `asOf` date (2026-11-27). Images, audio, Batch/Flex tiers and
//!   fine-tunes are not in it: a Provider prices those with `spec.prices`.
//! - A Provider's `spec.prices` ([`ModelPrice`]) compile into [`PriceEntry`]s on its
//!   [`ProviderConfig`](crate::config::ProviderConfig) and win over the catalog ([`lookup`]).
//! - [`Usage`] is what the upstream reported, normalised into disjoint token buckets, with
//!   parsers for the real OpenAI and Anthropic usage shapes; [`cost()`] prices it.
//!
//! This module has no IO and no clock; the gateway (cost per request) and the operator (budget
//! status) both call it, so they agree to the pico-dollar.

mod catalog;
mod cost;
mod rate;
mod usage;

#[cfg(test)]
mod tests;

pub use catalog::{Catalog, CatalogError, CatalogProvider};
pub use cost::{Cost, PICO_PER_MICRO, PICO_PER_USD, cost};
pub use rate::{InvalidRate, LongContext, Price, RATE_DECIMALS, RATE_REGEX, Rate, Rates, parse_decimal};
pub use usage::Usage;

use serde::{Deserialize, Serialize};

use crate::common::Pattern;
use crate::provider::{LongContextPrice, ModelPrice};

/// A compiled price: the models it applies to and their rates.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PriceEntry {
    /// Exact name or trailing-`*` prefix, case-insensitive.
    pub model: Pattern,
    /// The rates.
    #[serde(flatten)]
    pub price: Price,
}

/// Where a model's price came from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PriceSource<'a> {
    /// The Provider's `spec.prices` entry with this pattern.
    Override(&'a Pattern),
    /// The built-in catalog entry with this pattern.
    Catalog(&'a Pattern),
}

/// The price of `model`: the most specific of `overrides` that matches (exact name, then
/// longest prefix), else the catalog's most specific match, else `None` (unpriced).
///
/// Azure: pass the model name the upstream reported in its response (`model`, e.g.
/// `gpt-4o-2024-08-06`) when there is one, else the deployment name; a Provider prices
/// deployment names that are not model names with `spec.prices`.
pub fn lookup<'a>(
    overrides: &'a [PriceEntry],
    catalog: &'a Catalog,
    model: &str,
) -> Option<(&'a Price, PriceSource<'a>)> {
    best_match(overrides, model)
        .map(|e| (&e.price, PriceSource::Override(&e.model)))
        .or_else(|| catalog.lookup(model).map(|e| (&e.price, PriceSource::Catalog(&e.model))))
}

/// The most specific entry matching `model`; on a tie (which [`Catalog`] and `compile()` rule
/// out) the first.
pub(crate) fn best_match<'a>(entries: &'a [PriceEntry], model: &str) -> Option<&'a PriceEntry> {
    let mut best: Option<&PriceEntry> = None;
    for entry in entries.iter().filter(|e| e.model.matches(model)) {
        if best.is_none_or(|b| entry.model.specificity() > b.model.specificity()) {
            best = Some(entry);
        }
    }
    best
}

/// Compiles one declared price, or every problem with it (each naming its field).
pub fn compile_price(spec: &ModelPrice) -> Result<PriceEntry, Vec<String>> {
    let mut problems = Vec::new();
    if !spec.model.is_valid() {
        problems
            .push(format!("model `{}` is not a pattern: write an exact name or a prefix ending in `*`", spec.model));
    }
    let rates = parse_rates(
        &mut problems,
        "",
        [
            Some(&spec.input_per_m_tok),
            Some(&spec.output_per_m_tok),
            spec.cached_input_per_m_tok.as_ref(),
            spec.cache_write_per_m_tok.as_ref(),
            spec.cache_write1h_per_m_tok.as_ref(),
        ],
    );
    let long_context = spec.long_context.as_ref().map(|long: &LongContextPrice| {
        if long.above_input_tokens == 0 {
            problems.push("longContext.aboveInputTokens must be at least 1".to_owned());
        }
        LongContext {
            above_input_tokens: long.above_input_tokens,
            rates: parse_rates(
                &mut problems,
                "longContext.",
                [
                    Some(&long.input_per_m_tok),
                    Some(&long.output_per_m_tok),
                    long.cached_input_per_m_tok.as_ref(),
                    long.cache_write_per_m_tok.as_ref(),
                    long.cache_write1h_per_m_tok.as_ref(),
                ],
            ),
        }
    });
    if problems.is_empty() {
        Ok(PriceEntry { model: spec.model.clone(), price: Price { rates, long_context } })
    } else {
        Err(problems)
    }
}

/// Parses the five rate fields (input, output, cached input, cache write, 1-hour cache write).
fn parse_rates(problems: &mut Vec<String>, prefix: &str, fields: [Option<&String>; 5]) -> Rates {
    const NAMES: [&str; 5] =
        ["inputPerMTok", "outputPerMTok", "cachedInputPerMTok", "cacheWritePerMTok", "cacheWrite1hPerMTok"];
    let [input, output, cached, write, write_1h] = std::array::from_fn(|i| {
        fields[i].map(|text| {
            text.parse::<Rate>().unwrap_or_else(|e| {
                problems.push(format!("{prefix}{}: {e}", NAMES[i]));
                Rate::ZERO
            })
        })
    });
    Rates {
        input: input.unwrap_or_default(),
        output: output.unwrap_or_default(),
        cached_input: cached,
        cache_write: write,
        cache_write_1h: write_1h,
    }
}
