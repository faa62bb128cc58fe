//! `GET /v1/models` and `GET /v1/models/{id}` end to end: explicit lists answered from the
//! config, default-pattern Providers (OpenAI, Anthropic) answered from their upstream listing,
//! the allowlists, de-duplication, the cache (hits, expiry, coalescing), and Providers that fail
//! or time out being skipped and counted.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::sync::Arc;
use std::time::{Duration, Instant};

use common::{Harness, PROVIDER_KEY, Seen, TOKEN, Upstream, error_of, reply};
use uprox_gateway::app::Settings;

/// OpenAI's listing: davinci-002 matches none of the default patterns; gpt-3.5-turbo is left
/// out by the Policy.
const OPENAI_LISTING: &str = r#"{"object":"list","data":[
  {"id":"gpt-4o","object":"model","created":1715367049,"owned_by":"system"},
  {"id":"gpt-4o-mini","object":"model","created":1721172741,"owned_by":"system"},
  {"id":"davinci-002","object":"model","created":1692634301,"owned_by":"system"},
  {"id":"gpt-3.5-turbo","object":"model","created":1677610602,"owned_by":"openai"},
  {"id":"text-embedding-3-small","object":"model","created":1705948997,"owned_by":"system"}]}"#;

const ANTHROPIC_LISTING: &str = r#"{"data":[{"type":"model","id":"claude-sonnet-4-20250514",
  "display_name":"Claude Sonnet 4","created_at":"2025-05-22T00:00:00Z"}],
  "has_more":false,"first_id":"claude-sonnet-4-20250514","last_id":"claude-sonnet-4-20250514"}"#;

/// An upstream answering `GET {prefix}/models` with `listing` (after `delay`, with `status`).
async fn lister(listing: &'static str, status: u16, delay: Duration) -> Upstream {
    Upstream::start(Arc::new(move |s: Seen| {
        Box::pin(async move {
            tokio::time::sleep(delay).await;
            if s.path.ends_with("/models") {
                reply(status, "application/json", listing)
            } else {
                reply(404, "application/json", r#"{"error":{"message":"no","type":"x","param":null,"code":null}}"#)
            }
        })
    }))
    .await
}

fn count(upstream: &Upstream) -> usize {
    upstream.seen.lock().unwrap().len()
}

/// An `openai` and an `anthropic` Provider with default models at the given upstreams, and
/// `azure`, `openai-compatible` and `mock` Providers with explicit lists, a Policy and the
/// identity holding [`TOKEN`].
fn manifests(openai: &Upstream, anthropic: &Upstream, policy: &str) -> String {
    format!(
        r#"
apiVersion: uprox.dev/v1alpha1
kind: Provider
metadata: {{name: openai, namespace: team}}
spec:
  type: openai
  baseUrl: "http://{openai}/v1"
  keys: [{{label: main, secretRef: {{name: keys, key: openai}}}}]
---
apiVersion: uprox.dev/v1alpha1
kind: Provider
metadata: {{name: claude, namespace: team}}
spec:
  type: anthropic
  baseUrl: "http://{anthropic}"
  keys: [{{label: main, secretRef: {{name: keys, key: anthropic}}}}]
---
apiVersion: uprox.dev/v1alpha1
kind: Provider
metadata: {{name: azure, namespace: team}}
spec:
  type: azure
  baseUrl: "http://127.0.0.1:9"
  models: ["gpt4o-deploy", "emb-*"]
  keys: [{{label: main, secretRef: {{name: keys, key: openai}}}}]
---
apiVersion: uprox.dev/v1alpha1
kind: Provider
metadata: {{name: compat, namespace: team}}
spec:
  type: openai-compatible
  baseUrl: "http://127.0.0.1:9/v1"
  models: ["llama-3", "llama-*", "gpt-4o", "meta-llama/Llama-3-8B"]
  keys: [{{label: main, secretRef: {{name: keys, key: openai}}}}]
---
apiVersion: uprox.dev/v1alpha1
kind: Provider
metadata: {{name: mock, namespace: team}}
spec: {{type: mock}}
---
apiVersion: v1
kind: Secret
metadata: {{name: keys, namespace: team}}
stringData: {{openai: "{PROVIDER_KEY}", anthropic: sk-ant-key}}
---
apiVersion: uprox.dev/v1alpha1
kind: Policy
metadata: {{name: p, namespace: team}}
spec: {policy}
"#,
        openai = openai.addr,
        anthropic = anthropic.addr,
    ) + &common::identity_with("{policies: [p]}", "")
}

const POLICY: &str =
    r#"{models: ["gpt-4o*", "gpt4o-deploy", "claude-*", "llama-*", "meta-llama/*", "mock-*", "text-embedding-*"]}"#;

async fn get(h: &Harness, path: &str) -> reqwest::Response {
    h.client.get(h.url(path)).bearer_auth(TOKEN).send().await.unwrap()
}

async fn ids(h: &Harness) -> Vec<String> {
    let r = get(h, "/v1/models").await;
    assert_eq!(r.status(), 200);
    let v: serde_json::Value = r.json().await.unwrap();
    assert_eq!(v["object"], "list");
    v["data"].as_array().unwrap().iter().map(|m| m["id"].as_str().unwrap().to_owned()).collect()
}

#[tokio::test]
async fn the_listing_merges_explicit_lists_and_upstream_listings_within_the_allowlists() {
    let openai = lister(OPENAI_LISTING, 200, Duration::ZERO).await;
    let anthropic = lister(ANTHROPIC_LISTING, 200, Duration::ZERO).await;
    let h = Harness::start(&manifests(&openai, &anthropic, POLICY)).await;

    let r = get(&h, "/v1/models").await;
    assert_eq!(r.status(), 200);
    assert_eq!(r.headers()["content-type"], "application/json");
    let v: serde_json::Value = r.json().await.unwrap();
    let data = v["data"].as_array().unwrap();
    let listed: Vec<(&str, &str)> =
        data.iter().map(|m| (m["id"].as_str().unwrap(), m["owned_by"].as_str().unwrap())).collect();
    // Routing order (own namespace, by name); globs are not listed; the first Provider naming
    // an id wins; davinci-002 matches no default pattern and gpt-3.5-turbo no Policy pattern.
    assert_eq!(
        listed,
        [
            ("gpt4o-deploy", "azure"),
            ("claude-sonnet-4-20250514", "anthropic"),
            ("llama-3", "openai-compatible"),
            ("gpt-4o", "openai-compatible"),
            ("meta-llama/Llama-3-8B", "openai-compatible"),
            ("mock-1", "mock"),
            ("mock-2", "mock"),
            ("gpt-4o-mini", "system"),
            ("text-embedding-3-small", "system"),
        ]
    );
    assert!(data.iter().all(|m| m["object"] == "model" && m["created"].is_u64()));
    assert_eq!(data[1]["created"], 1_747_872_000, "Anthropic's created_at");
    assert_eq!(data[7]["created"], 1_721_172_741, "OpenAI's created");

    // Each upstream was asked once, with its own key and headers.
    let seen = openai.seen.lock().unwrap().clone();
    assert_eq!(seen.len(), 1);
    assert_eq!(seen[0].path, "/v1/models");
    assert_eq!(seen[0].authorization.as_deref(), Some(format!("Bearer {PROVIDER_KEY}").as_str()));
    let seen = anthropic.seen.lock().unwrap().clone();
    assert_eq!(seen.len(), 1);
    assert_eq!(seen[0].path, "/v1/models");
    assert_eq!(seen[0].query.as_deref(), Some("limit=1000"));
    assert_eq!(seen[0].headers["x-api-key"], "sk-ant-key");
    assert_eq!(seen[0].headers["anthropic-version"], "2023-06-01");
    assert!(seen[0].authorization.is_none());

    // The Azure shapes list the same; the cache answers them.
    for path in ["/openai/models", "/openai/v1/models"] {
        let r = h.client.get(h.url(path)).header("api-key", TOKEN).send().await.unwrap();
        let v: serde_json::Value = r.json().await.unwrap();
        assert_eq!(v["data"].as_array().unwrap().len(), 9, "{path}");
    }
    assert_eq!((count(&openai), count(&anthropic)), (1, 1), "listings are cached");
    assert_eq!(h.gateway.models.fetches(), 2);
    assert_eq!(h.gateway.models.list_failures(), 0);
}

#[tokio::test]
async fn one_model_is_retrieved_or_not_found() {
    let openai = lister(OPENAI_LISTING, 200, Duration::ZERO).await;
    let anthropic = lister(ANTHROPIC_LISTING, 200, Duration::ZERO).await;
    let h = Harness::start(&manifests(&openai, &anthropic, POLICY)).await;

    let r = get(&h, "/v1/models/gpt-4o-mini").await;
    assert_eq!(r.status(), 200);
    assert!(r.headers().contains_key("x-request-id"));
    let v: serde_json::Value = r.json().await.unwrap();
    assert_eq!(
        v,
        serde_json::json!({"id": "gpt-4o-mini", "object": "model", "created": 1_721_172_741, "owned_by": "system"})
    );
    let v: serde_json::Value = get(&h, "/v1/models/GPT-4O-MINI").await.json().await.unwrap();
    assert_eq!(v["id"], "gpt-4o-mini", "ids compare ignoring case, the listed spelling is answered");
    assert_eq!(count(&anthropic), 0, "only Providers whose patterns match the id are consulted");

    for (path, id, owner) in [
        ("/v1/models/gpt-4o", "gpt-4o", "openai-compatible"),
        ("/v1/models/mock-2", "mock-2", "mock"),
        ("/v1/models/claude-sonnet-4-20250514", "claude-sonnet-4-20250514", "anthropic"),
        ("/v1/models/meta-llama%2FLlama-3-8B", "meta-llama/Llama-3-8B", "openai-compatible"),
        ("/v1/models/meta-llama/Llama-3-8B", "meta-llama/Llama-3-8B", "openai-compatible"),
        ("/openai/models/gpt4o-deploy?api-version=2024-10-21", "gpt4o-deploy", "azure"),
        ("/openai/v1/models/llama-3", "llama-3", "openai-compatible"),
    ] {
        let r = get(&h, path).await;
        assert_eq!(r.status(), 200, "{path}");
        let v: serde_json::Value = r.json().await.unwrap();
        assert_eq!((v["id"].as_str().unwrap(), v["owned_by"].as_str().unwrap()), (id, owner), "{path}");
        assert_eq!(v["object"], "model");
    }

    // Not allowed by the Policy, matched by no pattern, a glob, unknown, malformed: all 404.
    for (path, id) in [
        ("/v1/models/gpt-3.5-turbo", "gpt-3.5-turbo"),
        ("/v1/models/davinci-002", "davinci-002"),
        ("/v1/models/llama-70b", "llama-70b"),
        ("/v1/models/emb-*", "emb-*"),
        ("/v1/models/no-such-model", "no-such-model"),
        ("/v1/models/bad%zz", "bad%zz"),
    ] {
        let r = get(&h, path).await;
        assert_eq!(r.status(), 404, "{path}");
        let e = error_of(r).await;
        assert_eq!(e["code"], "model_not_found", "{path}");
        assert_eq!(e["type"], "invalid_request_error");
        assert_eq!(e["param"], "model");
        assert!(e["message"].as_str().unwrap().contains(id), "{e}");
    }
    assert_eq!(count(&openai), 1, "one fetch serves every retrieval");

    let r = h.client.post(h.url("/v1/models/gpt-4o")).bearer_auth(TOKEN).send().await.unwrap();
    assert_eq!(r.status(), 405);
    let r = h.client.get(h.url("/v1/models/gpt-4o")).send().await.unwrap();
    assert_eq!(r.status(), 401);
}

#[tokio::test]
async fn the_provider_allowlist_leaves_providers_out_without_asking_them() {
    let openai = lister(OPENAI_LISTING, 200, Duration::ZERO).await;
    let anthropic = lister(ANTHROPIC_LISTING, 200, Duration::ZERO).await;
    let h = Harness::start(&manifests(&openai, &anthropic, r#"{providers: ["mock", "az*"]}"#)).await;
    assert_eq!(ids(&h).await, ["gpt4o-deploy", "mock-1", "mock-2"]);
    assert_eq!((count(&openai), count(&anthropic)), (0, 0));
    let r = get(&h, "/v1/models/gpt-4o-mini").await;
    assert_eq!(r.status(), 404, "a model of a Provider the caller may not use is not found");
}

#[tokio::test]
async fn explicit_lists_of_openai_and_anthropic_are_not_asked_upstream() {
    let openai = lister(OPENAI_LISTING, 200, Duration::ZERO).await;
    let anthropic = lister(ANTHROPIC_LISTING, 200, Duration::ZERO).await;
    let yaml = manifests(&openai, &anthropic, "{}")
        .replacen("  type: openai\n", "  type: openai\n  models: [\"gpt-4o\", \"o3*\"]\n", 1)
        .replacen("  type: anthropic\n", "  type: anthropic\n  models: [\"claude-opus-4\"]\n", 1);
    let h = Harness::start(&yaml).await;
    let listed = ids(&h).await;
    assert_eq!(
        listed,
        ["gpt4o-deploy", "claude-opus-4", "llama-3", "gpt-4o", "meta-llama/Llama-3-8B", "mock-1", "mock-2"]
    );
    assert_eq!((count(&openai), count(&anthropic)), (0, 0));
}

#[tokio::test]
async fn a_provider_that_fails_to_list_is_skipped_and_counted() {
    let openai = lister(r#"{"error":{"message":"boom"}}"#, 500, Duration::ZERO).await;
    let anthropic = lister("not json", 200, Duration::ZERO).await;
    let h = Harness::start(&manifests(&openai, &anthropic, POLICY)).await;
    assert_eq!(
        ids(&h).await,
        ["gpt4o-deploy", "llama-3", "gpt-4o", "meta-llama/Llama-3-8B", "mock-1", "mock-2"],
        "the others are still listed"
    );
    assert_eq!(h.gateway.models.list_failures(), 2);
    // A failure is retried after a while, not by every request.
    assert_eq!(ids(&h).await.len(), 6);
    let r = get(&h, "/v1/models/gpt-4o-mini").await;
    assert_eq!(r.status(), 404);
    assert_eq!(h.gateway.models.list_failures(), 2);
    assert_eq!(h.gateway.models.fetches(), 2);
    // The 500 is retried on the next key too: a single key here, so one request.
    assert_eq!((count(&openai), count(&anthropic)), (1, 1));
}

#[tokio::test]
async fn a_slow_listing_is_skipped_at_the_list_timeout() {
    let openai = lister(OPENAI_LISTING, 200, Duration::from_secs(10)).await;
    let anthropic = lister(ANTHROPIC_LISTING, 200, Duration::ZERO).await;
    let settings = Settings { list_timeout: Duration::from_millis(300), ..Settings::default() };
    let h = Harness::start_with(&manifests(&openai, &anthropic, POLICY), settings).await;
    let started = Instant::now();
    let listed = ids(&h).await;
    assert!(started.elapsed() < Duration::from_secs(3), "{:?}", started.elapsed());
    assert!(listed.contains(&"claude-sonnet-4-20250514".to_owned()));
    assert!(!listed.contains(&"gpt-4o-mini".to_owned()));
    assert_eq!(h.gateway.models.list_failures(), 1);
}

#[tokio::test]
async fn concurrent_misses_share_one_fetch_and_entries_expire() {
    let openai = lister(OPENAI_LISTING, 200, Duration::from_millis(300)).await;
    let anthropic = lister(ANTHROPIC_LISTING, 200, Duration::from_millis(300)).await;
    let settings = Settings { models_ttl: Duration::from_millis(800), ..Settings::default() };
    let h = Harness::start_with(&manifests(&openai, &anthropic, POLICY), settings).await;
    let all = futures_util::future::join_all((0..12).map(|_| ids(&h))).await;
    assert!(all.iter().all(|ids| ids.len() == 9), "{all:?}");
    assert_eq!((count(&openai), count(&anthropic)), (1, 1), "one fetch per Provider");

    tokio::time::sleep(Duration::from_millis(900)).await;
    assert_eq!(ids(&h).await.len(), 9);
    assert_eq!((count(&openai), count(&anthropic)), (2, 2), "an expired entry is fetched again");
}

#[tokio::test]
async fn a_list_of_patterns_only_is_answered_from_the_upstreams_listing() {
    // An openai-compatible server (vLLM, Ollama…) configured to serve whatever it has: the
    // listing is its own, filtered by the patterns; without asking, nothing could be listed.
    let listing = r#"{"object":"list","data":[{"id":"llama-3.1-8b","object":"model","created":1,"owned_by":"vllm"},
      {"id":"mistral-7b","object":"model","created":2,"owned_by":"vllm"}]}"#;
    let compat = lister(listing, 200, Duration::ZERO).await;
    let yaml = common::upstream_provider(&compat.base_url(), PROVIDER_KEY, r#"["llama-*"]"#, "")
        + &common::identity_with("{}", "");
    let h = Harness::start(&yaml).await;
    assert_eq!(ids(&h).await, ["llama-3.1-8b"]);
    assert_eq!(get(&h, "/v1/models/llama-3.1-8b").await.status(), 200);
    assert_eq!(get(&h, "/v1/models/mistral-7b").await.status(), 404, "outside the Provider's patterns");
    let seen = compat.seen.lock().unwrap().clone();
    assert_eq!(seen[0].path, "/v1/models");
    assert_eq!(seen[0].authorization.as_deref(), Some(format!("Bearer {PROVIDER_KEY}").as_str()));

    // `["*"]`: everything the server lists.
    let everything = lister(listing, 200, Duration::ZERO).await;
    let yaml = common::upstream_provider(&everything.base_url(), PROVIDER_KEY, r#"["*"]"#, "")
        + &common::identity_with("{}", "");
    let h = Harness::start(&yaml).await;
    assert_eq!(ids(&h).await, ["llama-3.1-8b", "mistral-7b"]);
}
