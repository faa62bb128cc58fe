//! Exact cost for real usage shapes, matching, overrides and the catalog file's sanity.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use serde_json::json;

use super::*;
use crate::common::Pattern;

fn catalog() -> &'static Catalog {
    Catalog::builtin().unwrap()
}

/// The catalog pattern `model` is priced by.
fn matched(model: &str) -> Option<&'static str> {
    catalog().lookup(model).map(|e| e.model.as_str())
}

/// The catalog cost of `usage` for `model`.
fn catalog_cost(model: &str, usage: &Usage) -> Cost {
    cost(lookup(&[], catalog(), model).map(|(p, _)| p), usage)
}

// ---- real usage shapes -------------------------------------------------------------------

#[test]
fn openai_chat_cached_tokens_are_inside_prompt_tokens_and_billed_at_the_cached_rate() {
    let response = json!({
        "id": "chatcmpl-abc", "object": "chat.completion", "model": "gpt-4o-2024-08-06",
        "usage": {
            "prompt_tokens": 2006, "completion_tokens": 300, "total_tokens": 2306,
            "prompt_tokens_details": {"cached_tokens": 1920, "audio_tokens": 0},
            "completion_tokens_details": {"reasoning_tokens": 0, "audio_tokens": 0,
                "accepted_prediction_tokens": 0, "rejected_prediction_tokens": 0}
        }
    });
    let usage = Usage::from_openai_chat(&response["usage"]).unwrap();
    assert_eq!(usage, Usage { input: 86, cache_read: 1920, output: 300, ..Usage::default() });
    assert_eq!(usage.prompt_tokens(), 2006);
    assert_eq!(usage.total_tokens(), 2306);
    // 86 × 2.50 + 1920 × 1.25 + 300 × 10.00 micro-USD per million → pico-USD.
    let c = catalog_cost(response["model"].as_str().unwrap(), &usage);
    assert_eq!(c.pico_usd, 86 * 2_500_000 + 1920 * 1_250_000 + 300 * 10_000_000);
    assert_eq!(c.usd(), "0.005615");
    assert!(!c.is_unpriced());
}

#[test]
fn streamed_chat_final_usage_chunk() {
    let chunk = json!({
        "id": "chatcmpl-abc", "object": "chat.completion.chunk", "created": 1_731_000_000,
        "model": "gpt-4o-mini-2024-07-18", "choices": [],
        "usage": {"prompt_tokens": 12, "completion_tokens": 5, "total_tokens": 17,
                  "prompt_tokens_details": {"cached_tokens": 0}, "completion_tokens_details": {"reasoning_tokens": 0}}
    });
    let usage = Usage::from_openai_chat(&chunk["usage"]).unwrap();
    let c = catalog_cost(chunk["model"].as_str().unwrap(), &usage);
    assert_eq!(c.pico_usd, 12 * 150_000 + 5 * 600_000);
    assert_eq!(c.usd(), "0.0000048");
}

#[test]
fn reasoning_tokens_are_inside_completion_tokens_and_null_details_are_fine() {
    let usage = Usage::from_openai_chat(&json!({
        "prompt_tokens": 1000, "completion_tokens": 2000, "total_tokens": 3000,
        "prompt_tokens_details": null, "completion_tokens_details": {"reasoning_tokens": 1500}
    }))
    .unwrap();
    assert_eq!(usage, Usage { input: 1000, output: 2000, reasoning: 1500, ..Usage::default() });
    assert_eq!(catalog_cost("o4-mini-2025-04-16", &usage).usd(), "0.0099");
}

#[test]
fn openai_responses_usage() {
    let response = json!({
        "id": "resp_1", "object": "response", "model": "gpt-4.1-2025-04-14",
        "usage": {"input_tokens": 328, "input_tokens_details": {"cached_tokens": 128},
                  "output_tokens": 52, "output_tokens_details": {"reasoning_tokens": 0}, "total_tokens": 380}
    });
    let usage = Usage::from_openai_responses(&response["usage"]).unwrap();
    assert_eq!(usage, Usage { input: 200, cache_read: 128, output: 52, ..Usage::default() });
    let c = catalog_cost("gpt-4.1-2025-04-14", &usage);
    assert_eq!(c.pico_usd, 200 * 2_000_000 + 128 * 500_000 + 52 * 8_000_000);
    assert_eq!(c.usd(), "0.00088");
}

#[test]
fn embeddings_bill_input_only_and_tiny_costs_are_not_rounded_away() {
    let response = json!({"object": "list", "data": [], "model": "text-embedding-3-small",
                          "usage": {"prompt_tokens": 8, "total_tokens": 8}});
    let usage = Usage::from_openai_embeddings(&response["usage"]).unwrap();
    assert_eq!(usage, Usage { input: 8, ..Usage::default() });
    let c = catalog_cost("text-embedding-3-small", &usage);
    assert_eq!(c.pico_usd, 160_000);
    assert_eq!(c.usd(), "0.00000016", "the original stored 6 decimals and billed this as 0");
    assert_eq!(c.micro_usd_ceil(), 1, "budgets round up, never down");
    assert_eq!(catalog_cost("text-embedding-ada-002", &usage).usd(), "0.0000008");
}

#[test]
fn anthropic_cache_tokens_are_outside_input_tokens() {
    let message = json!({
        "id": "msg_1", "type": "message", "model": "claude-sonnet-4-5-20250929",
        "usage": {"input_tokens": 100, "cache_creation_input_tokens": 2000, "cache_read_input_tokens": 5000,
                  "output_tokens": 503, "service_tier": "standard",
                  "cache_creation": {"ephemeral_5m_input_tokens": 2000, "ephemeral_1h_input_tokens": 0}}
    });
    let usage = Usage::from_anthropic(&message["usage"]).unwrap();
    assert_eq!(usage, Usage { input: 100, cache_read: 5000, cache_write: 2000, output: 503, ..Usage::default() });
    assert_eq!(usage.prompt_tokens(), 7100);
    let c = catalog_cost("claude-sonnet-4-5-20250929", &usage);
    assert_eq!(c.pico_usd, 100 * 3_000_000 + 5000 * 300_000 + 2000 * 3_750_000 + 503 * 15_000_000);
    assert_eq!(c.usd(), "0.016845");
}

#[test]
fn anthropic_one_hour_cache_writes_have_their_own_rate() {
    let usage = Usage::from_anthropic(&json!({
        "input_tokens": 10, "output_tokens": 20, "cache_creation_input_tokens": 3000, "cache_read_input_tokens": 0,
        "cache_creation": {"ephemeral_5m_input_tokens": 1000, "ephemeral_1h_input_tokens": 2000}
    }))
    .unwrap();
    assert_eq!((usage.cache_write, usage.cache_write_1h), (1000, 2000));
    // Haiku 4.5: 1 in, 5 out, 1.25 five-minute write, 2 one-hour write.
    let c = catalog_cost("claude-haiku-4-5-20251001", &usage);
    assert_eq!(c.pico_usd, 10 * 1_000_000 + 20 * 5_000_000 + 1000 * 1_250_000 + 2000 * 2_000_000);
    assert_eq!(c.usd(), "0.00536");
    // Without the split, every write is a 5-minute write.
    let plain =
        Usage::from_anthropic(&json!({"input_tokens": 1, "output_tokens": 1, "cache_creation_input_tokens": 3000}))
            .unwrap();
    assert_eq!((plain.cache_write, plain.cache_write_1h), (3000, 0));
}

#[test]
fn the_original_products_test_vectors_still_hold() {
    let usd = |model: &str, usage: Usage| catalog_cost(model, &usage).usd();
    assert_eq!(usd("gpt-4o", Usage { input: 1_000_000, output: 1_000_000, ..Usage::default() }), "12.5");
    assert_eq!(usd("gpt-4o", Usage { input: 200_000, cache_read: 800_000, ..Usage::default() }), "1.5");
    assert_eq!(
        usd("claude-sonnet-4-6", Usage { input: 100, cache_read: 5000, cache_write: 2000, ..Usage::default() }),
        "0.0093"
    );
    let sol = Usage::from_openai_chat(&json!({"prompt_tokens": 10_000, "completion_tokens": 500,
        "prompt_tokens_details": {"cached_tokens": 6000, "cache_write_tokens": 3000}}))
    .unwrap();
    assert_eq!(sol, Usage { input: 1000, cache_read: 6000, cache_write: 3000, output: 500, ..Usage::default() });
    assert_eq!(usd("gpt-5.6-sol", sol), "0.04175");
}

#[test]
fn a_misreported_cached_count_never_bills_negative_input() {
    let usage =
        Usage::from_openai_chat(&json!({"prompt_tokens": 10, "prompt_tokens_details": {"cached_tokens": 50}})).unwrap();
    assert_eq!(usage, Usage { cache_read: 10, ..Usage::default() });
}

#[test]
fn a_usage_that_is_not_an_object_is_an_error_not_a_zero() {
    assert!(Usage::from_openai_chat(&json!("nope")).is_err());
    assert!(Usage::from_anthropic(&json!({"input_tokens": -1})).is_err());
}

// ---- long-context tiers ------------------------------------------------------------------

#[test]
fn anthropic_long_context_applies_to_the_whole_request_above_200k_prompt_tokens() {
    let at = |input| Usage { input, cache_read: 50_000, output: 1000, ..Usage::default() };
    let standard = catalog_cost("claude-sonnet-4-5-20250929", &at(150_000));
    assert_eq!(standard.usd(), "0.48");
    assert_eq!(standard.long_context, 0, "exactly 200,000 prompt tokens is not above the threshold");
    let long = catalog_cost("claude-sonnet-4-5-20250929", &at(150_001));
    assert_eq!(long.pico_usd, 150_001 * 6_000_000 + 50_000 * 600_000 + 1000 * 22_500_000);
    assert_eq!(long.usd(), "0.952506");
    assert_eq!(long.long_context, 1);
}

#[test]
fn openai_long_context_starts_above_272k() {
    let at = |input| Usage { input, output: 1_000, ..Usage::default() };
    assert_eq!(catalog_cost("gpt-5.4", &at(272_000)).pico_usd, 272_000 * 2_500_000 + 1_000 * 15_000_000);
    assert_eq!(catalog_cost("gpt-5.4", &at(272_001)).pico_usd, 272_001 * 5_000_000 + 1_000 * 22_500_000);
    // Cache reads count towards the threshold.
    let cached = Usage { input: 1, cache_read: 272_000, ..Usage::default() };
    assert_eq!(catalog_cost("gpt-5.5", &cached).pico_usd, 5_000_000 * 2 + 272_000 * 1_000_000);
    // A model without a tier never switches.
    assert_eq!(catalog_cost("gpt-4.1", &at(900_000)).long_context, 0);
}

// ---- matching and overrides --------------------------------------------------------------

#[test]
fn the_longest_prefix_wins_case_insensitively() {
    for (model, pattern) in [
        ("gpt-4o-mini-2024-07-18", Some("gpt-4o-mini*")),
        ("GPT-4o-Mini", Some("gpt-4o-mini*")),
        ("gpt-4o-2024-08-06", Some("gpt-4o*")),
        ("gpt-4o-2024-05-13", Some("gpt-4o-2024-05-13")),
        ("gpt-4o-mini-transcribe", Some("gpt-4o-mini-transcribe*")),
        ("gpt-4.1-nano-2025-04-14", Some("gpt-4.1-nano*")),
        ("gpt-5", Some("gpt-5")),
        ("gpt-5-2025-08-07", Some("gpt-5-*")),
        ("gpt-5-mini-2025-08-07", Some("gpt-5-mini*")),
        ("gpt-5.4-mini", Some("gpt-5.4-mini*")),
        ("gpt-5.1-codex-mini", Some("gpt-5.1-codex-mini*")),
        ("gpt-5.1-codex", Some("gpt-5.1*")),
        ("o1-2024-12-17", Some("o1*")),
        ("o3-mini-2025-01-31", Some("o3-mini*")),
        ("o3-2025-04-16", Some("o3*")),
        ("o4-mini", Some("o4-mini*")),
        ("text-embedding-3-large", Some("text-embedding-3-large*")),
        ("claude-opus-4-20250514", Some("claude-opus-4-20*")),
        ("claude-opus-4-1-20250805", Some("claude-opus-4-1*")),
        ("claude-3-5-haiku-20241022", Some("claude-3-5-haiku*")),
        ("claude-3-haiku-20240307", Some("claude-3-haiku*")),
        ("claude-sonnet-4-0", Some("claude-sonnet-4-0*")),
        // Unknown models are unpriced rather than billed as a relative.
        ("gpt-5.3-codex", None),
        ("claude-opus-4-9", None),
        ("llama-3.1-70b", None),
        ("", None),
    ] {
        assert_eq!(matched(model), pattern, "{model}");
    }
}

fn entry(model: &str, input: &str, output: &str) -> PriceEntry {
    compile_price(&crate::provider::ModelPrice {
        model: Pattern::new(model),
        input_per_m_tok: input.into(),
        output_per_m_tok: output.into(),
        cached_input_per_m_tok: None,
        cache_write_per_m_tok: None,
        cache_write1h_per_m_tok: None,
        long_context: None,
    })
    .unwrap()
}

#[test]
fn overrides_beat_the_catalog_and_the_most_specific_override_wins() {
    let overrides =
        [entry("gpt-4o*", "2", "8"), entry("gpt-4o-2024-08-06", "1", "4"), entry("my-deployment", "3", "9")];
    let usage = Usage { input: 1_000_000, cache_read: 1_000_000, output: 1_000_000, ..Usage::default() };
    let priced = |model: &str| {
        let (price, source) = lookup(&overrides, catalog(), model).unwrap();
        (cost(Some(price), &usage).usd(), source)
    };
    // The override prices every gpt-4o model, even those the catalog has a longer prefix for;
    // without a cached-input price, cache reads cost the input price.
    assert_eq!(priced("gpt-4o-mini"), ("12".to_owned(), PriceSource::Override(&Pattern::new("gpt-4o*"))));
    assert_eq!(priced("gpt-4o-2024-08-06").0, "6");
    assert_eq!(priced("MY-DEPLOYMENT").0, "15", "an Azure deployment name priced by the Provider");
    assert_eq!(priced("o3").1, PriceSource::Catalog(&Pattern::new("o3*")));
    assert!(lookup(&overrides, catalog(), "mistral-large").is_none());
}

#[test]
fn unpriced_models_cost_zero_and_are_counted() {
    let usage = Usage { input: 10, output: 10, ..Usage::default() };
    let one = catalog_cost("llama-3.1-70b", &usage);
    assert_eq!(one, Cost { pico_usd: 0, unpriced: 1, long_context: 0 });
    assert!(one.is_unpriced());
    let total: Cost = [one, catalog_cost("gpt-4o", &usage), one].into_iter().sum();
    assert_eq!(total.unpriced, 2);
    assert_eq!(total.pico_usd, 10 * 2_500_000 + 10 * 10_000_000);
}

// ---- exactness and formatting ------------------------------------------------------------

#[test]
fn a_million_tiny_costs_sum_to_exactly_their_product() {
    let one = catalog_cost("text-embedding-3-small", &Usage { input: 1, ..Usage::default() });
    assert_eq!(one.pico_usd, 20_000);
    let mut total = Cost::default();
    for _ in 0..1_000_000 {
        total += one;
    }
    assert_eq!(total.pico_usd, 1_000_000 * one.pico_usd);
    assert_eq!(total.usd(), "0.02");
    let chat = catalog_cost("gpt-4o-mini", &Usage { input: 12, output: 5, ..Usage::default() });
    let sum: Cost = std::iter::repeat_n(chat, 3_000_000).sum();
    assert_eq!(sum.pico_usd, 3_000_000 * 4_800_000);
    assert_eq!(sum.usd(), "14.4");
}

#[test]
fn costs_format_as_decimal_usd() {
    let c = Cost::from_pico_usd(1_234_567_500_000);
    assert_eq!(c.usd(), "1.2345675");
    assert_eq!(c.usd_rounded(6), "1.234568");
    assert_eq!(c.usd_rounded(2), "1.23");
    assert_eq!(c.usd_rounded(0), "1");
    assert_eq!(c.usd_rounded(12), "1.234567500000");
    assert_eq!(Cost::default().usd(), "0");
    assert_eq!(Cost::default().usd_rounded(6), "0.000000");
    assert_eq!(Cost::from_pico_usd(PICO_PER_USD * 42).usd(), "42");
    assert_eq!(Cost::from_pico_usd(999_999).micro_usd_ceil(), 1);
    assert_eq!(Cost::from_pico_usd(PICO_PER_MICRO * 7).micro_usd_ceil(), 7);
}

// ---- the catalog file --------------------------------------------------------------------

#[test]
fn the_catalog_parses_and_records_its_sources() {
    let catalog = catalog();
    let providers: Vec<_> = catalog.providers().iter().map(|p| p.provider.as_str()).collect();
    assert_eq!(providers, ["openai", "anthropic"]);
    for p in catalog.providers() {
        assert!(p.source.starts_with("https://"), "{}: source", p.provider);
        let date = p.as_of.as_bytes();
        assert!(
            date.len() == 10 && date[4] == b'-' && date[7] == b'-' && p.as_of.replace('-', "").parse::<u32>().is_ok(),
            "{}: asOf must be YYYY-MM-DD",
            p.provider
        );
        assert!(p.models().count() > 5);
    }
    assert_eq!(catalog.entries().len(), catalog.providers().iter().map(|p| p.models().count()).sum::<usize>());
}

#[test]
fn the_catalog_covers_the_models_it_promises() {
    for model in [
        "gpt-5",
        "gpt-5-mini",
        "gpt-5-nano",
        "gpt-5-pro",
        "gpt-5.1",
        "gpt-5.2",
        "gpt-5.4",
        "gpt-5.5",
        "gpt-5.6-sol",
        "gpt-4.1",
        "gpt-4.1-mini",
        "gpt-4.1-nano",
        "gpt-4o",
        "gpt-4o-mini",
        "o1",
        "o1-mini",
        "o1-pro",
        "o3",
        "o3-mini",
        "o3-pro",
        "o4-mini",
        "text-embedding-3-small",
        "text-embedding-3-large",
        "text-embedding-ada-002",
        "claude-opus-4-8",
        "claude-opus-4-5-20251101",
        "claude-opus-4-1-20250805",
        "claude-opus-4-20250514",
        "claude-sonnet-5",
        "claude-sonnet-4-6",
        "claude-sonnet-4-5-20250929",
        "claude-sonnet-4-20250514",
        "claude-haiku-4-5-20251001",
        "claude-3-7-sonnet-20250219",
        "claude-3-5-haiku-20241022",
        "claude-3-haiku-20240307",
    ] {
        assert!(matched(model).is_some(), "{model} has no price");
    }
}

#[test]
fn catalog_prices_are_sane() {
    for e in catalog().entries() {
        let (m, r) = (e.model.as_str(), &e.price.rates);
        assert!(e.model.is_valid(), "{m}");
        if m.starts_with("text-embedding-") {
            assert_eq!(r.output, Rate::ZERO, "{m}: embeddings have no output");
        } else {
            assert!(r.output >= r.input, "{m}: output is cheaper than input");
        }
        assert!(r.input > Rate::ZERO, "{m}: free input");
        assert!(r.cached_input_rate() <= r.input, "{m}: cache reads cost more than input");
        assert!(r.cache_write_rate() >= r.input, "{m}: cache writes cost less than input");
        assert!(r.cache_write_1h_rate() >= r.cache_write_rate(), "{m}: 1-hour writes cost less than 5-minute");
        if m.starts_with("claude-") && m != "claude-3-haiku*" {
            // Anthropic's multipliers: reads 0.1×, 5-minute writes 1.25×, 1-hour writes 2×
            // (Claude 3 Haiku predates them: $0.03 reads, $0.30 writes on $0.25 input).
            let micro = r.input.pico_usd_per_token();
            assert_eq!(r.cached_input.map(Rate::pico_usd_per_token), Some(micro / 10), "{m}: read");
            assert_eq!(r.cache_write.map(Rate::pico_usd_per_token), Some(micro * 5 / 4), "{m}: write");
            assert_eq!(r.cache_write_1h.map(Rate::pico_usd_per_token), Some(micro * 2), "{m}: 1h write");
        }
        if let Some(long) = &e.price.long_context {
            assert!(long.above_input_tokens >= 100_000, "{m}: threshold");
            assert!(long.rates.input > r.input && long.rates.output > r.output, "{m}: long tier is not dearer");
        }
    }
}

#[test]
fn a_catalog_with_a_duplicate_or_a_bad_price_is_refused() {
    let file = |models: &str| {
        format!(
            "providers:\n  - provider: x\n    source: https://example.com\n    asOf: \"2026-01-01\"\n    models:\n{models}"
        )
    };
    let ok = "      - { model: \"a*\", inputPerMTok: \"1\", outputPerMTok: \"2\" }\n";
    assert!(Catalog::parse(&file(ok)).is_ok());
    let dup = format!("{ok}      - {{ model: \"A*\", inputPerMTok: \"1\", outputPerMTok: \"2\" }}\n");
    assert_eq!(Catalog::parse(&file(&dup)), Err(CatalogError::Duplicate("A*".into())));
    let bad = "      - { model: \"a*\", inputPerMTok: \"1,5\", outputPerMTok: \"2\" }\n";
    assert!(matches!(Catalog::parse(&file(bad)), Err(CatalogError::Invalid { .. })));
    // An unquoted number is read as its text, so it stays exact.
    let unquoted = "      - { model: \"a*\", inputPerMTok: 0.10, outputPerMTok: \"2\" }\n";
    let parsed = Catalog::parse(&file(unquoted)).unwrap();
    assert_eq!(parsed.entries()[0].price.rates.input, Rate::from_micro_usd_per_mtok(100_000));
    assert!(matches!(Catalog::parse("providers: []\nextra: 1\n"), Err(CatalogError::Parse(_))));
}
