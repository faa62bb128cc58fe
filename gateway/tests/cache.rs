//! The response cache end to end: hit and miss, TTL expiry, tenant isolation, byte-exact
//! stream replay, one entry answering both shapes, the bypass headers, errors never stored, the
//! byte bounds, Policy modes, zero cost on a hit (also past a spent Budget) and the metrics.
//!
//! The upstream numbers its answers, so a hit is provably the first answer and not a new one.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use common::{Harness, PROVIDER_KEY, Seen, TOKEN, TOKEN2, Upstream, identity_with, reply};
use http_body_util::BodyExt as _;
use uprox_gateway::app::Settings;

const WITHIN: Duration = Duration::from_secs(10);
const PRICES: &str = r#"prices: [{model: "gpt-*", inputPerMTok: "2", outputPerMTok: "10"}, {model: "text-embedding-*", inputPerMTok: "0.02", outputPerMTok: "0"}]"#;
/// 1000 input tokens at $2 and 500 output at $10 per million, in pico-USD.
const CHAT_COST: u128 = 1000 * 2_000_000 + 500 * 10_000_000;
const CHAT: &str = r#"{"model":"gpt-4o","temperature":0,"messages":[{"role":"user","content":"hi"}]}"#;
const STREAM: &str = r#"{"model":"gpt-4o","temperature":0,"stream":true,"messages":[{"role":"user","content":"hi"}]}"#;
const USAGE: &str = r#"{"prompt_tokens":1000,"completion_tokens":500,"total_tokens":1500}"#;

/// An OpenAI-like upstream whose answers say how many requests it has had (`answer 1`, …).
/// `fail` in the last message's content makes it answer 500; `big` makes the content 8 KiB.
async fn numbered_upstream() -> Upstream {
    let calls = Arc::new(AtomicUsize::new(0));
    Upstream::start(Arc::new(move |s: Seen| {
        let n = calls.fetch_add(1, Ordering::SeqCst) + 1;
        Box::pin(async move {
            let request: serde_json::Value = serde_json::from_slice(&s.body).unwrap();
            let prompt = request["messages"][0]["content"].as_str().unwrap_or_default().to_owned();
            if prompt == "fail" {
                return reply(500, "application/json", r#"{"error":{"message":"boom","type":"server_error"}}"#);
            }
            let content = if prompt == "big" { "x".repeat(8192) } else { format!("answer {n}") };
            if s.path.ends_with("/embeddings") {
                let body = format!(
                    r#"{{"object":"list","data":[{{"object":"embedding","index":0,"embedding":[{n}.0]}}],"model":"text-embedding-3-small","usage":{{"prompt_tokens":5000,"total_tokens":5000}}}}"#
                );
                return reply(200, "application/json", body);
            }
            if request["stream"] == true {
                let with_usage = request["stream_options"]["include_usage"] == true;
                let chunk = |delta: &str, finish: &str| {
                    format!(
                        "data: {{\"id\":\"c{n}\",\"object\":\"chat.completion.chunk\",\"created\":1,\"model\":\"gpt-4o\",\"choices\":[{{\"index\":0,\"delta\":{delta},\"finish_reason\":{finish}}}]}}\n\n"
                    )
                };
                let mut body = chunk(r#"{"role":"assistant","content":""}"#, "null");
                body += &chunk(&serde_json::json!({ "content": content }).to_string(), "null");
                body += &chunk("{}", "\"stop\"");
                if with_usage {
                    body += &format!(
                        "data: {{\"id\":\"c{n}\",\"object\":\"chat.completion.chunk\",\"created\":1,\"model\":\"gpt-4o\",\"choices\":[],\"usage\":{USAGE}}}\n\n"
                    );
                }
                body += "data: [DONE]\n\n";
                return reply(200, "text/event-stream", body);
            }
            let body = serde_json::json!({
                "id": format!("c{n}"), "object": "chat.completion", "created": 1, "model": "gpt-4o",
                "choices": [{"index": 0, "message": {"role": "assistant", "content": content}, "finish_reason": "stop"}],
                "usage": serde_json::from_str::<serde_json::Value>(USAGE).unwrap(),
            });
            reply(200, "application/json", body.to_string())
        })
    }))
    .await
}

/// The priced upstream Provider and `team/app` with `service_spec`, and `extra` manifests.
fn manifests(base_url: &str, service_spec: &str, extra: &str) -> String {
    common::upstream_provider(base_url, PROVIDER_KEY, r#"["gpt-*", "text-embedding-*"]"#, PRICES)
        + &identity_with(service_spec, "")
        + extra
}

fn calls(up: &Upstream) -> usize {
    up.seen.lock().unwrap().len()
}

fn cache_header(r: &reqwest::Response) -> Option<String> {
    r.headers().get("x-uprox-cache").map(|v| v.to_str().unwrap().to_owned())
}

/// Status, `x-uprox-cache` and body of a request.
async fn send(
    h: &Harness,
    path: &str,
    token: &str,
    body: &str,
    cache_control: Option<&str>,
) -> (u16, Option<String>, String) {
    let mut r = h.client.post(h.url(path)).bearer_auth(token).header("content-type", "application/json");
    if let Some(cc) = cache_control {
        r = r.header("cache-control", cc);
    }
    let r = r.body(body.to_owned()).send().await.unwrap();
    let (status, header) = (r.status().as_u16(), cache_header(&r));
    (status, header, r.text().await.unwrap())
}

async fn chat(h: &Harness, body: &str) -> (u16, Option<String>, String) {
    send(h, "/v1/chat/completions", TOKEN, body, None).await
}

/// The gateway's metrics text.
async fn metrics(h: &Harness) -> String {
    let body = uprox_gateway::admin::respond("/metrics", &h.gateway).into_body().collect().await.unwrap().to_bytes();
    String::from_utf8(body.to_vec()).unwrap()
}

/// Pico-USD costed for `team/app`.
fn spent(h: &Harness) -> u128 {
    let snapshot = h.gateway.snapshot().unwrap();
    let service = snapshot.services.iter().find(|s| s.id.name == "app").unwrap();
    u128::from(service.meter.total_pico())
}

/// Waits until the first answer is in the cache (it is stored as its body ends, a moment after
/// the client has read it).
async fn stored(h: &Harness, entries: u64) {
    assert!(common::cache_holds(&h.gateway, entries).await, "the answer was not stored");
}

#[tokio::test]
async fn a_deterministic_request_is_answered_from_the_cache_at_no_cost() {
    let up = numbered_upstream().await;
    let h = Harness::start(&manifests(&up.base_url(), "{cacheTtlSeconds: 60}", "")).await;
    let (status, header, first) = chat(&h, CHAT).await;
    assert_eq!((status, header.as_deref()), (200, Some("MISS")));
    assert!(first.contains("answer 1"), "{first}");
    stored(&h, 1).await;

    // The same request, written differently (key order, `user`), is a hit: the first answer.
    let same = r#"{"messages":[{"content":"hi","role":"user"}],"user":"someone","temperature":0.0,"model":"gpt-4o"}"#;
    let (status, header, second) = chat(&h, same).await;
    assert_eq!((status, header.as_deref()), (200, Some("HIT")));
    assert_eq!(second, first, "the cached answer, byte for byte");
    assert_eq!(calls(&up), 1, "no upstream call on a hit");

    // A hit costs nothing and records what it saved.
    assert!(common::eventually(WITHIN, || async { spent(&h) == CHAT_COST }).await);
    let text = metrics(&h).await;
    let labels = r#"{namespace="team",service="app",provider="team/upstream",model="gpt-4o"}"#;
    for line in [
        format!("uprox_cache_hits_total{labels} 1\n"),
        format!("uprox_cache_misses_total{labels} 1\n"),
        format!("uprox_cache_saved_usd_total{labels} 0.007\n"),
        format!("uprox_costed_requests_total{labels} 1\n"),
    ] {
        assert!(text.contains(&line), "{line} missing in\n{text}");
    }
    assert!(text.contains("uprox_cache_entries 1\n") && text.contains("# TYPE uprox_cache_bytes gauge"), "{text}");
    assert_eq!(spent(&h), CHAT_COST, "the hit was not charged");

    // A sampled request is not eligible: no header, always upstream.
    let sampled = r#"{"model":"gpt-4o","temperature":0.7,"messages":[{"role":"user","content":"hi"}]}"#;
    for n in [2, 3] {
        let (_, header, body) = chat(&h, sampled).await;
        assert_eq!(header, None);
        assert!(body.contains(&format!("answer {n}")));
    }
    // A seed makes it eligible; a different prompt is another entry.
    let seeded = r#"{"model":"gpt-4o","seed":7,"temperature":0.7,"messages":[{"role":"user","content":"hi"}]}"#;
    assert_eq!(chat(&h, seeded).await.1.as_deref(), Some("MISS"));
    let other = r#"{"model":"gpt-4o","temperature":0,"messages":[{"role":"user","content":"hello"}]}"#;
    assert_eq!(chat(&h, other).await.1.as_deref(), Some("MISS"));
}

#[tokio::test]
async fn without_a_ttl_nothing_is_cached() {
    let up = numbered_upstream().await;
    let h = Harness::start(&manifests(&up.base_url(), "{}", "")).await;
    for _ in 0..2 {
        let (status, header, _) = chat(&h, CHAT).await;
        assert_eq!((status, header), (200, None));
    }
    assert_eq!(calls(&up), 2);
}

#[tokio::test]
async fn entries_expire_after_the_policy_ttl() {
    let up = numbered_upstream().await;
    let policy = r#"
---
apiVersion: uprox.dev/v1alpha1
kind: Policy
metadata: {name: short, namespace: team}
spec: {cache: {ttlSeconds: 1}}
"#;
    // The Policy's shorter TTL wins over the Service's.
    let h = Harness::start(&manifests(&up.base_url(), "{cacheTtlSeconds: 3600, policies: [short]}", policy)).await;
    assert_eq!(chat(&h, CHAT).await.1.as_deref(), Some("MISS"));
    stored(&h, 1).await;
    assert_eq!(chat(&h, CHAT).await.1.as_deref(), Some("HIT"));
    tokio::time::sleep(Duration::from_millis(1300)).await;
    let (_, header, body) = chat(&h, CHAT).await;
    assert_eq!(header.as_deref(), Some("MISS"), "expired");
    assert!(body.contains("answer 2"), "{body}");
}

#[tokio::test]
async fn a_token_with_a_shorter_ttl_does_not_read_older_entries() {
    let up = numbered_upstream().await;
    // A second token of team/app whose own Policy allows answers at most 1 s old.
    let short = format!(
        r#"
---
apiVersion: uprox.dev/v1alpha1
kind: Policy
metadata: {{name: short, namespace: team}}
spec: {{cache: {{ttlSeconds: 1}}}}
---
apiVersion: uprox.dev/v1alpha1
kind: MachineToken
metadata: {{name: fresh, namespace: team}}
spec: {{service: app, secretName: fresh-token, policies: [short]}}
---
apiVersion: v1
kind: Secret
metadata:
  name: fresh-token
  namespace: team
  labels: {{uprox.dev/machine-token: fresh}}
  annotations: {{uprox.dev/rotation: "0"}}
stringData: {{token: "{TOKEN2}"}}
"#
    );
    let h = Harness::start(&manifests(&up.base_url(), "{cacheTtlSeconds: 3600}", &short)).await;
    assert_eq!(chat(&h, CHAT).await.1.as_deref(), Some("MISS"));
    stored(&h, 1).await;
    let path = "/v1/chat/completions";
    assert_eq!(send(&h, path, TOKEN2, CHAT, None).await.1.as_deref(), Some("HIT"), "the same Service's entry");
    tokio::time::sleep(Duration::from_millis(1300)).await;
    assert_eq!(chat(&h, CHAT).await.1.as_deref(), Some("HIT"), "young enough for the Service's TTL");
    let (_, header, body) = send(&h, path, TOKEN2, CHAT, None).await;
    assert_eq!(header.as_deref(), Some("MISS"), "too old for the token's TTL");
    assert!(body.contains("answer 2"));
}

#[tokio::test]
async fn a_policy_can_cache_every_request_or_none() {
    let up = numbered_upstream().await;
    let policies = r#"
---
apiVersion: uprox.dev/v1alpha1
kind: Policy
metadata: {name: replay, namespace: team}
spec: {cache: {mode: All, ttlSeconds: 60}}
"#;
    let h = Harness::start(&manifests(&up.base_url(), "{policies: [replay]}", policies)).await;
    let sampled = r#"{"model":"gpt-4o","temperature":0.9,"messages":[{"role":"user","content":"hi"}]}"#;
    assert_eq!(chat(&h, sampled).await.1.as_deref(), Some("MISS"));
    stored(&h, 1).await;
    assert_eq!(chat(&h, sampled).await.1.as_deref(), Some("HIT"), "mode All caches sampled requests");

    let off = policies.replace("mode: All", "mode: Off");
    let up = numbered_upstream().await;
    let h = Harness::start(&manifests(&up.base_url(), "{cacheTtlSeconds: 60, policies: [replay]}", &off)).await;
    for _ in 0..2 {
        assert_eq!(chat(&h, CHAT).await.1, None, "mode Off turns the Service's cache off");
    }
    assert_eq!(calls(&up), 2);
}

#[tokio::test]
async fn two_services_never_share_an_entry() {
    let up = numbered_upstream().await;
    let other = common::identity_of("other", "{cacheTtlSeconds: 60}", "", TOKEN2);
    let h = Harness::start(&manifests(&up.base_url(), "{cacheTtlSeconds: 60}", &other)).await;
    let (_, header, first) = chat(&h, CHAT).await;
    assert_eq!(header.as_deref(), Some("MISS"));
    stored(&h, 1).await;
    let (_, header, theirs) = send(&h, "/v1/chat/completions", TOKEN2, CHAT, None).await;
    assert_eq!(header.as_deref(), Some("MISS"), "the other Service does not read team/app's entry");
    assert!(theirs.contains("answer 2") && first.contains("answer 1"));
    stored(&h, 2).await;
    assert!(send(&h, "/v1/chat/completions", TOKEN2, CHAT, None).await.2.contains("answer 2"));
    assert!(chat(&h, CHAT).await.2.contains("answer 1"));
}

#[tokio::test]
async fn a_stream_is_replayed_byte_for_byte_and_answers_the_other_shape_too() {
    let up = numbered_upstream().await;
    let h = Harness::start(&manifests(&up.base_url(), "{cacheTtlSeconds: 60}", "")).await;
    let (_, header, first) = chat(&h, STREAM).await;
    assert_eq!(header.as_deref(), Some("MISS"));
    assert!(first.ends_with("data: [DONE]\n\n") && !first.contains("\"usage\""), "{first}");
    stored(&h, 1).await;
    let r = h.chat(STREAM).await;
    assert_eq!(r.headers()["content-type"], "text/event-stream");
    assert_eq!(cache_header(&r).as_deref(), Some("HIT"));
    assert_eq!(r.text().await.unwrap(), first, "the same events, [DONE] included");

    // A client asking for usage gets a usage chunk the recorded client did not ask for.
    let asked = r#"{"model":"gpt-4o","temperature":0,"stream":true,"stream_options":{"include_usage":true},"messages":[{"role":"user","content":"hi"}]}"#;
    let (_, header, with_usage) = chat(&h, asked).await;
    assert_eq!(header.as_deref(), Some("HIT"));
    assert!(with_usage.contains("\"choices\":[]") && with_usage.contains("\"total_tokens\":1500"), "{with_usage}");
    assert!(with_usage.ends_with("data: [DONE]\n\n"));

    // A non-streamed request gets the completion the stream made.
    let (_, header, json) = chat(&h, CHAT).await;
    assert_eq!(header.as_deref(), Some("HIT"));
    let json: serde_json::Value = serde_json::from_str(&json).unwrap();
    assert_eq!(json["object"], "chat.completion");
    assert_eq!(json["choices"][0]["message"]["content"], "answer 1");
    assert_eq!(json["choices"][0]["finish_reason"], "stop");
    assert_eq!(json["usage"]["total_tokens"], 1500);
    assert_eq!(calls(&up), 1);
}

#[tokio::test]
async fn a_json_entry_answers_a_stream() {
    let up = numbered_upstream().await;
    let h = Harness::start(&manifests(&up.base_url(), "{cacheTtlSeconds: 60}", "")).await;
    assert_eq!(chat(&h, CHAT).await.1.as_deref(), Some("MISS"));
    stored(&h, 1).await;
    let (_, header, events) = chat(&h, STREAM).await;
    assert_eq!(header.as_deref(), Some("HIT"));
    assert!(events.ends_with("data: [DONE]\n\n"), "{events}");
    let content: String = events
        .lines()
        .filter_map(|l| l.strip_prefix("data: "))
        .filter(|d| *d != "[DONE]")
        .map(|d| serde_json::from_str::<serde_json::Value>(d).unwrap())
        .filter_map(|c| c["choices"][0]["delta"]["content"].as_str().map(str::to_owned))
        .collect();
    assert_eq!(content, "answer 1");
    assert!(!events.contains("\"usage\":{"), "no usage chunk unless asked: {events}");
    assert_eq!(calls(&up), 1);
}

#[tokio::test]
async fn cache_control_bypasses_reading_or_writing() {
    let up = numbered_upstream().await;
    let h = Harness::start(&manifests(&up.base_url(), "{cacheTtlSeconds: 60}", "")).await;
    let path = "/v1/chat/completions";
    // no-store: answered upstream, not kept.
    assert_eq!(send(&h, path, TOKEN, CHAT, Some("no-store")).await.1.as_deref(), Some("MISS"));
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(h.gateway.cache.store().entries(), 0);
    let (_, header, body) = chat(&h, CHAT).await;
    assert_eq!(header.as_deref(), Some("MISS"));
    assert!(body.contains("answer 2"));
    stored(&h, 1).await;
    // no-cache: not read (a fresh answer), but stored for the next request.
    let (_, header, fresh) = send(&h, path, TOKEN, CHAT, Some("no-cache")).await;
    assert_eq!(header.as_deref(), Some("MISS"));
    assert!(fresh.contains("answer 3"), "{fresh}");
    assert!(
        common::eventually(WITHIN, || async { chat(&h, CHAT).await.2.contains("answer 3") }).await,
        "the no-cache answer replaced the entry"
    );
    assert_eq!(calls(&up), 3);
}

#[tokio::test]
async fn errors_are_never_cached() {
    let up = numbered_upstream().await;
    let h = Harness::start(&manifests(&up.base_url(), "{cacheTtlSeconds: 60}", "")).await;
    let failing = r#"{"model":"gpt-4o","temperature":0,"messages":[{"role":"user","content":"fail"}]}"#;
    for _ in 0..2 {
        let (status, header, _) = chat(&h, failing).await;
        assert_eq!((status, header.as_deref()), (500, Some("MISS")));
    }
    assert_eq!(calls(&up), 2);
    assert_eq!(h.gateway.cache.store().entries(), 0);
}

#[tokio::test]
async fn answers_over_the_entry_limit_are_not_kept_and_memory_stays_bounded() {
    let up = numbered_upstream().await;
    let mut settings = Settings::default();
    settings.cache.max_bytes = 16 * 1024;
    settings.cache.max_entry_bytes = 4 * 1024;
    let h = Harness::start_with(&manifests(&up.base_url(), "{cacheTtlSeconds: 60}", ""), settings).await;
    let big = r#"{"model":"gpt-4o","temperature":0,"messages":[{"role":"user","content":"big"}]}"#;
    for _ in 0..2 {
        let (status, header, body) = chat(&h, big).await;
        assert_eq!((status, header.as_deref()), (200, Some("MISS")));
        assert!(body.len() > 8192, "relayed whole");
    }
    for i in 0..40 {
        let body = format!(r#"{{"model":"gpt-4o","temperature":0,"messages":[{{"role":"user","content":"p{i}"}}]}}"#);
        chat(&h, &body).await;
    }
    tokio::time::sleep(Duration::from_millis(200)).await;
    let held = h.gateway.cache.store().weighted_bytes();
    assert!(held > 0 && held <= 16 * 1024, "{held} bytes held");
    assert!(metrics(&h).await.contains("uprox_cache_max_bytes 16384\n"));
}

#[tokio::test]
async fn a_hit_is_served_when_the_budget_is_spent() {
    let up = numbered_upstream().await;
    // One answer costs $0.007: the first spends the whole budget.
    let budget = r#"
---
apiVersion: uprox.dev/v1alpha1
kind: Budget
metadata: {name: cap, namespace: team}
spec: {services: [app], monthlyUSD: "0.005"}
"#;
    let h = Harness::start(&manifests(&up.base_url(), "{cacheTtlSeconds: 60}", budget)).await;
    assert_eq!(chat(&h, CHAT).await.0, 200);
    stored(&h, 1).await;
    assert!(common::eventually(WITHIN, || async { spent(&h) == CHAT_COST }).await);
    let other = r#"{"model":"gpt-4o","temperature":0,"messages":[{"role":"user","content":"new"}]}"#;
    assert_eq!(chat(&h, other).await.0, 402, "a new request is refused");
    let (status, header, _) = chat(&h, CHAT).await;
    assert_eq!((status, header.as_deref()), (200, Some("HIT")), "a hit costs nothing, so it is served");
}

#[tokio::test]
async fn embeddings_are_always_eligible() {
    let up = numbered_upstream().await;
    let h = Harness::start(&manifests(&up.base_url(), "{cacheTtlSeconds: 60}", "")).await;
    let body = r#"{"model":"text-embedding-3-small","input":"x"}"#;
    let (_, header, first) = send(&h, "/v1/embeddings", TOKEN, body, None).await;
    assert_eq!(header.as_deref(), Some("MISS"));
    stored(&h, 1).await;
    let (_, header, second) = send(&h, "/v1/embeddings", TOKEN, body, None).await;
    assert_eq!(header.as_deref(), Some("HIT"));
    assert_eq!(first, second);
    assert_eq!(calls(&up), 1);
}

#[tokio::test]
async fn responses_are_cached_in_both_shapes() {
    let up = Upstream::start(Arc::new(|s: Seen| {
        Box::pin(async move { uprox_gateway::providers::mock::responses::respond(&s.body).unwrap() })
    }))
    .await;
    let h = Harness::start(&manifests(&up.base_url(), "{cacheTtlSeconds: 60}", "")).await;
    let create = r#"{"model":"gpt-4o","input":"Name three colours.","seed":1}"#;
    let streamed = r#"{"model":"gpt-4o","input":"Name three colours.","seed":1,"stream":true}"#;
    let (status, header, json) = send(&h, "/v1/responses", TOKEN, create, None).await;
    assert_eq!((status, header.as_deref()), (200, Some("MISS")));
    stored(&h, 1).await;
    let (_, header, again) = send(&h, "/v1/responses", TOKEN, create, None).await;
    assert_eq!((header.as_deref(), &again), (Some("HIT"), &json));
    let (_, header, events) = send(&h, "/v1/responses", TOKEN, streamed, None).await;
    assert_eq!(header.as_deref(), Some("HIT"));
    let completed = events
        .split("\n\n")
        .filter_map(|e| e.lines().find_map(|l| l.strip_prefix("data: ")))
        .map(|d| serde_json::from_str::<serde_json::Value>(d).unwrap())
        .find(|e| e["type"] == "response.completed")
        .expect("the stream ends with response.completed");
    assert_eq!(completed["response"], serde_json::from_str::<serde_json::Value>(&json).unwrap());
    assert_eq!(calls(&up), 1);
}

#[tokio::test]
async fn translated_anthropic_answers_are_cached_as_the_client_got_them() {
    let up = common::anthropic_upstream(
        r#"{"id":"msg_1","type":"message","role":"assistant","model":"claude-x","content":[{"type":"text","text":"Hello there"}],"stop_reason":"end_turn","stop_sequence":null,"usage":{"input_tokens":12,"output_tokens":5}}"#,
    )
    .await;
    let yaml =
        common::anthropic_provider(&format!("http://{}", up.addr), "") + &identity_with("{cacheTtlSeconds: 60}", "");
    let h = Harness::start(&yaml).await;
    let stream = r#"{"model":"claude-x","temperature":0,"stream":true,"messages":[{"role":"user","content":"hi"}]}"#;
    let (_, header, first) = chat(&h, stream).await;
    assert_eq!(header.as_deref(), Some("MISS"));
    assert!(first.contains("chat.completion.chunk") && first.ends_with("data: [DONE]\n\n"), "{first}");
    stored(&h, 1).await;
    let (_, header, second) = chat(&h, stream).await;
    assert_eq!((header.as_deref(), &second), (Some("HIT"), &first), "the translated events, replayed");
    let (_, header, json) =
        chat(&h, r#"{"model":"claude-x","temperature":0,"messages":[{"role":"user","content":"hi"}]}"#).await;
    assert_eq!(header.as_deref(), Some("HIT"));
    let json: serde_json::Value = serde_json::from_str(&json).unwrap();
    assert_eq!(json["choices"][0]["message"]["content"], "Hello there");
    assert_eq!(json["usage"]["prompt_tokens"], 12);
    assert_eq!(calls(&up), 1);
}

#[tokio::test]
async fn a_stream_the_client_left_is_not_cached() {
    // The upstream sends one chunk, then stays silent.
    let up = Upstream::start(Arc::new(|_s: Seen| Box::pin(async move { common::stalled_stream() }))).await;
    let h = Harness::start(&manifests(&up.base_url(), "{cacheTtlSeconds: 60}", "")).await;
    let mut r = h.chat(STREAM).await;
    assert_eq!(cache_header(&r).as_deref(), Some("MISS"));
    let chunk = r.chunk().await.unwrap().unwrap();
    assert!(chunk.starts_with(b"data: "));
    drop(r);
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(h.gateway.cache.store().entries(), 0, "a partial answer is never stored");
}

#[tokio::test]
async fn identical_concurrent_misses_make_one_upstream_call() {
    let calls_made = Arc::new(AtomicUsize::new(0));
    let counter = calls_made.clone();
    let up = Upstream::start(Arc::new(move |s: Seen| {
        let n = counter.fetch_add(1, Ordering::SeqCst) + 1;
        Box::pin(async move {
            // Slow enough that every request arrives while the first is upstream.
            tokio::time::sleep(Duration::from_millis(300)).await;
            let _ = s;
            let body = serde_json::json!({
                "id": format!("c{n}"), "object": "chat.completion", "created": 1, "model": "gpt-4o",
                "choices": [{"index": 0, "message": {"role": "assistant", "content": format!("answer {n}")}, "finish_reason": "stop"}],
                "usage": serde_json::from_str::<serde_json::Value>(USAGE).unwrap(),
            });
            reply(200, "application/json", body.to_string())
        })
    }))
    .await;
    let h = Arc::new(Harness::start(&manifests(&up.base_url(), "{cacheTtlSeconds: 60}", "")).await);
    let requests: Vec<_> = (0..5)
        .map(|_| {
            let h = h.clone();
            tokio::spawn(async move { chat(&h, CHAT).await })
        })
        .collect();
    let mut headers = Vec::new();
    for request in requests {
        let (status, header, body) = request.await.unwrap();
        assert_eq!(status, 200);
        assert!(body.contains("answer 1"), "every request got the one answer: {body}");
        headers.push(header.unwrap());
    }
    headers.sort();
    assert_eq!(headers, ["HIT", "HIT", "HIT", "HIT", "MISS"]);
    assert_eq!(calls_made.load(Ordering::SeqCst), 1);
    assert_eq!(h.gateway.cache.flights().in_flight(), 0);
}

#[tokio::test]
async fn a_stream_recorded_with_usage_keeps_it_only_for_clients_that_ask() {
    let up = numbered_upstream().await;
    let h = Harness::start(&manifests(&up.base_url(), "{cacheTtlSeconds: 60}", "")).await;
    let asked = r#"{"model":"gpt-4o","temperature":0,"stream":true,"stream_options":{"include_usage":true},"messages":[{"role":"user","content":"hi"}]}"#;
    let (_, header, first) = chat(&h, asked).await;
    assert_eq!(header.as_deref(), Some("MISS"));
    assert!(first.contains("\"choices\":[],\"usage\":{"), "{first}");
    stored(&h, 1).await;
    let (_, header, again) = chat(&h, asked).await;
    assert_eq!((header.as_deref(), &again), (Some("HIT"), &first), "replayed as recorded");
    let (_, header, plain) = chat(&h, STREAM).await;
    assert_eq!(header.as_deref(), Some("HIT"));
    assert!(!plain.contains("\"usage\":{") && plain.contains("answer 1"), "the usage chunk is cut: {plain}");
    assert_eq!(plain.len(), first.len() - first.split("\n\n").find(|e| e.contains("\"usage\":{")).unwrap().len() - 2);
    assert_eq!(calls(&up), 1);
}
