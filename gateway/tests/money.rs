//! Money end to end: the exact cost of real usage shapes (OpenAI chat JSON and streams,
//! embeddings, Anthropic with cache tokens), the usage chunk asked for on the client's behalf and
//! removed, unpriced models, Budgets (402, the window reset, Alert mode, threshold warnings),
//! a client leaving mid-stream, and the usage ledger kept across a restart and shared by two
//! gateways (a file) or two replicas (a ConfigMap).

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::sync::Arc;
use std::time::Duration;

use common::{Harness, PROVIDER_KEY, Seen, TOKEN, Upstream, error_of, identity_with, reply};
use uprox_crds::usage::{Delta, ServiceDelta, Windows};
use uprox_gateway::clock::unix_now;
use uprox_gateway::spend::flush::Flusher;
use uprox_gateway::spend::store::{FileStore, Store};
use uprox_testkit::apiserver::FakeApiServer;

const WITHIN: Duration = Duration::from_secs(10);
/// The prices of the test Provider, in USD per million tokens.
const PRICES: &str = r#"prices: [{model: "gpt-*", inputPerMTok: "2", outputPerMTok: "10", cachedInputPerMTok: "0.5"}, {model: "text-embedding-*", inputPerMTok: "0.02", outputPerMTok: "0"}]"#;
/// What one chat answer of [`chat_upstream`] costs at [`PRICES`]: 800 uncached input tokens at
/// $2, 200 cached at $0.50 and 500 output at $10 per million, in pico-USD.
const CHAT_COST: u128 = 800 * 2_000_000 + 200 * 500_000 + 500 * 10_000_000;
const CHAT: &str = r#"{"model":"gpt-4o","messages":[{"role":"user","content":"hi"}]}"#;
const STREAM: &str = r#"{"model":"gpt-4o","stream":true,"messages":[{"role":"user","content":"hi"}]}"#;

/// An OpenAI-like upstream: JSON, or SSE when asked, whose usage chunk (and `"usage":null` on
/// every chunk) is sent only with `stream_options.include_usage`, as OpenAI does. It reports
/// the dated model name.
async fn chat_upstream() -> Upstream {
    Upstream::start(Arc::new(|s: Seen| {
        Box::pin(async move {
            let request: serde_json::Value = serde_json::from_slice(&s.body).unwrap();
            let model = format!("{}-2024-08-06", request["model"].as_str().unwrap_or_default());
            let usage = r#"{"prompt_tokens":1000,"completion_tokens":500,"total_tokens":1500,"prompt_tokens_details":{"cached_tokens":200,"audio_tokens":0},"completion_tokens_details":{"reasoning_tokens":0}}"#;
            if request["stream"] == true {
                let with_usage = request["stream_options"]["include_usage"] == true;
                let null = if with_usage { r#","usage":null"# } else { "" };
                let mut body = String::new();
                for piece in ["Hel", "lo"] {
                    body += &format!(
                        "data: {{\"id\":\"c\",\"object\":\"chat.completion.chunk\",\"model\":\"{model}\",\"choices\":[{{\"index\":0,\"delta\":{{\"content\":\"{piece}\"}},\"finish_reason\":null}}]{null}}}\n\n"
                    );
                }
                if with_usage {
                    body += &format!(
                        "data: {{\"id\":\"c\",\"object\":\"chat.completion.chunk\",\"model\":\"{model}\",\"choices\":[],\"usage\":{usage}}}\n\n"
                    );
                }
                body += "data: [DONE]\n\n";
                reply(200, "text/event-stream", body)
            } else if s.path.ends_with("/embeddings") {
                reply(
                    200,
                    "application/json",
                    r#"{"object":"list","data":[{"object":"embedding","index":0,"embedding":[0.1,0.2]}],"model":"text-embedding-3-small","usage":{"prompt_tokens":5000,"total_tokens":5000}}"#,
                )
            } else {
                reply(
                    200,
                    "application/json",
                    format!(
                        r#"{{"id":"c","object":"chat.completion","model":"{model}","choices":[{{"index":0,"message":{{"role":"assistant","content":"say \"usage\":{{\"prompt_tokens\":99999}}"}},"finish_reason":"stop"}}],"usage":{usage}}}"#
                    ),
                )
            }
        })
    }))
    .await
}

/// The test Provider (priced with [`PRICES`], serving `gpt-*`, `text-embedding-*` and the
/// unpriced `acme-*`), the Service `team/app` with its token, and `extra` manifests.
fn manifests(base_url: &str, extra: &str) -> String {
    common::upstream_provider(base_url, PROVIDER_KEY, r#"["gpt-*", "text-embedding-*", "acme-*"]"#, PRICES)
        + &identity_with("{}", "")
        + extra
}

/// A Budget of `team/app`: `spec` is the rest of its spec (flow YAML fields).
fn budget(spec: &str) -> String {
    format!(
        r#"
---
apiVersion: uprox.dev/v1alpha1
kind: Budget
metadata: {{name: cap, namespace: team}}
spec: {{services: [app], {spec}}}
"#
    )
}

/// Pico-USD this gateway has costed for `team/app`.
fn spent(h: &Harness) -> u128 {
    let snapshot = h.gateway.snapshot().unwrap();
    let service = snapshot.services.iter().find(|s| s.id.name == "app").unwrap();
    u128::from(service.meter.total_pico())
}

/// Waits until the cost of `team/app` reaches `expected` (the meter settles as the body ends,
/// a moment after the client has read it) and checks it is exactly that.
async fn assert_spent(h: &Harness, expected: u128) {
    common::eventually(WITHIN, || async { spent(h) >= expected }).await;
    tokio::time::sleep(Duration::from_millis(50)).await;
    assert_eq!(spent(h), expected);
}

#[tokio::test]
async fn a_chat_answer_is_costed_exactly_from_the_reported_usage() {
    let up = chat_upstream().await;
    let h = Harness::start(&manifests(&up.base_url(), "")).await;
    let r = h.chat(CHAT).await;
    assert_eq!(r.status(), 200);
    assert!(!r.headers().contains_key("x-uprox-budget-warning"));
    r.bytes().await.unwrap();
    // A usage-looking text inside the answer's content is not read.
    assert_spent(&h, CHAT_COST).await;
    assert_eq!(up.seen.lock().unwrap()[0].body, CHAT, "a JSON request goes upstream untouched");

    // The admin port's metrics carry it by Service, provider and the model the answer named.
    use http_body_util::BodyExt as _;
    let metrics = uprox_gateway::admin::respond("/metrics", &h.gateway).into_body().collect().await.unwrap().to_bytes();
    let metrics = std::str::from_utf8(&metrics).unwrap();
    assert!(
        metrics.contains(r#"uprox_cost_usd_total{namespace="team",service="app",provider="team/upstream",model="gpt-4o-2024-08-06"} 0.0067"#),
        "{metrics}"
    );
}

#[tokio::test]
async fn a_stream_is_costed_and_the_usage_chunk_the_client_did_not_ask_for_is_removed() {
    let up = chat_upstream().await;
    let h = Harness::start(&manifests(&up.base_url(), "")).await;
    let r = h.chat(STREAM).await;
    assert_eq!(r.status(), 200);
    let text = r.text().await.unwrap();
    let sent: serde_json::Value = serde_json::from_slice(&up.seen.lock().unwrap()[0].body).unwrap();
    assert_eq!(sent["stream_options"]["include_usage"], true, "asked upstream on the client's behalf");
    assert!(text.contains("Hel") && text.ends_with("data: [DONE]\n\n"), "{text}");
    assert!(!text.contains("\"usage\":{"), "the usage chunk is removed: {text}");
    assert_spent(&h, CHAT_COST).await;

    // A client that asked for usage gets it, and the body goes upstream as sent.
    let asked = r#"{"model":"gpt-4o","stream":true,"stream_options":{"include_usage":true},"messages":[]}"#;
    let text = h.chat(asked).await.text().await.unwrap();
    assert!(text.contains("\"choices\":[],\"usage\":{\"prompt_tokens\":1000"), "{text}");
    assert_eq!(up.seen.lock().unwrap()[1].body, asked);
    assert_spent(&h, 2 * CHAT_COST).await;
}

#[tokio::test]
async fn embeddings_are_costed_and_unpriced_models_are_served_and_counted() {
    let up = chat_upstream().await;
    let h = Harness::start(&manifests(&up.base_url(), "")).await;
    let r = h.post("/v1/embeddings", Some(TOKEN), r#"{"model":"text-embedding-3-small","input":"x"}"#).await;
    assert_eq!(r.status(), 200);
    r.bytes().await.unwrap();
    assert_spent(&h, 5000 * 20_000).await;

    let r = h.chat(r#"{"model":"acme-1","messages":[]}"#).await;
    assert_eq!(r.status(), 200, "a model without a price is served");
    r.bytes().await.unwrap();
    assert_spent(&h, 5000 * 20_000).await;
    let days = h.gateway.spend.collect();
    let app = &days.last().unwrap().delta.services["team/app"];
    assert_eq!(app.requests, 2);
    assert_eq!(app.unpriced.get("acme-1-2024-08-06"), Some(&1), "named as the answer names it: {app:?}");
}

#[tokio::test]
async fn anthropic_cache_tokens_are_priced_at_their_own_rates() {
    let up = common::anthropic_upstream(
        r#"{"id":"msg_1","type":"message","role":"assistant","model":"claude-sonnet-4-5-20250929","content":[{"type":"tool_use","id":"t","name":"f","input":{"usage":{"input_tokens":999999}}}],"stop_reason":"tool_use","stop_sequence":null,"usage":{"input_tokens":100,"cache_read_input_tokens":2000,"cache_creation_input_tokens":300,"cache_creation":{"ephemeral_5m_input_tokens":200,"ephemeral_1h_input_tokens":100},"output_tokens":50}}"#,
    )
    .await;
    let prices = r#"prices: [{model: "claude-*", inputPerMTok: "3", outputPerMTok: "15", cachedInputPerMTok: "0.3", cacheWritePerMTok: "3.75", cacheWrite1hPerMTok: "6"}]"#;
    let yaml = common::anthropic_provider(&format!("http://{}", up.addr), prices) + &common::identity();
    let h = Harness::start(&yaml).await;
    let r =
        h.post("/v1/messages", Some(TOKEN), r#"{"model":"claude-sonnet-4-5","max_tokens":100,"messages":[]}"#).await;
    assert_eq!(r.status(), 200);
    r.bytes().await.unwrap();
    let messages = 100 * 3_000_000 + 2000 * 300_000 + 200 * 3_750_000 + 100 * 6_000_000 + 50 * 15_000_000;
    assert_spent(&h, messages).await;

    // Translated for a chat completion stream: 12 input and 5 output tokens, read upstream.
    let r = h.chat(r#"{"model":"claude-sonnet-4-5","stream":true,"messages":[{"role":"user","content":"hi"}]}"#).await;
    let text = r.text().await.unwrap();
    assert!(!text.contains("\"usage\""), "the client did not ask for usage: {text}");
    assert_spent(&h, messages + 12 * 3_000_000 + 5 * 15_000_000).await;
}

#[tokio::test]
async fn a_block_budget_refuses_with_402_once_spent_and_the_next_day_allows_again() {
    let up = chat_upstream().await;
    // Each answer costs $0.0067: the second crosses $0.01, the third is refused.
    let h = Harness::start(&manifests(&up.base_url(), &budget(r#"dailyUSD: "0.01""#))).await;
    for _ in 0..2 {
        let r = h.chat(CHAT).await;
        assert_eq!(r.status(), 200);
        r.bytes().await.unwrap();
    }
    assert_spent(&h, 2 * CHAT_COST).await;
    let r = h.chat(CHAT).await;
    assert_eq!(r.status(), 402);
    let e = error_of(r).await;
    assert_eq!(e["type"], "insufficient_quota");
    assert_eq!(e["code"], "insufficient_quota");
    let message = e["message"].as_str().unwrap();
    let tomorrow = uprox_crds::usage::rfc3339(Windows::at(unix_now()).day_resets_at());
    assert!(message.contains("team/cap") && message.contains("daily") && message.contains(&tomorrow), "{message}");
    assert_eq!(up.seen.lock().unwrap().len(), 2, "a refused request never reaches the upstream");

    // The window resets at midnight UTC, for spend still pending and spend in the ledger alike.
    let tomorrow = Windows::at(unix_now()).day_resets_at();
    {
        let snapshot = h.gateway.snapshot().unwrap();
        let app = snapshot.services.iter().position(|s| s.id.name == "app").unwrap();
        assert!(uprox_gateway::spend::budget::check(&snapshot, app, tomorrow).is_ok(), "pending spend");
    }
    let state = tempfile::tempdir().unwrap();
    let store = Store::File(FileStore::new(state.path()).unwrap());
    Flusher::new(h.gateway.spend.clone(), store, Flusher::writer_name("gw")).round(unix_now()).await.unwrap();
    let snapshot = h.gateway.snapshot().unwrap();
    let app = snapshot.services.iter().position(|s| s.id.name == "app").unwrap();
    let check = |now| uprox_gateway::spend::budget::check(&snapshot, app, now);
    assert!(check(unix_now()).is_err());
    assert!(check(Windows::at(unix_now()).day_resets_at()).is_ok(), "a new day starts from zero");
}

#[tokio::test]
async fn an_alert_budget_serves_and_warns_and_thresholds_warn_early() {
    let up = chat_upstream().await;
    let h = Harness::start(&manifests(
        &up.base_url(),
        &budget(r#"monthlyUSD: "0.008", alertThresholds: [50, 100], action: Alert"#),
    ))
    .await;
    let r = h.chat(CHAT).await;
    assert!(!r.headers().contains_key("x-uprox-budget-warning"));
    r.bytes().await.unwrap();
    assert_spent(&h, CHAT_COST).await;
    // $0.0067 of $0.008: past 50%.
    let r = h.chat(CHAT).await;
    assert_eq!(r.status(), 200);
    let warning = r.headers()["x-uprox-budget-warning"].to_str().unwrap().to_owned();
    assert!(warning.contains("team/cap") && warning.contains("83%") && warning.contains("monthly"), "{warning}");
    r.bytes().await.unwrap();
    assert_spent(&h, 2 * CHAT_COST).await;
    // Over the ceiling: still served, with a warning that says so.
    let r = h.chat(CHAT).await;
    assert_eq!(r.status(), 200);
    let warning = r.headers()["x-uprox-budget-warning"].to_str().unwrap();
    assert!(warning.contains("reached its monthly limit") && warning.contains("Alert"), "{warning}");
}

#[tokio::test]
async fn a_client_leaving_mid_stream_is_charged_for_what_was_generated() {
    // Three content chunks, then the upstream keeps the stream open (and would send usage later).
    let up = Upstream::start(Arc::new(|_s: Seen| {
        Box::pin(async move {
            let (tx, rx) = tokio::sync::mpsc::channel::<Result<http_body::Frame<bytes::Bytes>, std::convert::Infallible>>(8);
            tokio::spawn(async move {
                for piece in ["a", "b", "c"] {
                    let event = format!("data: {{\"id\":\"c\",\"model\":\"gpt-4o\",\"choices\":[{{\"index\":0,\"delta\":{{\"content\":\"{piece}\"}}}}],\"usage\":null}}\n\n");
                    let _ = tx.send(Ok(http_body::Frame::data(event.into()))).await;
                }
                tokio::time::sleep(Duration::from_secs(30)).await;
            });
            let body = http_body_util::StreamBody::new(futures_util::stream::unfold(rx, |mut rx| async move {
                rx.recv().await.map(|c| (c, rx))
            }));
            let body = http_body_util::BodyExt::map_err(body, |e| -> uprox_gateway::body::BoxError { match e {} });
            let mut r = http::Response::new(http_body_util::BodyExt::boxed_unsync(body));
            r.headers_mut().insert("content-type", http::HeaderValue::from_static("text/event-stream"));
            r
        })
    }))
    .await;
    let h = Harness::start(&manifests(&up.base_url(), "")).await;
    let mut r = h.chat(STREAM).await;
    assert_eq!(r.status(), 200);
    let mut received = String::new();
    while !received.contains("\"c\"") {
        received += std::str::from_utf8(&r.chunk().await.unwrap().unwrap()).unwrap();
    }
    drop(r);
    // No usage ever came: charged the estimate — the prompt from the request's size and one
    // output token per chunk relayed (three events, which the connection may have merged).
    let sent = up.seen.lock().unwrap()[0].body.len() as u128;
    let prompt = sent / 4 * 2_000_000;
    common::eventually(WITHIN, || async { spent(&h) > 0 }).await;
    tokio::time::sleep(Duration::from_millis(50)).await;
    let charged = spent(&h);
    assert!((prompt + 10_000_000..=prompt + 3 * 10_000_000).contains(&charged), "{charged} for a prompt of {prompt}");
}

#[tokio::test]
async fn a_restarted_gateway_keeps_the_months_spend() {
    let up = chat_upstream().await;
    let state = tempfile::tempdir().unwrap();
    let store = || Store::File(FileStore::new(state.path()).unwrap());
    let yaml = manifests(&up.base_url(), &budget(r#"monthlyUSD: "0.01""#));
    {
        let h = Harness::start(&yaml).await;
        for _ in 0..2 {
            h.chat(CHAT).await.bytes().await.unwrap();
        }
        assert_spent(&h, 2 * CHAT_COST).await;
        // What the flusher does every interval and at shutdown.
        Flusher::new(h.gateway.spend.clone(), store(), Flusher::writer_name("first")).round(unix_now()).await.unwrap();
    }
    let h = Harness::start(&yaml).await;
    // What the gateway does at start-up, before serving.
    Flusher::new(h.gateway.spend.clone(), store(), Flusher::writer_name("second")).round(unix_now()).await.unwrap();
    let r = h.chat(CHAT).await;
    assert_eq!(r.status(), 402, "the month's $0.0134 survived the restart");
}

#[tokio::test]
async fn two_gateways_sharing_one_ledger_enforce_one_budget() {
    let up = chat_upstream().await;
    let state = tempfile::tempdir().unwrap();
    // $0.05 holds 7 answers of $0.0067 (the 8th crosses it); 8 are served in all, not 16.
    let yaml = manifests(&up.base_url(), &budget(r#"dailyUSD: "0.05""#));
    let (a, b) = (Harness::start(&yaml).await, Harness::start(&yaml).await);
    let mut flushers = [&a, &b].map(|h| {
        Flusher::new(
            h.gateway.spend.clone(),
            Store::File(FileStore::new(state.path()).unwrap()),
            Flusher::writer_name("gw"),
        )
    });
    let mut served = 0;
    for round in 0..20 {
        let h = if round % 2 == 0 { &a } else { &b };
        let before = spent(h);
        let r = h.chat(CHAT).await;
        if r.status() == 200 {
            served += 1;
            r.bytes().await.unwrap();
            assert_spent(h, before + CHAT_COST).await;
        }
        // The gateway that served writes its spend, then the other reads it: what happens within
        // one flush interval in production. Spend the other has not read yet is the documented
        // overrun bound.
        let (first, second) = flushers.split_at_mut(1);
        let (serving, other) =
            if round % 2 == 0 { (&mut first[0], &mut second[0]) } else { (&mut second[0], &mut first[0]) };
        serving.round(unix_now()).await.unwrap();
        other.round(unix_now()).await.unwrap();
    }
    assert_eq!(served, 8);
    let ledger = FileStore::new(state.path()).unwrap().read().unwrap().unwrap();
    assert_eq!(ledger.spent("team/app", &Windows::at(unix_now())).0, 8 * CHAT_COST);
}

#[tokio::test]
async fn replicas_add_to_one_ledger_configmap_exactly_once() {
    let api = FakeApiServer::start().await;
    let store = || Store::config_map(api.client(), "uprox-system");
    let delta = Delta {
        services: [(
            "team/app".to_owned(),
            ServiceDelta { pico_usd: 1_000_000, requests: 1, unpriced: Default::default() },
        )]
        .into(),
    };
    let now = unix_now();
    let writers: Vec<_> = ["a", "b", "c"]
        .into_iter()
        .map(|writer| {
            let (store, delta) = (store(), delta.clone());
            tokio::spawn(async move {
                for sequence in 1..=10 {
                    store.apply(writer, sequence, &delta, now, now).await.unwrap();
                }
                // A retry whose first attempt landed is not counted again.
                store.apply(writer, 10, &delta, now, now).await.unwrap();
            })
        })
        .collect();
    for w in writers {
        w.await.unwrap();
    }
    let ledger = store().read().await.unwrap().unwrap();
    assert_eq!(ledger.spent("team/app", &Windows::at(now)), (30_000_000, 30_000_000));
    assert_eq!(ledger.services["team/app"].month_requests, 30);
}

#[tokio::test]
async fn reservations_keep_a_burst_from_overshooting() {
    // A slow upstream: every request of the burst is in flight before any is costed.
    let up = Upstream::start(Arc::new(|_s: Seen| {
        Box::pin(async move {
            tokio::time::sleep(Duration::from_millis(300)).await;
            reply(
                200,
                "application/json",
                r#"{"id":"c","object":"chat.completion","model":"gpt-4o","choices":[],"usage":{"prompt_tokens":10,"completion_tokens":500,"total_tokens":510}}"#,
            )
        })
    }))
    .await;
    let h = Harness::start(&manifests(&up.base_url(), &budget(r#"dailyUSD: "0.05""#))).await;
    // Each reserves its prompt estimate and max_tokens 500 at $10 per million: about $0.005, so
    // about ten fit in $0.05 — without reservations all twenty would start.
    let body = r#"{"model":"gpt-4o","max_tokens":500,"messages":[{"role":"user","content":"hi"}]}"#;
    let burst = (0..20).map(|_| h.chat(body));
    let statuses: Vec<u16> = futures_util::future::join_all(burst).await.iter().map(|r| r.status().as_u16()).collect();
    let served = statuses.iter().filter(|s| **s == 200).count();
    assert!((9..=11).contains(&served), "{statuses:?}");
    assert!(statuses.iter().all(|s| *s == 200 || *s == 402), "{statuses:?}");
}

#[tokio::test]
async fn a_request_refused_by_one_budget_holds_no_reservation_in_another() {
    let up = chat_upstream().await;
    // Budget `aaa` (Alert, checked first) and `cap` (Block, $0.01 a day) both count the Service.
    let alert = r#"
---
apiVersion: uprox.dev/v1alpha1
kind: Budget
metadata: {name: aaa, namespace: team}
spec: {services: [app], monthlyUSD: "100", action: Alert}
"#;
    let h = Harness::start(&(manifests(&up.base_url(), &budget(r#"dailyUSD: "0.01""#)) + alert)).await;
    for _ in 0..2 {
        let r = h.chat(CHAT).await;
        assert_eq!(r.status(), 200);
        r.bytes().await.unwrap();
    }
    assert_spent(&h, 2 * CHAT_COST).await;
    assert_eq!(h.chat(CHAT).await.status(), 402);
    let snapshot = h.gateway.snapshot().unwrap();
    let reserved: Vec<(String, u128)> =
        snapshot.budgets.iter().map(|b| (b.config.id.name.clone(), b.meter.reserved())).collect();
    assert_eq!(reserved, [("aaa".to_owned(), 0), ("cap".to_owned(), 0)], "nothing left reserved");
}
