//! `uprox-gateway`: runs the gateway. Standalone mode (the default) serves a folder of manifests.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::Parser;
use tracing_subscriber::EnvFilter;
use uprox_gateway::app::{Gateway, Settings};
use uprox_gateway::{server, standalone};

/// One OpenAI-compatible endpoint in front of OpenAI, Anthropic and Azure OpenAI, with machine
/// tokens, policies, budgets and an audit trail.
#[derive(Debug, Parser)]
#[command(version, about)]
struct Args {
    /// Folder of manifests to serve (uprox.dev resources and v1 Secrets), watched for changes.
    #[arg(long, env = "UPROX_CONFIG", default_value = "config/samples")]
    config: PathBuf,
    /// Folder where issued tokens are kept (as Secret manifests).
    #[arg(long, env = "UPROX_STATE", default_value = ".state")]
    state: PathBuf,
    /// Address to listen on. Port 0 picks a free port (printed at start).
    #[arg(long, env = "UPROX_LISTEN", default_value = "127.0.0.1:8080")]
    listen: SocketAddr,
    /// Largest request body accepted, in bytes.
    #[arg(long, env = "UPROX_MAX_BODY_BYTES", default_value_t = 32 * 1024 * 1024)]
    max_body_bytes: usize,
    /// Serving threads (one single-threaded runtime and listener each). Default: one per core.
    #[arg(long, env = "UPROX_WORKERS")]
    workers: Option<usize>,
    /// Log as JSON lines instead of text.
    #[arg(long, env = "UPROX_LOG_JSON")]
    log_json: bool,
}

fn main() -> ExitCode {
    let args = Args::parse();
    let filter = EnvFilter::try_from_env("UPROX_LOG").unwrap_or_else(|_| EnvFilter::new("info"));
    if args.log_json {
        tracing_subscriber::fmt().json().with_env_filter(filter).with_writer(std::io::stderr).init();
    } else {
        // Colours only on a terminal: files and log collectors get plain text.
        let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr()) && std::env::var_os("NO_COLOR").is_none();
        tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr).with_ansi(ansi).init();
    }
    // The control runtime: config loading and watching, signals. Requests are served on the
    // worker threads (server::Workers), each with a runtime of its own.
    let runtime = match tokio::runtime::Builder::new_current_thread().enable_all().build() {
        Ok(r) => r,
        Err(e) => {
            eprintln!("uprox-gateway: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    runtime.block_on(run(args))
}

async fn run(args: Args) -> ExitCode {
    let settings = Settings { max_body_bytes: args.max_body_bytes, ..Settings::default() };
    let gateway = Gateway::new(settings);
    let options = standalone::Options {
        config_dir: args.config.clone(),
        state_dir: args.state.clone(),
        poll_interval: Duration::from_millis(250),
    };
    let opts = options.clone();
    let gw = gateway.clone();
    match tokio::task::spawn_blocking(move || standalone::load_and_install(&gw, &opts)).await {
        Ok(Ok(())) => {}
        Ok(Err(problems)) => {
            eprintln!("uprox-gateway: the config in {} cannot be served:", standalone::display(&args.config));
            for p in problems {
                eprintln!("  - {p}");
            }
            return ExitCode::FAILURE;
        }
        Err(e) => {
            eprintln!("uprox-gateway: loading the config failed: {e}");
            return ExitCode::FAILURE;
        }
    }
    let count = args.workers.unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()));
    let workers = match server::Workers::start(gateway.clone(), args.listen, count, Duration::from_secs(30)) {
        Ok(w) => w,
        Err(e) => {
            eprintln!("uprox-gateway: cannot listen on {}: {e}", args.listen);
            return ExitCode::FAILURE;
        }
    };
    tracing::info!(
        "uprox-gateway listening on http://{} ({} workers, standalone mode, config {})",
        workers.addr,
        workers.count(),
        args.config.display()
    );
    let watcher = tokio::spawn(standalone::watch(gateway, options));
    shutdown_signal().await;
    watcher.abort();
    // Joining blocks until in-flight requests drain; keep it off the runtime thread.
    let _ = tokio::task::spawn_blocking(move || workers.stop_and_join()).await;
    tracing::info!("stopped");
    ExitCode::SUCCESS
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
    tracing::info!("shutting down: no new connections, draining in-flight requests");
}
