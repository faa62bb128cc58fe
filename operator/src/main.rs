//! `uprox-operator`: reconciles uprox.dev resources into the gateway's compiled config.
//!
//! `uprox-operator run` (the default) runs the controllers in the cluster; `uprox-operator crds`
//! prints every CustomResourceDefinition (pipe it into `kubectl apply -f -`).

use std::io::Write as _;
use std::net::SocketAddr;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use clap::{Parser, Subcommand, ValueEnum};
use kube::runtime::events::{Recorder, Reporter};
use tokio::sync::Notify;
use tokio::task::JoinSet;
use tracing_subscriber::EnvFilter;
use uprox_operator::admin::{self, Health};
use uprox_operator::leader::{Election, LeaseSettings};
use uprox_operator::metrics::Metrics;
use uprox_operator::outputs::Outputs;
use uprox_operator::preflight;
use uprox_operator::reconciler::{Reconciler, Timing};
use uprox_operator::stores::{Scope, Stores};

const SERVICE_ACCOUNT_NAMESPACE: &str = "/var/run/secrets/kubernetes.io/serviceaccount/namespace";

/// The uprox operator.
#[derive(Debug, Parser)]
#[command(version, about)]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
    #[command(flatten)]
    run: RunArgs,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run the controllers (the default).
    Run,
    /// Print the uprox CustomResourceDefinitions as YAML.
    Crds,
}

#[derive(Debug, clap::Args)]
struct RunArgs {
    /// Namespace of the gateway: where the compiled config, the sealed keys, the master key and
    /// the leader Lease live. Default: the operator's own namespace.
    #[arg(long, global = true, env = "UPROX_NAMESPACE")]
    namespace: Option<String>,
    /// Namespaces whose uprox resources are reconciled, comma-separated. Default: all.
    #[arg(long, global = true, env = "UPROX_WATCH_NAMESPACES", value_delimiter = ',')]
    watch_namespaces: Vec<String>,
    /// Log format. Default: json inside a cluster, text elsewhere.
    #[arg(long, global = true, env = "UPROX_LOG_FORMAT")]
    log_format: Option<LogFormat>,
    /// Address of the admin server (/healthz, /readyz, /metrics).
    #[arg(long, global = true, env = "UPROX_ADMIN_LISTEN", default_value = "0.0.0.0:8081")]
    admin_listen: SocketAddr,
    /// Name of the leader-election Lease.
    #[arg(long, global = true, env = "UPROX_LEASE_NAME", default_value = "uprox-operator")]
    lease_name: String,
    /// This replica's identity in the election. Default: $POD_NAME, else the host name.
    #[arg(long, global = true, env = "POD_NAME")]
    identity: Option<String>,
    /// Milliseconds without changes after which a burst of changes is compiled.
    #[arg(long, global = true, env = "UPROX_DEBOUNCE_MS", default_value_t = 50)]
    debounce_ms: u64,
    /// Milliseconds at least between two evaluations of the Budgets as the usage ledger changes.
    #[arg(long, global = true, env = "UPROX_BUDGET_INTERVAL_MS", default_value_t = 2000)]
    budget_interval_ms: u64,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
enum LogFormat {
    Json,
    Text,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Some(Command::Crds) => print_crds(),
        Some(Command::Run) | None => {
            init_logging(cli.run.log_format);
            let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
                Ok(r) => r,
                Err(e) => {
                    eprintln!("uprox-operator: cannot start the runtime: {e}");
                    return ExitCode::FAILURE;
                }
            };
            runtime.block_on(run(cli.run))
        }
    }
}

fn print_crds() -> ExitCode {
    match uprox_crds::crdgen::render() {
        Ok(crds) => {
            let mut out = std::io::stdout().lock();
            for (_, yaml) in crds {
                if writeln!(out, "---\n{yaml}").is_err() {
                    return ExitCode::FAILURE;
                }
            }
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("uprox-operator: cannot render the CRDs: {e}");
            ExitCode::FAILURE
        }
    }
}

fn init_logging(format: Option<LogFormat>) {
    let filter = EnvFilter::try_from_env("UPROX_LOG").unwrap_or_else(|_| EnvFilter::new("info"));
    let in_cluster = std::env::var_os("KUBERNETES_SERVICE_HOST").is_some();
    match format.unwrap_or(if in_cluster { LogFormat::Json } else { LogFormat::Text }) {
        LogFormat::Json => tracing_subscriber::fmt().json().with_env_filter(filter).with_writer(std::io::stderr).init(),
        LogFormat::Text => tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr).init(),
    }
}

async fn run(args: RunArgs) -> ExitCode {
    match serve(args).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(message) => {
            tracing::error!("{message}");
            eprintln!("uprox-operator: {message}");
            ExitCode::FAILURE
        }
    }
}

async fn serve(args: RunArgs) -> Result<(), String> {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let client = kube::Client::try_default()
        .await
        .map_err(|e| format!("cannot reach the Kubernetes API (in-cluster config or kubeconfig): {e}"))?;
    let namespace = args
        .namespace
        .or_else(|| std::fs::read_to_string(SERVICE_ACCOUNT_NAMESPACE).ok().map(|s| s.trim().to_owned()))
        .unwrap_or_else(|| "uprox-system".to_owned());
    let identity = args.identity.unwrap_or_else(hostname);
    preflight::check(&client, args.watch_namespaces.first().map(String::as_str)).await.map_err(|e| e.to_string())?;

    let metrics = Metrics::new().map_err(|e| format!("cannot register metrics: {e}"))?;
    let health = Arc::new(Health::default());
    let listener = admin::bind(args.admin_listen)
        .await
        .map_err(|e| format!("cannot listen on {} for the admin server: {e}", args.admin_listen))?;
    let mut tasks = JoinSet::new();
    tasks.spawn(admin::serve(listener, health.clone(), metrics.clone()));

    let dirty = Arc::new(Notify::new());
    let scope = Scope { namespaces: args.watch_namespaces.clone() };
    let stores = Stores::start(&client, &scope, &dirty, &mut tasks);
    {
        let stores = stores.clone();
        let health = health.clone();
        tasks.spawn(async move {
            stores.wait_ready().await;
            health.set_ready(true);
        });
    }
    tracing::info!(
        gateway_namespace = %namespace,
        watch = %if scope.namespaces.is_empty() { "all namespaces".to_owned() } else { scope.namespaces.join(",") },
        identity = %identity,
        "uprox-operator {} started; waiting for the leader Lease",
        env!("CARGO_PKG_VERSION")
    );

    let lease = LeaseSettings {
        name: args.lease_name,
        namespace: namespace.clone(),
        identity: identity.clone(),
        duration_seconds: 15,
        grace_seconds: 5,
    };
    let mut election =
        Election::start(client.clone(), &lease).await.map_err(|e| format!("cannot join the leader election: {e}"))?;
    tokio::select! {
        acquired = election.acquired() => {
            if !acquired {
                return Err("the leader election ended unexpectedly".to_owned());
            }
        }
        () = shutdown_signal() => {
            election.release().await;
            return Ok(());
        }
    }
    metrics.leader.set(1);
    tracing::info!("leading; reconciling into namespace {namespace}");

    let outputs = Outputs::open(client.clone(), &namespace)
        .await
        .map_err(|e| format!("cannot prepare the compiled objects: {e}"))?;
    let recorder =
        Recorder::new(client.clone(), Reporter { controller: "uprox-operator".to_owned(), instance: Some(identity) });
    let timing = Timing {
        quiet: Duration::from_millis(args.debounce_ms),
        budget_interval: Duration::from_millis(args.budget_interval_ms),
        ..Timing::default()
    };
    let reconciler = Reconciler::new(client, stores, outputs, Some(recorder), metrics.clone(), timing, dirty);
    let reconcile = tokio::spawn(reconciler.run());

    let outcome = tokio::select! {
        () = election.lost() => Err("lost the leader Lease; exiting so that a clean replica takes over".to_owned()),
        () = shutdown_signal() => Ok(()),
    };
    reconcile.abort();
    metrics.leader.set(0);
    if outcome.is_ok() {
        election.release().await;
        tracing::info!("stopped");
    }
    tasks.abort_all();
    outcome
}

fn hostname() -> String {
    std::fs::read_to_string("/etc/hostname")
        .ok()
        .map(|s| s.trim().to_owned())
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| format!("uprox-operator-{}", std::process::id()))
}

async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => {},
        () = terminate => {},
    }
    tracing::info!("shutting down");
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flags_are_accepted_before_and_after_the_subcommand() {
        for argv in [
            &["uprox-operator", "run", "--namespace", "gw", "--watch-namespaces", "a,b", "--log-format", "json"][..],
            &["uprox-operator", "--namespace", "gw", "--watch-namespaces", "a,b", "--log-format", "json", "run"][..],
            &["uprox-operator", "--namespace=gw", "--watch-namespaces=a,b", "--log-format=json"][..],
        ] {
            let cli = Cli::try_parse_from(argv).map_err(|e| e.to_string());
            let cli = match cli {
                Ok(cli) => cli,
                Err(e) => panic!("{argv:?}: {e}"),
            };
            assert_eq!(cli.run.namespace.as_deref(), Some("gw"));
            assert_eq!(cli.run.watch_namespaces, ["a", "b"]);
            assert_eq!(cli.run.log_format, Some(LogFormat::Json));
        }
    }
}
