//! The `uprox-operator` binary as a cluster runs it, against the in-memory API server through a
//! kubeconfig: it takes the Lease, issues a token, writes the compiled config, serves its admin
//! endpoints, and on SIGTERM exits cleanly and gives the Lease up.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::io::Read as _;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::{ConfigMap, Secret};
use uprox_crds::{MachineToken, MachineTokenSpec, Service, ServiceSpec, cluster};
use uprox_testkit::apiserver::FakeApiServer;

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

async fn eventually<T>(what: &str, mut check: impl FnMut() -> Option<T>) -> T {
    let started = Instant::now();
    loop {
        if let Some(value) = check() {
            return value;
        }
        assert!(started.elapsed() < Duration::from_secs(30), "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn http_get(port: u16, path: &str) -> Option<String> {
    use std::io::Write as _;
    let mut stream = std::net::TcpStream::connect(("127.0.0.1", port)).ok()?;
    write!(stream, "GET {path} HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n").ok()?;
    let mut text = String::new();
    stream.read_to_string(&mut text).ok()?;
    Some(text)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_binary_leads_reconciles_and_shuts_down_cleanly() {
    let api = FakeApiServer::start().await;
    let mut service = Service::new("app", ServiceSpec::default());
    service.metadata.namespace = Some("team".into());
    api.put(&service);
    let mut token = MachineToken::new("app", MachineTokenSpec { service: "app".into(), ..Default::default() });
    token.metadata.namespace = Some("team".into());
    api.put(&token);

    let dir = std::env::temp_dir().join(format!("uprox-operator-test-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let kubeconfig = dir.join("kubeconfig");
    std::fs::write(
        &kubeconfig,
        format!(
            "apiVersion: v1\nkind: Config\nclusters: [{{name: fake, cluster: {{server: \"{}\"}}}}]\n\
             users: [{{name: fake, user: {{}}}}]\ncontexts: [{{name: fake, context: {{cluster: fake, user: fake}}}}]\n\
             current-context: fake\n",
            api.url()
        ),
    )
    .unwrap();
    let admin = free_port();
    let mut child = Command::new(env!("CARGO_BIN_EXE_uprox-operator"))
        .args(["--namespace", "uprox-system", "--admin-listen", &format!("127.0.0.1:{admin}"), "--identity", "op-1"])
        .env("KUBECONFIG", &kubeconfig)
        .env_remove("KUBERNETES_SERVICE_HOST")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();

    let secret: Secret = eventually("the token Secret", || api.get(Some("team"), "app-token")).await;
    assert!(secret.metadata.owner_references.is_some());
    eventually("the compiled config", || {
        let manifest: ConfigMap = api.get(Some("uprox-system"), cluster::CONFIG_NAME)?;
        let parts = api.list::<ConfigMap>(Some("uprox-system"));
        let by_name = parts.into_iter().map(|c| (c.metadata.name.clone().unwrap_or_default(), c)).collect();
        let config = cluster::read_config(&manifest, &by_name).ok()?;
        (config.tokens.len() == 1).then_some(())
    })
    .await;
    let master: Secret = api.get(Some("uprox-system"), cluster::MASTER_KEY_SECRET).unwrap();
    cluster::read_master_key(&master).unwrap();
    let lease: Lease = api.get(Some("uprox-system"), "uprox-operator").unwrap();
    assert_eq!(lease.spec.unwrap().holder_identity.as_deref(), Some("op-1"));

    let ready = eventually("/readyz", || http_get(admin, "/readyz").filter(|r| r.starts_with("HTTP/1.1 200"))).await;
    assert!(ready.ends_with("ready"));
    let metrics = http_get(admin, "/metrics").unwrap();
    assert!(metrics.contains("uprox_operator_leader 1"), "{metrics}");
    assert!(metrics.contains("uprox_operator_compiles_total"), "{metrics}");
    assert!(metrics.contains("uprox_operator_compiled_config_bytes"), "{metrics}");

    let status = Command::new("kill").args(["-TERM", &child.id().to_string()]).status().unwrap();
    assert!(status.success());
    let started = Instant::now();
    let exit = loop {
        if let Some(exit) = child.try_wait().unwrap() {
            break exit;
        }
        assert!(started.elapsed() < Duration::from_secs(15), "the operator did not stop on SIGTERM");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let mut log = String::new();
    child.stderr.take().unwrap().read_to_string(&mut log).unwrap();
    assert!(exit.success(), "exit {exit:?}; log:\n{log}");
    let lease: Lease = api.get(Some("uprox-system"), "uprox-operator").unwrap();
    assert_ne!(lease.spec.unwrap().holder_identity.as_deref(), Some("op-1"), "the Lease must be released");
    let _ = std::fs::remove_dir_all(&dir);
}
