//! The audit log: one line per request with the documented fields, for a success, a denial, a
//! cache hit, an upstream failure and a client that went away; and no token or provider key in
//! anything the gateway logs, at any level.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::{Harness, PROVIDER_KEY, TOKEN, identity_with};
use http_body_util::BodyExt as _;
use serde_json::Value;
use tracing_subscriber::layer::SubscriberExt as _;

const WITHIN: Duration = Duration::from_secs(10);
const PRICES: &str = r#"prices: [{model: "gpt-*", inputPerMTok: "2", outputPerMTok: "10", cachedInputPerMTok: "1"}]"#;
const USAGE: &str = r#"{"prompt_tokens":1000,"completion_tokens":500,"total_tokens":1500,"prompt_tokens_details":{"cached_tokens":200}}"#;

/// Everything written to it, shared.
#[derive(Clone, Default)]
struct Captured(Arc<Mutex<Vec<u8>>>);

impl std::io::Write for Captured {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl<'a> tracing_subscriber::fmt::MakeWriter<'a> for Captured {
    type Writer = Captured;
    fn make_writer(&'a self) -> Captured {
        self.clone()
    }
}

impl Captured {
    fn text(&self) -> String {
        String::from_utf8(self.0.lock().unwrap().clone()).unwrap()
    }

    fn lines(&self) -> Vec<Value> {
        self.text().lines().map(|l| serde_json::from_str(l).unwrap()).collect()
    }
}

/// The documented fields, read from the table in docs/audit-log.md.
fn documented_fields() -> Vec<String> {
    let doc = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../docs/audit-log.md")).unwrap();
    doc.lines().filter_map(|l| l.strip_prefix("| `")).filter_map(|l| l.split('`').next()).map(str::to_owned).collect()
}

async fn post(h: &Harness, token: Option<&str>, body: &str) -> reqwest::Response {
    let mut r = h
        .client
        .post(h.url("/v1/chat/completions"))
        .header("content-type", "application/json")
        .header("user-agent", "audit-test/1.0")
        .header("x-request-id", "req-audit-test-0001");
    if let Some(t) = token {
        r = r.bearer_auth(t);
    }
    r.body(body.to_owned()).send().await.unwrap()
}

#[tokio::test]
async fn every_request_gets_one_documented_line_and_no_secret_is_ever_logged() {
    let audit = Captured::default();
    let everything = Captured::default();
    let subscriber = tracing_subscriber::registry()
        .with(uprox_gateway::audit::layer(audit.clone()))
        .with(tracing_subscriber::fmt::layer().with_writer(everything.clone()).with_ansi(false))
        .with(tracing_subscriber::filter::LevelFilter::TRACE);
    let _guard = tracing::subscriber::set_default(subscriber);

    let up = common::chat_upstream(USAGE).await;
    let policy = r#"
---
apiVersion: uprox.dev/v1alpha1
kind: Policy
metadata: {name: p, namespace: team}
spec: {models: ["gpt-*"]}
"#;
    let yaml = common::upstream_provider(&up.base_url(), PROVIDER_KEY, r#"["gpt-*", "other-*"]"#, PRICES)
        + &identity_with("{policies: [p], cacheTtlSeconds: 60}", "")
        + policy;
    let h = Harness::start(&yaml).await;
    let chat = r#"{"model":"gpt-4o","temperature":0,"messages":[{"role":"user","content":"hi"}]}"#;

    // 1. A success (a cache miss), 2. the same again (a hit), 3. no token, 4. a model the Policy
    // refuses, 5. an upstream failure, 6. a client that leaves mid-stream.
    assert!(!post(&h, Some(TOKEN), chat).await.text().await.unwrap().is_empty());
    assert!(common::cache_holds(&h.gateway, 1).await, "the first answer is stored");
    assert_eq!(post(&h, Some(TOKEN), chat).await.headers()["x-uprox-cache"], "HIT");
    assert_eq!(post(&h, None, chat).await.status(), 401);
    assert_eq!(post(&h, Some(TOKEN), r#"{"model":"other-1","messages":[]}"#).await.status(), 403);
    let failing = r#"{"model":"gpt-4o","messages":[{"role":"user","content":"fail"}]}"#;
    assert_eq!(post(&h, Some(TOKEN), failing).await.status(), 500);
    let mut streamed = post(&h, Some(TOKEN), r#"{"model":"gpt-4o","stream":true,"messages":[]}"#).await;
    streamed.chunk().await.unwrap().unwrap();
    drop(streamed);

    assert!(common::eventually(WITHIN, || async { audit.lines().len() >= 6 }).await, "{}", audit.text());
    tokio::time::sleep(Duration::from_millis(100)).await;
    let lines = audit.lines();
    assert_eq!(lines.len(), 6, "one line per request:\n{}", audit.text());
    let documented = documented_fields();
    for line in &lines {
        let mut keys: Vec<&String> = line.as_object().unwrap().keys().collect();
        keys.sort();
        let mut expected: Vec<&String> = documented.iter().collect();
        expected.sort();
        assert_eq!(keys, expected, "the fields are the documented ones: {line}");
        assert_eq!(line["target"], "uprox::audit");
        assert_eq!(line["request_id"], "req-audit-test-0001");
        assert_eq!(line["user_agent"], "audit-test/1.0");
        assert_eq!(line["client_ip"], "127.0.0.1");
        assert_eq!(line["endpoint"], "chat.completions");
    }
    // Lines are written as responses finish; find each by what it is.
    let find = |status: u64, cache: &str, completed: bool| {
        lines
            .iter()
            .find(|l| l["status"] == status && l["cache"] == cache && l["completed"] == completed)
            .unwrap_or_else(|| panic!("no line with status {status}, cache {cache:?}:\n{lines:#?}"))
    };

    let success = find(200, "miss", true);
    assert_eq!(success["namespace"], "team");
    assert_eq!(success["service"], "app");
    assert_eq!(success["token"], "app");
    assert_eq!(success["provider"], "team/upstream");
    assert_eq!(success["key"], "main");
    assert_eq!(success["requested_model"], "gpt-4o");
    assert_eq!(success["model"], "gpt-4o-2024-08-06");
    assert_eq!(success["error_type"], "");
    assert_eq!((success["prompt_tokens"].as_u64(), success["completion_tokens"].as_u64()), (Some(1000), Some(500)));
    assert_eq!(success["cached_tokens"], 200);
    assert_eq!(success["usage_estimated"], false);
    // 800 × $2 + 200 × $1 + 500 × $10 per million.
    assert_eq!(success["cost_usd"], "0.0068");
    assert_eq!(success["saved_usd"], "0");
    assert_eq!(success["retries"], 0);
    let (latency, ttfb) = (success["latency_ms"].as_f64().unwrap(), success["ttfb_ms"].as_f64().unwrap());
    assert!(ttfb >= 0.0 && latency >= ttfb, "{latency} {ttfb}");

    let hit = find(200, "hit", true);
    assert_eq!((hit["cost_usd"].as_str(), hit["saved_usd"].as_str()), (Some("0"), Some("0.0068")));
    assert_eq!(hit["prompt_tokens"], 0, "a hit consumes no tokens");
    assert_eq!(hit["model"], "gpt-4o-2024-08-06");

    let unauthenticated = find(401, "", true);
    assert_eq!(unauthenticated["error_type"], "missing_api_key");
    assert_eq!(unauthenticated["service"], "");
    let refused = find(403, "", true);
    assert_eq!(refused["service"], "app");
    assert_eq!(refused["requested_model"], "other-1");
    assert!(!refused["error_type"].as_str().unwrap().is_empty(), "{refused}");
    assert_eq!(refused["cost_usd"], "0");

    let failed = find(500, "", true);
    assert_eq!(failed["error_type"], "upstream_error");
    assert_eq!(failed["cost_usd"], "0", "upstream errors cost nothing");

    let left = find(200, "", false);
    assert_eq!(left["usage_estimated"], true, "charged an estimate: {left}");
    assert!(left["completion_tokens"].as_u64().unwrap() >= 1);

    // The same requests, counted on the admin port: an exposition that parses, with the series.
    let metrics = uprox_gateway::admin::respond("/metrics", &h.gateway).into_body().collect().await.unwrap().to_bytes();
    let metrics = String::from_utf8(metrics.to_vec()).unwrap();
    for line in metrics.lines().filter(|l| !l.starts_with('#') && !l.is_empty()) {
        let (series, value) = line.rsplit_once(' ').unwrap();
        assert!(value.parse::<f64>().is_ok(), "value of {line}");
        let name = series.split('{').next().unwrap();
        assert!(name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_'), "name of {line}");
        assert!(!series.contains('{') || series.ends_with('}'), "labels of {line}");
    }
    let app = r#"namespace="team",service="app""#;
    for expected in [
        format!(r#"uprox_requests_total{{{app},provider="team/upstream",model="gpt-4o-2024-08-06",endpoint="chat.completions",status_class="2xx"}} 2"#),
        format!(r#"uprox_denials_total{{{app},reason="policy"}} 1"#),
        r#"uprox_denials_total{namespace="",service="",reason="auth"} 1"#.to_owned(),
        r#"uprox_upstream_errors_total{provider="team/upstream",key="main",class="http_5xx"} 1"#.to_owned(),
        format!(r#"gen_ai_client_token_usage_sum{{{app},provider="team/upstream",model="gpt-4o-2024-08-06",token_type="cached"}} 200"#),
        format!(r#"gen_ai_server_time_to_first_token_seconds_count{{{app},provider="team/upstream",model="gpt-4o"}} 1"#),
        r#"uprox_upstream_duration_seconds_count{provider="team/upstream"} 3"#.to_owned(),
        "uprox_requests_in_flight 0".to_owned(),
        "uprox_config_generation 1".to_owned(),
        r#"uprox_cache_hits_total{namespace="team",service="app",provider="team/upstream",model="gpt-4o-2024-08-06"} 1"#.to_owned(),
    ] {
        assert!(metrics.contains(&expected), "{expected} missing in
{metrics}");
    }

    // Nothing the gateway logged — at any level, audit or not — holds a token or a key.
    let all = everything.text() + &audit.text();
    assert!(all.contains("request"), "the capture works");
    for secret in [TOKEN, PROVIDER_KEY, &TOKEN[11..30], &PROVIDER_KEY[8..]] {
        assert!(!all.contains(secret), "a secret was logged:\n{all}");
    }
}
