//! Rate limits end to end: requests per minute (429 with `retry-after` and OpenAI's
//! `x-ratelimit-*` headers, which successful answers carry too), tokens per minute charged from
//! the usage of JSON and SSE answers, concurrency held by a slow stream, counters kept across a
//! reload, and one limit shared by two cluster-mode replicas that learn of each other from their
//! Service's EndpointSlice.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::sync::Arc;
use std::time::Duration;

use common::{Harness, PROVIDER_KEY, Seen, TOKEN, Upstream, error_of, identity_with, reply};
use uprox_crds::cluster::{config_maps, keys_fingerprint, keys_secret, master_key_secret};
use uprox_crds::compile::compile;
use uprox_crds::sealed::{MasterKey, seal_keys};
use uprox_gateway::app::{Gateway, Settings};
use uprox_gateway::cluster;
use uprox_gateway::standalone::manifests::{Manifests, load_text};
use uprox_testkit::apiserver::FakeApiServer;

const WITHIN: Duration = Duration::from_secs(10);
const CHAT: &str = r#"{"model":"gpt-4o","messages":[{"role":"user","content":"hi"}]}"#;

/// An upstream answering chat completions with `total_tokens` usage, as JSON or (when the
/// request asks for it) SSE with a final usage chunk, after `delay`.
async fn upstream(total_tokens: u64, delay: Duration) -> Upstream {
    Upstream::start(Arc::new(move |s: Seen| {
        Box::pin(async move {
            tokio::time::sleep(delay).await;
            let stream = std::str::from_utf8(&s.body).unwrap().contains("\"stream\":true");
            if stream {
                let body = format!(
                    "data: {{\"id\":\"c\",\"object\":\"chat.completion.chunk\",\"choices\":[{{\"index\":0,\"delta\":{{\"content\":\"hi\"}}}}]}}\n\n\
                     data: {{\"id\":\"c\",\"object\":\"chat.completion.chunk\",\"choices\":[],\"usage\":{{\"prompt_tokens\":1,\"completion_tokens\":{},\"total_tokens\":{total_tokens}}}}}\n\n\
                     data: [DONE]\n\n",
                    total_tokens - 1
                );
                reply(200, "text/event-stream", body)
            } else {
                reply(
                    200,
                    "application/json",
                    format!(
                        r#"{{"id":"c","object":"chat.completion","choices":[{{"index":0,"message":{{"role":"assistant","content":"hi"}},"finish_reason":"stop"}}],"usage":{{"prompt_tokens":1,"completion_tokens":{},"total_tokens":{total_tokens}}}}}"#,
                        total_tokens - 1
                    ),
                )
            }
        })
    }))
    .await
}

/// A Provider at `base_url`, the Policy `limits` with `rate_limits` (flow YAML) attached to the
/// Service, and the token.
fn manifests(base_url: &str, rate_limits: &str, models: &str) -> String {
    common::upstream_provider(base_url, PROVIDER_KEY, r#"["gpt-*"]"#, "")
        + &format!(
            r#"---
apiVersion: uprox.dev/v1alpha1
kind: Policy
metadata: {{name: limits, namespace: team}}
spec: {{models: {models}, rateLimits: {rate_limits}}}
"#
        )
        + &identity_with("{policies: [limits]}", "")
}

fn header<'a>(r: &'a reqwest::Response, name: &str) -> &'a str {
    r.headers().get(name).unwrap_or_else(|| panic!("no {name}")).to_str().unwrap()
}

#[tokio::test]
async fn requests_per_minute_are_refused_with_every_header() {
    let up = upstream(10, Duration::ZERO).await;
    let h =
        Harness::start(&manifests(&up.base_url(), "{requestsPerMinute: 3, tokensPerMinute: 100000}", "[\"gpt-*\"]"))
            .await;
    for remaining in ["2", "1", "0"] {
        let r = h.chat(CHAT).await;
        assert_eq!(r.status(), 200);
        assert_eq!(header(&r, "x-ratelimit-limit-requests"), "3");
        assert_eq!(header(&r, "x-ratelimit-remaining-requests"), remaining);
        assert!(header(&r, "x-ratelimit-reset-requests").ends_with('s'));
        assert_eq!(header(&r, "x-ratelimit-limit-tokens"), "100000");
        assert!(header(&r, "x-ratelimit-remaining-tokens").parse::<u64>().unwrap() <= 100_000);
        assert!(header(&r, "x-ratelimit-reset-tokens").ends_with('s'));
        r.bytes().await.unwrap();
    }
    let r = h.chat(CHAT).await;
    assert_eq!(r.status(), 429);
    let retry: u64 = header(&r, "retry-after").parse().unwrap();
    assert!((1..=20).contains(&retry), "{retry}");
    assert_eq!(header(&r, "x-ratelimit-limit-requests"), "3");
    assert_eq!(header(&r, "x-ratelimit-remaining-requests"), "0");
    assert!(header(&r, "x-ratelimit-reset-requests").ends_with('s'));
    assert_eq!(header(&r, "x-ratelimit-limit-tokens"), "100000");
    assert!(r.headers().contains_key("x-ratelimit-remaining-tokens"));
    assert!(r.headers().contains_key("x-ratelimit-reset-tokens"));
    let e = error_of(r).await;
    assert_eq!(e["type"], "rate_limit_error");
    assert_eq!(e["code"], "rate_limit_exceeded");
    let message = e["message"].as_str().unwrap();
    assert!(message.contains("requests per minute") && message.contains("team/limits"), "{message}");
    assert!(!message.contains(TOKEN) && !message.contains(PROVIDER_KEY));
    assert_eq!(up.seen.lock().unwrap().len(), 3, "refused requests never reach the upstream");

    // The Messages routes answer in Anthropic's shape.
    let r = h.post("/v1/messages", Some(TOKEN), r#"{"model":"claude-x","max_tokens":5,"messages":[]}"#).await;
    assert_eq!(r.status(), 429);
    assert!(r.headers().contains_key("retry-after"));
    let v: serde_json::Value = r.json().await.unwrap();
    assert_eq!(v["type"], "error");
    assert_eq!(v["error"]["type"], "rate_limit_error");
}

#[tokio::test]
async fn tokens_per_minute_go_into_debt_after_a_large_answer() {
    for stream in [false, true] {
        let up = upstream(5000, Duration::ZERO).await;
        let h = Harness::start(&manifests(&up.base_url(), "{tokensPerMinute: 1000}", "[\"gpt-*\"]")).await;
        let body = if stream {
            r#"{"model":"gpt-4o","stream":true,"stream_options":{"include_usage":true},"messages":[{"role":"user","content":"hi"}]}"#
        } else {
            CHAT
        };
        let r = h.chat(body).await;
        assert_eq!(r.status(), 200);
        assert_eq!(header(&r, "x-ratelimit-remaining-tokens"), "1000");
        r.bytes().await.unwrap();
        // 5,000 tokens against 1,000 a minute: in debt for about four minutes.
        let refused = common::eventually(WITHIN, || async { h.chat(CHAT).await.status() == 429 }).await;
        assert!(refused, "stream: {stream}");
        let r = h.chat(CHAT).await;
        let retry: u64 = header(&r, "retry-after").parse().unwrap();
        assert!((200..=240).contains(&retry), "{retry}");
        assert_eq!(header(&r, "x-ratelimit-remaining-tokens"), "0");
        let e = error_of(r).await;
        assert!(e["message"].as_str().unwrap().contains("tokens per minute"), "{e}");
    }
}

#[tokio::test]
async fn concurrency_is_held_until_a_slow_answer_ends() {
    let up = upstream(10, Duration::from_millis(700)).await;
    let h = Arc::new(Harness::start(&manifests(&up.base_url(), "{maxConcurrentRequests: 1}", "[\"gpt-*\"]")).await);
    let slow = {
        let h = h.clone();
        tokio::spawn(async move {
            let r = h.chat(CHAT).await;
            (r.status(), r.bytes().await.unwrap())
        })
    };
    assert!(common::eventually(WITHIN, || async { !up.seen.lock().unwrap().is_empty() }).await);
    let r = h.chat(CHAT).await;
    assert_eq!(r.status(), 429);
    assert_eq!(header(&r, "retry-after"), "1");
    let e = error_of(r).await;
    assert!(e["message"].as_str().unwrap().contains("concurrent requests"), "{e}");
    let (status, _) = tokio::time::timeout(WITHIN, slow).await.unwrap().unwrap();
    assert_eq!(status, 200);
    let ok = common::eventually(WITHIN, || async { h.chat(CHAT).await.status() == 200 }).await;
    assert!(ok, "the slot is released when the answer ends");
}

#[tokio::test]
async fn a_reload_keeps_counters_of_unchanged_limits() {
    let up = upstream(10, Duration::ZERO).await;
    let h = Harness::start(&manifests(&up.base_url(), "{requestsPerMinute: 2}", "[\"gpt-*\"]")).await;
    assert_eq!(h.chat(CHAT).await.status(), 200);
    assert_eq!(h.chat(CHAT).await.status(), 200);
    assert_eq!(h.chat(CHAT).await.status(), 429);

    // The Policy's allowlist changes, its limits do not: still refused.
    let other = r#"{"model":"other","messages":[]}"#;
    std::fs::write(h.config_file(), manifests(&up.base_url(), "{requestsPerMinute: 2}", "[\"gpt-*\", \"other\"]"))
        .unwrap();
    let reloaded = common::eventually(WITHIN, || async {
        // Routed nowhere (404) once the reload allows the model and rate limits let it through;
        // 429 either way while the counter is kept.
        let r = h.chat(other).await;
        r.status() == 429 && h.gateway.snapshot().is_some_and(|s| s.policies[0].models.len() == 2)
    })
    .await;
    assert!(reloaded);
    assert_eq!(h.chat(CHAT).await.status(), 429, "the counter survived the reload");

    // The limit changes: fresh state.
    std::fs::write(h.config_file(), manifests(&up.base_url(), "{requestsPerMinute: 5}", "[\"gpt-*\"]")).unwrap();
    let fresh = common::eventually(WITHIN, || async { h.chat(CHAT).await.status() == 200 }).await;
    assert!(fresh);
}

/// Writes the compiled objects of `yaml` the way the operator does.
fn publish(api: &FakeApiServer, master: &MasterKey, yaml: &str) {
    let mut loaded = Manifests::default();
    let mut errors = Vec::new();
    load_text("test", yaml, &mut loaded, &mut errors);
    assert!(errors.is_empty(), "{errors:?}");
    let compiled = compile(&loaded.resources.inputs());
    assert!(!compiled.has_errors(), "{:?}", compiled.diagnostics);
    let (manifest, parts) = config_maps(NS, &serde_json::to_vec(&compiled.config).unwrap(), 100_000);
    for part in &parts {
        api.put(part);
    }
    let sealed = seal_keys(master, &compiled.keys, || [7u8; 12]).unwrap();
    api.put(&keys_secret(NS, &sealed, &keys_fingerprint(master, &compiled.keys)));
    api.put(&manifest);
}

const NS: &str = "uprox-system";

fn endpoint_slice(ready: &[&str]) -> k8s_openapi::api::discovery::v1::EndpointSlice {
    let endpoints: Vec<serde_json::Value> = ready
        .iter()
        .enumerate()
        .map(|(i, pod)| {
            serde_json::json!({
                "addresses": [format!("10.0.0.{}", i + 1)],
                "conditions": {"ready": true},
                "targetRef": {"kind": "Pod", "namespace": NS, "name": pod}
            })
        })
        .collect();
    serde_json::from_value(serde_json::json!({
        "apiVersion": "discovery.k8s.io/v1",
        "kind": "EndpointSlice",
        "metadata": {"name": "uprox-gateway-abcde", "namespace": NS, "labels": {"kubernetes.io/service-name": "uprox-gateway"}},
        "addressType": "IPv4",
        "endpoints": endpoints
    }))
    .unwrap()
}

#[tokio::test]
async fn two_replicas_share_one_limit() {
    let up = upstream(10, Duration::ZERO).await;
    let api = FakeApiServer::start().await;
    let master = MasterKey::from_bytes([9; 32]);
    api.put(&master_key_secret(NS, &master));
    publish(&api, &master, &manifests(&up.base_url(), "{requestsPerMinute: 6}", "[\"gpt-*\"]"));
    api.put(&endpoint_slice(&["gateway-a", "gateway-b"]));

    let mut replicas = Vec::new();
    for _ in 0..2 {
        let gateway = Gateway::new(Settings::default());
        let config = cluster::watch(gateway.clone(), api.client(), NS.to_owned());
        let peers = cluster::peers::watch(gateway.clone(), api.client(), NS.to_owned(), "uprox-gateway".to_owned());
        let task = tokio::spawn(async move {
            tokio::join!(config, peers);
        });
        let h = Harness::serve(gateway, task, tempfile::tempdir().unwrap()).await;
        let ready =
            common::eventually(WITHIN, || async { h.gateway.is_ready() && h.gateway.limits.replicas() == 2 }).await;
        assert!(ready, "ready and aware of 2 replicas");
        replicas.push(h);
    }
    // Each replica enforces half of 6; together they serve 6, not 12.
    let mut served = 0;
    for h in &replicas {
        for _ in 0..5 {
            if h.chat(CHAT).await.status() == 200 {
                served += 1;
            }
        }
    }
    assert_eq!(served, 6);
    let r = replicas[0].chat(CHAT).await;
    assert_eq!(r.status(), 429);
    assert_eq!(header(&r, "x-ratelimit-limit-requests"), "6", "the Policy's limit, not the share");

    // One replica goes away: the other enforces the whole limit (a rescale restarts its
    // requests-per-minute state).
    api.put(&endpoint_slice(&["gateway-a"]));
    let alone = common::eventually(WITHIN, || async { replicas[0].gateway.limits.replicas() == 1 }).await;
    assert!(alone);
    let mut served = 0;
    for _ in 0..8 {
        if replicas[0].chat(CHAT).await.status() == 200 {
            served += 1;
        }
    }
    assert_eq!(served, 6);
}
