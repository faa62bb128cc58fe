//! Standalone mode: hot reload within a second, and an invalid edit keeping the last good config.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::time::Duration;

use common::{Harness, TOKEN2, Upstream, eventually, manifests};

const MOCK_CHAT: &str = r#"{"model":"mock-1","messages":[{"role":"user","content":"hi"}]}"#;

fn second_token() -> String {
    format!(
        r#"
---
apiVersion: uprox.dev/v1alpha1
kind: MachineToken
metadata: {{name: second, namespace: team}}
spec: {{service: app, secretName: second-token}}
---
apiVersion: v1
kind: Secret
metadata:
  name: second-token
  namespace: team
  labels: {{uprox.dev/machine-token: second}}
stringData: {{token: "{TOKEN2}"}}
"#
    )
}

#[tokio::test]
async fn edits_hot_reload_and_bad_edits_keep_the_last_good_config() {
    let upstream = Upstream::openai_like().await;
    let base = manifests(&upstream.base_url());
    let h = Harness::start(&base).await;
    let second_ok = |h: &Harness| {
        let h_url = h.url("/v1/chat/completions");
        let client = h.client.clone();
        async move {
            client
                .post(h_url)
                .bearer_auth(TOKEN2)
                .body(MOCK_CHAT)
                .send()
                .await
                .map(|r| r.status().as_u16())
                .unwrap_or(0)
        }
    };
    assert_eq!(second_ok(&h).await, 401);

    // Adding a token takes effect within a second.
    std::fs::write(h.config_file(), format!("{base}{}", second_token())).unwrap();
    assert!(
        eventually(Duration::from_secs(5), || async { second_ok(&h).await == 200 }).await,
        "a new token should work within a second (5 s allowed for a loaded machine)"
    );

    // A broken edit (YAML syntax) is refused: both tokens keep working.
    std::fs::write(h.config_file(), format!("{base}{}\n---\nkind: [broken", second_token())).unwrap();
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(second_ok(&h).await, 200);
    assert_eq!(h.chat(MOCK_CHAT).await.status(), 200);

    // So is an edit that parses but does not compile (a Secret key that does not exist).
    let broken_ref = base.replace("key: apiKey", "key: missing");
    std::fs::write(h.config_file(), format!("{broken_ref}{}", second_token())).unwrap();
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(second_ok(&h).await, 200);

    // Revoking takes effect within a second.
    let revoked = second_token().replace("secretName: second-token}", "secretName: second-token, revoked: true}");
    std::fs::write(h.config_file(), format!("{base}{revoked}")).unwrap();
    assert!(
        eventually(Duration::from_secs(5), || async { second_ok(&h).await == 401 }).await,
        "a revoked token should fail within a second (5 s allowed for a loaded machine)"
    );
    assert_eq!(h.chat(MOCK_CHAT).await.status(), 200);
}

#[tokio::test]
async fn tokens_are_issued_into_the_state_folder_and_survive_restarts() {
    let upstream = Upstream::openai_like().await;
    let yaml = format!(
        "{}\n---\napiVersion: uprox.dev/v1alpha1\nkind: MachineToken\nmetadata: {{name: fresh, namespace: team}}\nspec: {{service: app}}\n",
        manifests(&upstream.base_url())
    );
    let h = Harness::start(&yaml).await;
    let file = h.dir.path().join("state/tokens/team.fresh-token.yaml");
    let text = std::fs::read_to_string(&file).expect("the issued token is persisted");
    let token = text.lines().find_map(|l| l.trim().strip_prefix("token: ")).unwrap().trim_matches('"').to_owned();
    assert!(uprox_crds::token::is_well_formed(&token));
    let r = h.post("/v1/chat/completions", Some(&token), MOCK_CHAT).await;
    assert_eq!(r.status(), 200);

    // Loading again from the same folders issues nothing new and keeps the token valid.
    let options = uprox_gateway::standalone::Options {
        config_dir: h.dir.path().join("config"),
        state_dir: h.dir.path().join("state"),
        poll_interval: Duration::from_millis(50),
    };
    let loaded = uprox_gateway::standalone::load(&options).unwrap();
    assert_eq!(std::fs::read_to_string(&file).unwrap(), text);
    assert!(loaded.snapshot.token(&uprox_crds::token::digest(&token)).is_some());
}

#[tokio::test]
async fn a_missing_policy_fails_closed() {
    let upstream = Upstream::openai_like().await;
    let yaml = manifests(&upstream.base_url()).replace("spec: {policies: [p]}", "spec: {policies: [p, nonexistent]}");
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(dir.path().join("config")).unwrap();
    std::fs::write(dir.path().join("config/all.yaml"), yaml).unwrap();
    let options = uprox_gateway::standalone::Options {
        config_dir: dir.path().join("config"),
        state_dir: dir.path().join("state"),
        poll_interval: Duration::from_millis(50),
    };
    // Standalone refuses a config with errors outright and says why.
    let problems = uprox_gateway::standalone::load(&options).unwrap_err();
    assert!(problems.iter().any(|p| p.contains("nonexistent")), "{problems:?}");
}
