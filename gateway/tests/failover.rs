//! Several keys per Provider: a 429, a 5xx, a connection failure or a rejected key moves the
//! request to the next key before anything reaches the client, and the failed key cools down.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::sync::Arc;

use common::{Harness, Seen, Upstream};
use http::{HeaderValue, Response, StatusCode, header};
use http_body_util::BodyExt as _;
use uprox_gateway::body::{Body, full};

const CHAT: &str = r#"{"model":"gpt-4o","messages":[{"role":"user","content":"hi"}]}"#;

fn manifests(base_url: &str) -> String {
    format!(
        r#"
apiVersion: uprox.dev/v1alpha1
kind: Provider
metadata: {{name: upstream, namespace: team}}
spec:
  type: openai-compatible
  baseUrl: "{base_url}"
  models: ["gpt-*"]
  keys:
    - {{label: primary, priority: 10, secretRef: {{name: keys, key: primary}}}}
    - {{label: backup, priority: 1, secretRef: {{name: keys, key: backup}}}}
---
apiVersion: v1
kind: Secret
metadata: {{name: keys, namespace: team}}
stringData: {{primary: sk-primary, backup: sk-backup}}
"#
    ) + &common::identity()
}

/// An upstream whose answer depends on the key: `status_for(key)`.
async fn upstream(status_for: fn(&str) -> u16) -> Upstream {
    Upstream::start(Arc::new(move |seen: Seen| {
        Box::pin(async move {
            let key = seen.authorization.unwrap_or_default();
            let status = status_for(key.trim_start_matches("Bearer "));
            let mut r = if status == 200 {
                uprox_gateway::providers::mock::respond(&seen.body, None).unwrap()
            } else {
                let mut r = Response::new(full(
                    r#"{"error":{"message":"busy","type":"server_error","param":null,"code":null}}"#,
                ));
                r.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
                r
            };
            *r.status_mut() = StatusCode::from_u16(status).unwrap();
            if status == 429 {
                r.headers_mut().insert(header::RETRY_AFTER, HeaderValue::from_static("120"));
            }
            r
        }) as futures_util::future::BoxFuture<'static, Response<Body>>
    }))
    .await
}

/// The `uprox_upstream_errors_total` series once they count `total` failed attempts (each
/// request's own outcome is counted as its body ends, a moment after the client read it).
async fn upstream_errors(h: &Harness, total: u32) -> Vec<String> {
    let series = || async {
        let text =
            uprox_gateway::admin::respond("/metrics", &h.gateway).into_body().collect().await.unwrap().to_bytes();
        let text = String::from_utf8(text.to_vec()).unwrap();
        text.lines().filter(|l| l.starts_with("uprox_upstream_errors_total{")).map(str::to_owned).collect::<Vec<_>>()
    };
    let counted =
        |lines: &[String]| lines.iter().map(|l| l.rsplit(' ').next().unwrap().parse::<u32>().unwrap()).sum::<u32>();
    common::eventually(std::time::Duration::from_secs(10), || async { counted(&series().await) >= total }).await;
    series().await
}

const PRIMARY_429: &str = r#"uprox_upstream_errors_total{provider="team/upstream",key="primary",class="http_429"}"#;

fn keys_seen(upstream: &Upstream) -> Vec<String> {
    upstream.seen.lock().unwrap().iter().map(|s| s.authorization.clone().unwrap_or_default()).collect()
}

#[tokio::test]
async fn a_rate_limited_key_fails_over_and_cools_down() {
    let upstream = upstream(|key| if key == "sk-primary" { 429 } else { 200 }).await;
    let h = Harness::start(&manifests(&upstream.base_url())).await;

    let r = h.chat(CHAT).await;
    assert_eq!(r.status(), 200, "the client never sees the 429");
    assert_eq!(keys_seen(&upstream), ["Bearer sk-primary", "Bearer sk-backup"]);
    // The failed attempt is counted against its key, though the request succeeded.
    assert_eq!(upstream_errors(&h, 1).await, [format!("{PRIMARY_429} 1")]);

    // The primary key is cooling down (retry-after 120 s): the next request skips it.
    let r = h.chat(CHAT).await;
    assert_eq!(r.status(), 200);
    assert_eq!(keys_seen(&upstream)[2..], ["Bearer sk-backup"]);
}

#[tokio::test]
async fn server_errors_and_rejected_keys_fail_over_too() {
    let upstream = upstream(|key| if key == "sk-primary" { 503 } else { 200 }).await;
    let h = Harness::start(&manifests(&upstream.base_url())).await;
    assert_eq!(h.chat(CHAT).await.status(), 200);
    assert_eq!(
        upstream_errors(&h, 1).await,
        [r#"uprox_upstream_errors_total{provider="team/upstream",key="primary",class="http_5xx"} 1"#]
    );

    let rejected = self::upstream(|key| if key == "sk-primary" { 401 } else { 200 }).await;
    let h = Harness::start(&manifests(&rejected.base_url())).await;
    assert_eq!(h.chat(CHAT).await.status(), 200);
    assert_eq!(keys_seen(&rejected), ["Bearer sk-primary", "Bearer sk-backup"]);
    assert_eq!(
        upstream_errors(&h, 1).await,
        [r#"uprox_upstream_errors_total{provider="team/upstream",key="primary",class="rejected_key"} 1"#]
    );
}

#[tokio::test]
async fn when_every_key_fails_the_last_answer_is_relayed() {
    let upstream = upstream(|_| 429).await;
    let h = Harness::start(&manifests(&upstream.base_url())).await;
    let r = h.chat(CHAT).await;
    assert_eq!(r.status(), 429);
    assert_eq!(r.headers()["retry-after"], "120");
    assert_eq!(keys_seen(&upstream).len(), 2, "each key tried once");

    // Both keys cool down; the next request still goes out (with the preferred key).
    let r = h.chat(CHAT).await;
    assert_eq!(r.status(), 429);
    assert_eq!(keys_seen(&upstream)[2..], ["Bearer sk-primary"]);
    // Three failed attempts: the first request's two (one recovered from, then its outcome),
    // the second request's one.
    let mut errors = upstream_errors(&h, 3).await;
    errors.sort();
    assert_eq!(
        errors,
        [
            r#"uprox_upstream_errors_total{provider="team/upstream",key="backup",class="http_429"} 1"#.to_owned(),
            format!("{PRIMARY_429} 2"),
        ]
    );
}

#[tokio::test]
async fn client_errors_do_not_fail_over() {
    let upstream = upstream(|_| 400).await;
    let h = Harness::start(&manifests(&upstream.base_url())).await;
    assert_eq!(h.chat(CHAT).await.status(), 400);
    assert_eq!(keys_seen(&upstream).len(), 1, "a bad request is bad with every key");
}

/// Writes `yaml` as the harness's config and waits until the gateway serves it.
async fn reload(h: &Harness, yaml: &str) {
    let before = h.gateway.snapshot().unwrap();
    std::fs::write(h.config_file(), yaml).unwrap();
    let swapped = common::eventually(std::time::Duration::from_secs(10), || async {
        !Arc::ptr_eq(&h.gateway.snapshot().unwrap(), &before)
    })
    .await;
    assert!(swapped, "the edit was not loaded");
}

#[tokio::test]
async fn cool_downs_survive_a_reload_unless_the_key_changed() {
    let upstream = upstream(|key| if key == "sk-primary" { 429 } else { 200 }).await;
    let yaml = manifests(&upstream.base_url());
    let h = Harness::start(&yaml).await;
    assert_eq!(h.chat(CHAT).await.status(), 200);
    assert_eq!(keys_seen(&upstream), ["Bearer sk-primary", "Bearer sk-backup"]);

    // An unrelated edit (one more Service): the primary key keeps cooling down.
    let more = yaml.clone() + &common::identity_of("other", "{}", "", common::TOKEN2);
    reload(&h, &more).await;
    assert_eq!(h.chat(CHAT).await.status(), 200);
    assert_eq!(keys_seen(&upstream)[2..], ["Bearer sk-backup"], "still skipped after the reload");

    // The primary key's secret replaced: a new key, tried at once.
    reload(&h, &more.replace("primary: sk-primary", "primary: sk-primary-new")).await;
    assert_eq!(h.chat(CHAT).await.status(), 200);
    assert_eq!(keys_seen(&upstream)[3..], ["Bearer sk-primary-new"]);
}
