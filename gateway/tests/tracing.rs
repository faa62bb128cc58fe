//! Request tracing over OTLP/HTTP: the spans a collector receives (a SERVER span per request, a
//! CLIENT span per upstream call, joined to the caller's trace), the `traceparent` the provider
//! receives, sampling, and a collector that refuses spans.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::sync::Arc;
use std::time::Duration;

use common::{Harness, PROVIDER_KEY, TOKEN, Upstream, identity_with, reply};
use http_body_util::BodyExt as _;
use serde_json::Value;
use uprox_gateway::app::Settings;
use uprox_gateway::trace::{Config, Options};

const WITHIN: Duration = Duration::from_secs(15);
const CALLER: &str = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01";
const USAGE: &str = r#"{"prompt_tokens":1000,"completion_tokens":500,"total_tokens":1500}"#;

/// A collector answering `status` to every export.
async fn collector(status: u16) -> Upstream {
    Upstream::start(Arc::new(move |_| Box::pin(async move { reply(status, "application/json", "{}") }))).await
}

/// Every span the collector received (JSON encoding).
fn spans(collector: &Upstream) -> Vec<Value> {
    let seen = collector.seen.lock().unwrap();
    let mut spans = Vec::new();
    for export in seen.iter() {
        assert_eq!(export.path, "/v1/traces");
        assert_eq!(export.headers["content-type"], "application/json");
        assert_eq!(export.headers["x-collector-key"], "secret-for-the-collector");
        let body: Value = serde_json::from_slice(&export.body).unwrap();
        let resource = &body["resourceSpans"][0];
        let service =
            resource["resource"]["attributes"].as_array().unwrap().iter().find(|a| a["key"] == "service.name").unwrap();
        assert_eq!(service["value"]["stringValue"], "uprox-gateway");
        for scope in resource["scopeSpans"].as_array().unwrap() {
            spans.extend(scope["spans"].as_array().unwrap().iter().cloned());
        }
    }
    spans
}

fn attribute<'a>(span: &'a Value, key: &str) -> Option<&'a Value> {
    let found = span["attributes"].as_array().unwrap().iter().find(|a| a["key"] == key)?;
    let value = found["value"].as_object().unwrap();
    value.values().next()
}

fn text<'a>(span: &'a Value, key: &str) -> &'a str {
    attribute(span, key).and_then(Value::as_str).unwrap_or_else(|| panic!("no {key} in {span:#}"))
}

/// The attributes docs/tracing.md documents, with the span kinds they are on (`both`, `server`,
/// `client`).
fn documented_attributes() -> Vec<(String, String)> {
    let doc = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../docs/tracing.md")).unwrap();
    doc.lines()
        .filter_map(|l| l.strip_prefix("| `"))
        .filter_map(|l| {
            let (name, rest) = l.split_once("` | ")?;
            let on = rest.split(' ').next()?;
            ["both", "server", "client"].contains(&on).then(|| (name.to_owned(), on.to_owned()))
        })
        .collect()
}

async fn gateway(collector: &Upstream, upstream: &Upstream, ratio: f64) -> Harness {
    let options = Options {
        endpoint: Some(format!("http://{}", collector.addr)),
        protocol: Some("http/json".to_owned()),
        headers: vec!["x-collector-key=secret-for-the-collector".to_owned()],
        sample_ratio: Some(ratio),
    };
    let tracing = Config::from_options(&options, |_| None).unwrap();
    let settings = Settings { tracing, ..Settings::default() };
    let yaml = common::upstream_provider(
        &upstream.base_url(),
        PROVIDER_KEY,
        r#"["gpt-*"]"#,
        r#"prices: [{model: "gpt-*", inputPerMTok: "2", outputPerMTok: "10"}]"#,
    ) + &identity_with("{cacheTtlSeconds: 60}", "");
    Harness::start_with(&yaml, settings).await
}

async fn chat(h: &Harness, token: Option<&str>, traceparent: Option<&str>, body: &str) -> reqwest::Response {
    let mut r = h.client.post(h.url("/v1/chat/completions")).header("content-type", "application/json");
    if let Some(t) = token {
        r = r.bearer_auth(t);
    }
    if let Some(parent) = traceparent {
        r = r.header("traceparent", parent);
    }
    r.body(body.to_owned()).send().await.unwrap()
}

#[tokio::test]
async fn requests_become_spans_joined_to_the_callers_trace_and_the_providers() {
    let (up, otlp) = (common::chat_upstream(USAGE).await, collector(200).await);
    let h = gateway(&otlp, &up, 1.0).await;
    let deterministic = r#"{"model":"gpt-4o","temperature":0,"messages":[{"role":"user","content":"hi"}]}"#;

    // 1. A success from a traced caller, 2. the same again (a cache hit), 3. no token,
    // 4. an upstream failure.
    assert_eq!(chat(&h, Some(TOKEN), Some(CALLER), deterministic).await.status(), 200);
    assert!(common::cache_holds(&h.gateway, 1).await);
    assert_eq!(chat(&h, Some(TOKEN), None, deterministic).await.headers()["x-uprox-cache"], "HIT");
    assert_eq!(chat(&h, None, None, deterministic).await.status(), 401);
    let failing = r#"{"model":"gpt-4o","messages":[{"role":"user","content":"fail"}]}"#;
    assert_eq!(chat(&h, Some(TOKEN), None, failing).await.status(), 500);

    // Two upstream calls: 4 SERVER spans and 2 CLIENT spans.
    assert!(common::eventually(WITHIN, || async { spans(&otlp).len() >= 6 }).await, "{:#?}", spans(&otlp));
    let spans = spans(&otlp);
    assert_eq!(spans.len(), 6, "{spans:#?}");
    let servers: Vec<&Value> = spans.iter().filter(|s| s["kind"] == 2).collect();
    let clients: Vec<&Value> = spans.iter().filter(|s| s["kind"] == 3).collect();
    assert_eq!((servers.len(), clients.len()), (4, 2));

    // The caller's request: a child of the caller's span, in its trace.
    let traced = servers.iter().find(|s| s["traceId"] == "0af7651916cd43dd8448eb211c80319c").unwrap();
    assert_eq!(traced["parentSpanId"], "b7ad6b7169203331");
    assert_eq!(traced["flags"], 0x301, "sampled, remote parent");
    assert_eq!(traced["name"], "chat gpt-4o");
    assert_eq!(text(traced, "gen_ai.operation.name"), "chat");
    assert_eq!(text(traced, "gen_ai.request.model"), "gpt-4o");
    assert_eq!(text(traced, "gen_ai.response.model"), "gpt-4o-2024-08-06");
    assert_eq!(attribute(traced, "gen_ai.usage.input_tokens").unwrap(), "1000");
    assert_eq!(attribute(traced, "gen_ai.usage.output_tokens").unwrap(), "500");
    assert_eq!(attribute(traced, "uprox.cost_usd").unwrap().as_f64(), Some(0.007));
    assert_eq!(attribute(traced, "http.response.status_code").unwrap(), "200");
    assert_eq!(text(traced, "uprox.namespace"), "team");
    assert_eq!(text(traced, "uprox.service"), "app");
    assert_eq!(text(traced, "uprox.token"), "app");
    assert_eq!(text(traced, "uprox.provider"), "team/upstream");
    assert_eq!(text(traced, "uprox.key"), "main");
    assert_eq!(text(traced, "uprox.cache"), "miss");
    assert!(traced.get("status").is_none(), "{traced:#}");
    let (start, end): (u64, u64) = (
        traced["startTimeUnixNano"].as_str().unwrap().parse().unwrap(),
        traced["endTimeUnixNano"].as_str().unwrap().parse().unwrap(),
    );
    assert!(start > 1_700_000_000_000_000_000 && end >= start);

    // Its upstream call: a CLIENT child, whose id the provider received as the parent.
    let call = clients.iter().find(|s| s["traceId"] == traced["traceId"]).unwrap();
    assert_eq!(call["parentSpanId"], traced["spanId"]);
    assert_eq!(call["flags"], 0x101, "sampled, local parent");
    assert_eq!(text(call, "gen_ai.provider.name"), "openai-compatible");
    assert_eq!(text(call, "server.address"), "127.0.0.1");
    let call_start: u64 = call["startTimeUnixNano"].as_str().unwrap().parse().unwrap();
    assert!(call_start >= start, "the call starts within the request");
    let sent = up.seen.lock().unwrap()[0].headers["traceparent"].to_str().unwrap().to_owned();
    assert_eq!(sent, format!("00-0af7651916cd43dd8448eb211c80319c-{}-01", call["spanId"].as_str().unwrap()));

    // A hit: a new trace of its own, no upstream call.
    let hit = servers.iter().find(|s| attribute(s, "uprox.cache").and_then(Value::as_str) == Some("hit")).unwrap();
    assert!(hit.get("parentSpanId").is_none());
    assert_ne!(hit["traceId"], traced["traceId"]);
    assert!(clients.iter().all(|c| c["traceId"] != hit["traceId"]));
    assert_eq!(attribute(hit, "uprox.saved_usd").unwrap().as_f64(), Some(0.007));

    // A denial: a 4xx is not a server error.
    let denied = servers.iter().find(|s| attribute(s, "http.response.status_code").unwrap() == "401").unwrap();
    assert_eq!(text(denied, "error.type"), "missing_api_key");
    assert!(denied.get("status").is_none());
    assert!(attribute(denied, "uprox.service").is_none());

    // An upstream failure: both spans failed.
    let failed = servers.iter().find(|s| attribute(s, "http.response.status_code").unwrap() == "500").unwrap();
    assert_eq!(failed["status"]["code"], 2);
    let failed_call = clients.iter().find(|c| c["traceId"] == failed["traceId"]).unwrap();
    assert_eq!(failed_call["status"]["code"], 2);
    assert_eq!(text(failed_call, "error.type"), "http_5xx");

    // Every attribute sent is documented, for its kind of span.
    let documented = documented_attributes();
    assert!(documented.len() >= 25, "{documented:?}");
    for span in &spans {
        let kind = if span["kind"] == 2 { "server" } else { "client" };
        for attribute in span["attributes"].as_array().unwrap() {
            let key = attribute["key"].as_str().unwrap();
            assert!(
                documented.iter().any(|(name, on)| name == key && (on == kind || on == "both")),
                "{key} on a {kind} span is not in docs/tracing.md"
            );
        }
    }

    assert_eq!(h.gateway.tracer.unwrap().counts.exported.load(std::sync::atomic::Ordering::Relaxed), 6);
    let metrics = uprox_gateway::admin::respond("/metrics", &h.gateway).into_body().collect().await.unwrap().to_bytes();
    let metrics = String::from_utf8(metrics.to_vec()).unwrap();
    assert!(metrics.contains("uprox_trace_spans_total{result=\"exported\"} 6\n"), "{metrics}");
    assert!(metrics.contains("uprox_trace_spans_total{result=\"dropped\"} 0\n"), "{metrics}");
}

#[tokio::test]
async fn unsampled_traces_are_not_exported_but_still_propagated() {
    let (up, otlp) = (common::chat_upstream(USAGE).await, collector(200).await);
    let h = gateway(&otlp, &up, 0.0).await;
    let body = r#"{"model":"gpt-4o","messages":[{"role":"user","content":"hi"}]}"#;
    // A new trace at ratio 0: not recorded; the provider still gets a (not sampled) parent.
    assert_eq!(chat(&h, Some(TOKEN), None, body).await.status(), 200);
    // A caller that samples its trace wins over the ratio.
    assert_eq!(chat(&h, Some(TOKEN), Some(CALLER), body).await.status(), 200);
    // A caller that does not sample: nothing recorded.
    let unsampled = "00-1af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-00";
    assert_eq!(chat(&h, Some(TOKEN), Some(unsampled), body).await.status(), 200);

    assert!(common::eventually(WITHIN, || async { spans(&otlp).len() >= 2 }).await);
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let spans = spans(&otlp);
    assert_eq!(spans.len(), 2, "only the sampled caller's request: {spans:#?}");
    assert!(spans.iter().all(|s| s["traceId"] == "0af7651916cd43dd8448eb211c80319c"));
    let seen = up.seen.lock().unwrap();
    let parents: Vec<&str> = seen.iter().map(|s| s.headers["traceparent"].to_str().unwrap()).collect();
    assert!(parents[0].ends_with("-00") && !parents[0].contains("0af7651916cd43dd8448eb211c80319c"), "{parents:?}");
    assert!(parents[1].starts_with("00-0af7651916cd43dd8448eb211c80319c-") && parents[1].ends_with("-01"));
    assert!(parents[2].starts_with("00-1af7651916cd43dd8448eb211c80319c-") && parents[2].ends_with("-00"));
}

#[tokio::test]
async fn a_collector_that_refuses_spans_costs_requests_nothing() {
    let (up, otlp) = (common::chat_upstream(USAGE).await, collector(400).await);
    let h = gateway(&otlp, &up, 1.0).await;
    let body = r#"{"model":"gpt-4o","messages":[{"role":"user","content":"hi"}]}"#;
    for _ in 0..3 {
        assert_eq!(chat(&h, Some(TOKEN), None, body).await.status(), 200);
    }
    let counts = &h.gateway.tracer.unwrap().counts;
    let failed = || counts.failed.load(std::sync::atomic::Ordering::Relaxed);
    assert!(common::eventually(WITHIN, || async { failed() >= 6 }).await, "{}", failed());
    assert_eq!(counts.exported.load(std::sync::atomic::Ordering::Relaxed), 0);
    let exports = otlp.seen.lock().unwrap().len();
    assert!((1..=3).contains(&exports), "a 400 is not retried: {exports} exports");
}
