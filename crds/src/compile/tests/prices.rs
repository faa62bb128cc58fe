//! `spec.prices` of a Provider: compiled into its config, winning over the catalog, and
//! invalid values reported on the Provider.

use super::fixtures::*;
use super::world::World;
use crate::compile::Severity;
use crate::conditions::reason;
use crate::prices::{Catalog, Rate, Usage, cost};

#[test]
fn prices_compile_into_the_provider_config_and_beat_the_catalog() {
    let out = World::new()
        .provider(
            ProviderBuilder::azure("ai", "azure")
                .base_url("https://res.openai.azure.com")
                .models(["prod-4o", "gpt-4o*"])
                .key("main", "az", "key")
                .price("gpt-4o*", "2.00", "8.00")
                .with_last_price(|p| p.cached_input_per_m_tok = Some("0.5".into()))
                .price("prod-4o", "2.50", "10"),
        )
        .secret(secret("ai", "az").with("key", "k"))
        .compile();
    assert!(out.diagnostics.is_empty(), "{:#?}", out.diagnostics);
    let Some(p) = out.provider("ai", "azure") else { panic!("provider missing") };
    let patterns: Vec<_> = p.prices.iter().map(|e| e.model.as_str()).collect();
    assert_eq!(patterns, ["gpt-4o*", "prod-4o"], "spec order");
    assert_eq!(p.prices[0].price.rates.cached_input, Some(Rate::from_micro_usd_per_mtok(500_000)));

    let Ok(catalog) = Catalog::builtin() else { panic!("catalog") };
    let usage = Usage { input: 1_000_000, cache_read: 1_000_000, output: 1_000_000, ..Usage::default() };
    let usd = |model: &str| cost(p.price(catalog, model), &usage).usd();
    assert_eq!(usd("gpt-4o-mini-2024-07-18"), "10.5", "the override, not the catalog's gpt-4o-mini");
    assert_eq!(usd("Prod-4o"), "15", "a deployment name priced at the input rate for cache reads");
    assert_eq!(usd("o3"), "10.5", "the catalog: 2 + 0.5 + 8");
    assert!(cost(p.price(catalog, "llama-3"), &usage).is_unpriced());
}

#[test]
fn a_provider_without_prices_has_none_in_its_config() {
    let out = World::new().provider(ProviderBuilder::mock("ai", "m")).compile();
    let Some(p) = out.provider("ai", "m") else { panic!("provider missing") };
    assert!(p.prices.is_empty());
    let json = serde_json::to_value(p).unwrap_or_default();
    assert!(json.get("prices").is_none(), "empty prices are not written: {json}");
}

#[test]
fn invalid_prices_are_reported_on_the_provider_and_exclude_it() {
    let out = World::new()
        .provider(
            ProviderBuilder::mock("ai", "m")
                .price("mock-*", "2,50", "-1")
                .with_last_price(|p| {
                    p.long_context = Some(crate::provider::LongContextPrice {
                        above_input_tokens: 0,
                        input_per_m_tok: "1".into(),
                        output_per_m_tok: "1.0000001".into(),
                        cached_input_per_m_tok: None,
                        cache_write_per_m_tok: None,
                        cache_write1h_per_m_tok: None,
                    })
                })
                .price("*bad", "1", "1")
                .price("MOCK-*", "1", "1"),
        )
        .compile();
    assert!(out.config.providers.is_empty(), "a Provider with a bad price would under-count budgets");
    let messages: Vec<_> = out.diagnostics.iter().map(|d| d.message.as_str()).collect();
    for d in &out.diagnostics {
        assert_eq!((d.kind, d.reason, d.severity), ("Provider", reason::INVALID_SPEC, Severity::Error));
    }
    for needle in [
        "spec.prices[0] (`mock-*`): inputPerMTok: `2,50` is not a price",
        "spec.prices[0] (`mock-*`): outputPerMTok: `-1` is not a price",
        "spec.prices[0] (`mock-*`): longContext.aboveInputTokens must be at least 1",
        "spec.prices[0] (`mock-*`): longContext.outputPerMTok: `1.0000001` is not a price",
        "spec.prices[1] (`*bad`): model `*bad` is not a pattern",
        "spec.prices[2]: model `MOCK-*` is priced more than once",
    ] {
        assert!(messages.iter().any(|m| m.contains(needle)), "missing {needle:?} in {messages:#?}");
    }
    assert_eq!(messages.len(), 6, "{messages:#?}");
}
