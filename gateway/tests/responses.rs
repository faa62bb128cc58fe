//! The Responses API end to end: the gateway on 127.0.0.1:0 in front of in-process upstreams.
//! OpenAI-shaped upstreams get `/v1/responses` byte for byte with the provider key (JSON and
//! SSE relayed as they come); Azure gets its v1 surface whatever URL shape the client used;
//! stored responses (`GET`/`DELETE /v1/responses/{id}`, `…/input_items`, `…/cancel`) go to the
//! Service's first stateful provider; the `responses` scope is enforced; Anthropic providers get
//! a translated Messages request and answer as a `response` object or a Responses stream; what
//! Anthropic cannot honour is a 400 naming the parameter.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::sync::Arc;

use common::{ANTHROPIC_STREAM, Harness, PROVIDER_KEY, Seen, TOKEN, Upstream, anthropic_error, reply};
use http::{HeaderValue, Response, header};
use serde_json::{Value, json};
use uprox_gateway::body::Body;
use uprox_gateway::providers::mock;
use uprox_gateway::providers::responses::{SseUsage, response_usage};

/// An OpenAI-like upstream answering the Responses API and chat completions with the mock.
async fn openai_responses() -> Upstream {
    Upstream::start(Arc::new(|seen: Seen| {
        Box::pin(async move {
            let answer = if seen.path.ends_with("/chat/completions") {
                mock::respond(&seen.body, None)
            } else {
                mock::responses::respond(&seen.body)
            };
            answer.unwrap_or_else(|e| e.into_response())
        }) as futures_util::future::BoxFuture<'static, Response<Body>>
    }))
    .await
}

const CREATE: &str = r#"{"model":"gpt-4o-mini","input":"Name three primary colours.","instructions":"Be terse."}"#;

fn events(text: &str) -> Vec<Value> {
    text.split("\n\n")
        .filter(|e| !e.trim().is_empty())
        .map(|e| {
            let data = e.lines().find_map(|l| l.strip_prefix("data: ")).unwrap_or_else(|| panic!("no data: {e:?}"));
            serde_json::from_str(data).unwrap()
        })
        .collect()
}

#[tokio::test]
async fn json_and_sse_pass_through_byte_for_byte_with_the_provider_key() {
    let upstream = openai_responses().await;
    let h = Harness::start(&common::manifests(&upstream.base_url())).await;

    let r = h.post("/v1/responses", Some(TOKEN), CREATE).await;
    assert_eq!(r.status(), 200);
    assert_eq!(r.headers()["content-type"], "application/json");
    let body = r.bytes().await.unwrap();
    let v: Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(v["object"], "response");
    assert_eq!(v["instructions"], "Be terse.");
    let usage = response_usage(&body).unwrap();
    assert!(usage.input_tokens > 0 && usage.output_tokens > 0);
    {
        let seen = upstream.seen.lock().unwrap();
        assert_eq!(seen[0].path, "/v1/responses");
        assert_eq!(seen[0].body.as_ref(), CREATE.as_bytes(), "the body goes upstream untouched");
        assert_eq!(seen[0].authorization.as_deref(), Some(format!("Bearer {PROVIDER_KEY}").as_str()));
    }

    let streamed = CREATE.replace("\"input\"", "\"stream\":true,\"input\"");
    let r = h.post("/v1/responses", Some(TOKEN), streamed.clone()).await;
    assert_eq!(r.status(), 200);
    assert_eq!(r.headers()["content-type"], "text/event-stream");
    let text = r.text().await.unwrap();
    let all = events(&text);
    assert_eq!(all.first().unwrap()["type"], "response.created");
    assert_eq!(all.last().unwrap()["type"], "response.completed");
    let deltas: String = all.iter().filter_map(|e| e["delta"].as_str()).collect();
    assert_eq!(deltas, v["output"][0]["content"][0]["text"].as_str().unwrap(), "the same reply, streamed");
    // The accounting scanner reads the stream's usage as it passes, in any split.
    let mut scanner = SseUsage::default();
    for chunk in text.as_bytes().chunks(5) {
        scanner.push(chunk);
    }
    assert_eq!(scanner.usage(), Some(usage));
    assert_eq!(upstream.seen.lock().unwrap()[1].body.as_ref(), streamed.as_bytes());
}

#[tokio::test]
async fn the_mock_provider_answers_responses() {
    let upstream = openai_responses().await;
    let h = Harness::start(&common::manifests(&upstream.base_url())).await;
    let r = h.post("/v1/responses", Some(TOKEN), r#"{"model":"mock-1","input":"hello"}"#).await;
    assert_eq!(r.status(), 200);
    let v: Value = r.json().await.unwrap();
    assert_eq!(v["status"], "completed");
    assert!(v["output"][0]["content"][0]["text"].as_str().unwrap().contains("hello"));
    assert!(upstream.seen.lock().unwrap().is_empty());

    let r = h.post("/v1/responses", Some(TOKEN), r#"{"model":"mock-1"}"#).await;
    assert_eq!(r.status(), 400);
    assert_eq!(common::error_of(r).await["param"], "input");
}

/// An Azure resource: answers `/openai/v1/responses` like OpenAI with its key, refuses anything
/// else.
async fn azure_resource() -> Upstream {
    Upstream::start(Arc::new(|seen: Seen| {
        Box::pin(async move {
            let ok_key = seen.headers.get("api-key").and_then(|v| v.to_str().ok()) == Some("key-east");
            if !ok_key || seen.authorization.is_some() || !seen.path.starts_with("/openai/v1/responses") {
                return reply(404, "application/json", r#"{"error":{"code":"404","message":"Resource not found"}}"#);
            }
            if seen.path == "/openai/v1/responses" {
                return mock::responses::respond(&seen.body).unwrap_or_else(|e| e.into_response());
            }
            reply(200, "application/json", json!({"path": seen.path, "query": seen.query}).to_string())
        }) as futures_util::future::BoxFuture<'static, Response<Body>>
    }))
    .await
}

fn azure_manifests(resource: &Upstream, api_version: &str) -> String {
    format!(
        r#"
apiVersion: uprox.dev/v1alpha1
kind: Provider
metadata: {{name: azure, namespace: team}}
spec:
  type: azure
  apiVersion: "{api_version}"
  models: ["gpt4o"]
  keys: [{{label: east, endpoint: "http://{addr}", secretRef: {{name: azure-keys, key: east}}}}]
---
apiVersion: v1
kind: Secret
metadata: {{name: azure-keys, namespace: team}}
stringData: {{east: key-east}}
"#,
        addr = resource.addr,
    ) + &common::identity()
}

#[tokio::test]
async fn every_azure_url_shape_reaches_the_v1_surface() {
    let resource = azure_resource().await;
    let h = Harness::start(&azure_manifests(&resource, "2024-10-21")).await;
    let body = r#"{"model":"gpt4o","input":"hi"}"#;
    for path in ["/openai/v1/responses", "/openai/responses?api-version=2025-03-01-preview", "/v1/responses"] {
        let r = h.client.post(h.url(path)).header("api-key", TOKEN).body(body).send().await.unwrap();
        assert_eq!(r.status(), 200, "{path}");
        let v: Value = r.json().await.unwrap();
        assert_eq!(v["object"], "response", "{path}");
    }
    // The deployment URL names the model; the v1 surface reads it from the body.
    let r = h
        .post("/openai/deployments/gpt4o/responses?api-version=2025-03-01-preview", Some(TOKEN), r#"{"input":"hi"}"#)
        .await;
    assert_eq!(r.status(), 200);
    let seen = resource.seen.lock().unwrap().clone();
    assert_eq!(seen.len(), 4);
    for s in &seen {
        assert_eq!(s.path, "/openai/v1/responses");
        assert_eq!(s.query, None, "no dated api-version on the v1 surface");
    }
    assert_eq!(seen[..3].iter().map(|s| s.body.as_ref()).collect::<Vec<_>>(), [body.as_bytes(); 3]);
    let sent: Value = serde_json::from_slice(&seen[3].body).unwrap();
    assert_eq!(sent, json!({"model": "gpt4o", "input": "hi"}));

    // A stored response, on the same surface; the client's api-version is not passed on.
    let r = h
        .client
        .get(h.url("/openai/responses/resp_9?api-version=2025-03-01-preview"))
        .header("api-key", TOKEN)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let v: Value = r.json().await.unwrap();
    assert_eq!(v, json!({"path": "/openai/v1/responses/resp_9", "query": null}));
}

#[tokio::test]
async fn a_preview_api_version_is_sent_to_azure() {
    let resource = azure_resource().await;
    let h = Harness::start(&azure_manifests(&resource, "preview")).await;
    let r = h.post("/v1/responses", Some(TOKEN), r#"{"model":"gpt4o","input":"hi"}"#).await;
    assert_eq!(r.status(), 200);
    assert_eq!(resource.seen.lock().unwrap()[0].query.as_deref(), Some("api-version=preview"));
}

#[tokio::test]
async fn stored_responses_go_to_the_first_stateful_provider() {
    let upstream = Upstream::start(Arc::new(|seen: Seen| {
        Box::pin(async move {
            reply(
                200,
                "application/json",
                json!({"path": seen.path, "query": seen.query, "key": seen.authorization, "body": String::from_utf8_lossy(&seen.body)}).to_string(),
            )
        }) as futures_util::future::BoxFuture<'static, Response<Body>>
    }))
    .await;
    let h = Harness::start(&common::manifests(&upstream.base_url())).await;
    let key = format!("Bearer {PROVIDER_KEY}");

    let get = |path: &'static str| h.client.get(h.url(path)).bearer_auth(TOKEN).send();
    let v: Value = get("/v1/responses/resp_123").await.unwrap().json().await.unwrap();
    assert_eq!(v, json!({"path": "/v1/responses/resp_123", "query": null, "key": key, "body": ""}));
    let v: Value = get("/v1/responses/resp_123/input_items?limit=2&order=asc").await.unwrap().json().await.unwrap();
    assert_eq!(v["path"], "/v1/responses/resp_123/input_items");
    assert_eq!(v["query"], "limit=2&order=asc");

    let r = h.client.delete(h.url("/v1/responses/resp_123")).bearer_auth(TOKEN).send().await.unwrap();
    assert_eq!(r.status(), 200);
    let r = h.post("/v1/responses/resp_123/cancel", Some(TOKEN), "").await;
    let v: Value = r.json().await.unwrap();
    assert_eq!(v["path"], "/v1/responses/resp_123/cancel");
    let methods: Vec<String> = upstream.seen.lock().unwrap().iter().map(|s| s.method.to_string()).collect();
    assert_eq!(methods, ["GET", "GET", "DELETE", "POST"]);

    let r = h.client.put(h.url("/v1/responses/resp_123")).bearer_auth(TOKEN).send().await.unwrap();
    assert_eq!(r.status(), 405);
    assert_eq!(r.headers()["allow"], "GET, DELETE");
    let r = h.client.delete(h.url("/v1/responses/resp_123/input_items")).bearer_auth(TOKEN).send().await.unwrap();
    assert_eq!(r.status(), 405);
    let r = get("/v1/responses/resp%2F..").await.unwrap();
    assert_eq!(r.status(), 400);
    assert_eq!(common::error_of(r).await["param"], "response_id");
    let r = get("/v1/responses/resp_1/other").await.unwrap();
    assert_eq!(r.status(), 404);
    assert_eq!(upstream.seen.lock().unwrap().len(), 4, "refused requests never reach the upstream");
}

#[tokio::test]
async fn a_service_without_a_stateful_provider_is_told_so() {
    let h = Harness::start(&common::mock_manifests()).await;
    let r = h.client.get(h.url("/v1/responses/resp_1")).bearer_auth(TOKEN).send().await.unwrap();
    assert_eq!(r.status(), 400);
    let e = common::error_of(r).await;
    assert_eq!(e["param"], "response_id");
    assert!(e["message"].as_str().unwrap().contains("not stored"), "{e}");
}

#[tokio::test]
async fn the_responses_scope_is_required() {
    let upstream = openai_responses().await;
    let manifests = common::manifests(&upstream.base_url()).replace(
        "spec: {service: app, secretName: app-token}",
        "spec: {service: app, secretName: app-token, scopes: [chat]}",
    );
    assert!(manifests.contains("scopes: [chat]"));
    let h = Harness::start(&manifests).await;
    let r = h.post("/v1/responses", Some(TOKEN), CREATE).await;
    assert_eq!(r.status(), 403);
    let e = common::error_of(r).await;
    assert_eq!(e["type"], "permission_error");
    assert!(e["message"].as_str().unwrap().contains("responses"), "{e}");
    let r = h.client.get(h.url("/v1/responses/resp_1")).bearer_auth(TOKEN).send().await.unwrap();
    assert_eq!(r.status(), 403);
    assert_eq!(h.chat(r#"{"model":"gpt-4o","messages":[{"role":"user","content":"x"}]}"#).await.status(), 200);
    assert_eq!(upstream.seen.lock().unwrap().len(), 1, "only the chat completion went upstream");
}

/// A fake Anthropic: checks the key, path and version, answers JSON or [`ANTHROPIC_STREAM`].
async fn fake_anthropic() -> Upstream {
    Upstream::start(Arc::new(|seen: Seen| {
        Box::pin(async move {
            let header = |name: &str| seen.headers.get(name).and_then(|v| v.to_str().ok());
            if header("x-api-key") != Some(PROVIDER_KEY) || seen.authorization.is_some() {
                return anthropic_error(401, "authentication_error", "invalid x-api-key");
            }
            if seen.path != "/v1/messages" || header("anthropic-version") != Some("2023-06-01") {
                return anthropic_error(400, "invalid_request_error", "bad path or version");
            }
            let v: Value = serde_json::from_slice(&seen.body).unwrap();
            match v["model"].as_str().unwrap() {
                "claude-limited" => {
                    let mut r = anthropic_error(429, "rate_limit_error", "slow down");
                    r.headers_mut().insert(header::RETRY_AFTER, HeaderValue::from_static("7"));
                    r
                }
                _ if v["stream"] == true => reply(200, "text/event-stream", ANTHROPIC_STREAM),
                model => reply(
                    200,
                    "application/json",
                    json!({"id": "msg_2", "type": "message", "role": "assistant", "model": model,
                        "content": [{"type": "text", "text": "Hi!"}, {"type": "tool_use", "id": "toolu_9", "name": "f", "input": {"a": 1}}],
                        "stop_reason": "tool_use",
                        "usage": {"input_tokens": 7, "output_tokens": 3, "cache_read_input_tokens": 2}})
                    .to_string(),
                ),
            }
        }) as futures_util::future::BoxFuture<'static, Response<Body>>
    }))
    .await
}

#[tokio::test]
async fn anthropic_providers_answer_in_the_responses_shape() {
    let upstream = fake_anthropic().await;
    let h = Harness::start(&common::anthropic_manifests(&format!("http://{}", upstream.addr))).await;
    let body = json!({"model": "claude-sonnet", "instructions": "be brief", "max_output_tokens": 64,
        "tools": [{"type": "function", "name": "f", "parameters": {"type": "object", "properties": {}}}],
        "input": [{"role": "user", "content": "hello"}, {"role": "user", "content": "again"}]});
    let r = h.post("/v1/responses", Some(TOKEN), body.to_string()).await;
    assert_eq!(r.status(), 200);
    let v: Value = r.json().await.unwrap();
    assert_eq!(v["object"], "response");
    assert_eq!(v["id"], "resp_2");
    assert_eq!(v["model"], "claude-sonnet");
    assert_eq!(v["status"], "completed");
    assert_eq!(v["output"][0]["content"][0]["text"], "Hi!");
    assert_eq!(
        v["output"][1],
        json!({"id": "fc_9", "type": "function_call", "status": "completed", "call_id": "toolu_9", "name": "f", "arguments": "{\"a\":1}"})
    );
    assert_eq!(v["usage"]["input_tokens"], 9);
    assert_eq!(v["usage"]["input_tokens_details"]["cached_tokens"], 2);
    assert_eq!(v["instructions"], "be brief");
    let sent: Value = serde_json::from_slice(&upstream.seen.lock().unwrap()[0].body).unwrap();
    assert_eq!(sent["system"], "be brief");
    assert_eq!(sent["max_tokens"], 64);
    assert_eq!(
        sent["messages"],
        json!([{"role": "user", "content": [{"type": "text", "text": "hello"}, {"type": "text", "text": "again"}]}])
    );

    let r = h.post("/v1/responses", Some(TOKEN), r#"{"model":"claude-sonnet","input":"hi","stream":true}"#).await;
    assert_eq!(r.status(), 200);
    assert_eq!(r.headers()["content-type"], "text/event-stream");
    let all = events(&r.text().await.unwrap());
    let kinds: Vec<&str> = all.iter().map(|e| e["type"].as_str().unwrap()).collect();
    assert_eq!(
        kinds,
        [
            "response.created",
            "response.in_progress",
            "response.output_item.added",
            "response.content_part.added",
            "response.output_text.delta",
            "response.output_text.delta",
            "response.output_text.done",
            "response.content_part.done",
            "response.output_item.done",
            "response.completed"
        ]
    );
    let done = all.last().unwrap();
    assert_eq!(done["response"]["output"][0]["content"][0]["text"], "Hello there");
    assert_eq!(done["response"]["usage"]["input_tokens"], 12);
    assert_eq!(done["response"]["usage"]["output_tokens"], 5);
}

#[tokio::test]
async fn what_anthropic_cannot_honour_is_refused_by_name_and_upstream_errors_are_mapped() {
    let upstream = fake_anthropic().await;
    let h = Harness::start(&common::anthropic_manifests(&format!("http://{}", upstream.addr))).await;
    for (extra, param) in [
        (json!({"previous_response_id": "resp_1"}), "previous_response_id"),
        (json!({"tools": [{"type": "web_search"}]}), "tools"),
        (json!({"text": {"format": {"type": "json_object"}}}), "text.format"),
        (json!({"text": {"format": {"type": "json_schema", "name": "x"}}}), "text.format"),
        (json!({"reasoning": {"effort": "high"}}), "reasoning"),
        (json!({"include": ["file_search_call.results"]}), "include"),
        (json!({"background": true}), "background"),
        (json!({"conversation": "conv_1"}), "conversation"),
    ] {
        let mut body = json!({"model": "claude-sonnet", "input": "hi"});
        body.as_object_mut().unwrap().extend(extra.as_object().unwrap().clone());
        let r = h.post("/v1/responses", Some(TOKEN), body.to_string()).await;
        assert_eq!(r.status(), 400, "{param}");
        let e = common::error_of(r).await;
        assert_eq!(e["param"], param);
        assert_eq!(e["type"], "invalid_request_error");
    }
    assert!(upstream.seen.lock().unwrap().is_empty(), "refused before any upstream call");

    let r = h.post("/v1/responses", Some(TOKEN), r#"{"model":"claude-limited","input":"hi"}"#).await;
    assert_eq!(r.status(), 429);
    assert_eq!(r.headers()["retry-after"], "7");
    assert_eq!(common::error_of(r).await["type"], "rate_limit_error");
}
