//! `uprox-gateway`: runs the gateway. Standalone mode (the default) serves a folder of manifests;
//! cluster mode serves the config the operator compiled into the gateway's namespace.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use clap::{Parser, ValueEnum};
use tracing_subscriber::EnvFilter;
use uprox_gateway::app::{Gateway, Settings};
use uprox_gateway::audit;
use uprox_gateway::clock::unix_now;
use uprox_gateway::spend::flush::Flusher;
use uprox_gateway::spend::store::{FileStore, Store};
use uprox_gateway::{cluster, files, server, standalone};

/// How long the start-up check of the Kubernetes API may take.
const API_CHECK_TIMEOUT: Duration = Duration::from_secs(10);

/// Where the config comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Source {
    /// A folder of manifests (`--config`), compiled in-process.
    Standalone,
    /// The operator's compiled ConfigMaps and Secrets in `--namespace`, watched through the
    /// Kubernetes API.
    Cluster,
}

/// One OpenAI-compatible endpoint in front of OpenAI, Anthropic and Azure OpenAI, with machine
/// tokens, policies, budgets and an audit trail.
#[derive(Debug, Parser)]
#[command(version, about)]
struct Args {
    /// Where the config comes from: a folder of manifests, or the operator's compiled objects.
    #[arg(long, env = "UPROX_SOURCE", value_enum, default_value_t = Source::Standalone)]
    source: Source,
    /// Cluster mode: the namespace the operator writes the compiled config to. Default: the
    /// pod's own namespace, else `uprox-system`.
    #[arg(long, env = "UPROX_NAMESPACE")]
    namespace: Option<String>,
    /// Cluster mode: the gateway's own Kubernetes Service. Its ready EndpointSlice endpoints
    /// are the replicas that share every rate limit (each enforces `ceil(limit / replicas)`).
    /// Default: none (each replica enforces the whole limit).
    #[arg(long, env = "UPROX_PEERS_SERVICE")]
    peers_service: Option<String>,
    /// Standalone mode: folder of manifests to serve (uprox.dev resources and v1 Secrets),
    /// watched for changes.
    #[arg(long, env = "UPROX_CONFIG", default_value = "config/samples")]
    config: PathBuf,
    /// Standalone mode: folder where issued tokens (as Secret manifests), file owners and the
    /// usage ledger (`usage.json`) are kept.
    #[arg(long, env = "UPROX_STATE", default_value = ".state")]
    state: PathBuf,
    /// Address to listen on. Port 0 picks a free port (printed at start).
    #[arg(long, env = "UPROX_LISTEN", default_value = "127.0.0.1:8080")]
    listen: SocketAddr,
    /// Address of the admin port (/healthz, /readyz) for probes. Default: none (the serving
    /// port answers both paths too).
    #[arg(long, env = "UPROX_ADMIN_LISTEN")]
    admin_listen: Option<SocketAddr>,
    /// Largest request body accepted, in bytes.
    #[arg(long, env = "UPROX_MAX_BODY_BYTES", default_value_t = 32 * 1024 * 1024)]
    max_body_bytes: usize,
    /// Largest file upload accepted (`POST /v1/files`, streamed to the provider), in bytes.
    #[arg(long, env = "UPROX_MAX_FILE_BYTES", default_value_t = 512 * 1024 * 1024)]
    max_file_bytes: usize,
    /// Serving threads (one single-threaded runtime and listener each). Default: one per core.
    #[arg(long, env = "UPROX_WORKERS")]
    workers: Option<usize>,
    /// Log as JSON lines instead of text.
    #[arg(long, env = "UPROX_LOG_JSON")]
    log_json: bool,
    /// Seconds between two writes of this replica's spend to the shared usage ledger (and reads
    /// of everybody else's). Budgets may be overrun by what the other replicas spend in this
    /// time; see the README.
    #[arg(long, env = "UPROX_LEDGER_FLUSH_SECONDS", default_value_t = 2, value_parser = clap::value_parser!(u64).range(1..=300))]
    ledger_flush_seconds: u64,
    /// Bytes of answers the response cache may hold (least valuable entries are evicted first).
    #[arg(long, env = "UPROX_CACHE_MAX_BYTES", default_value_t = 256 * 1024 * 1024)]
    cache_max_bytes: u64,
    /// The largest answer the response cache stores, in bytes; larger ones are relayed and not
    /// stored.
    #[arg(long, env = "UPROX_CACHE_MAX_ENTRY_BYTES", default_value_t = 4 * 1024 * 1024)]
    cache_max_entry_bytes: usize,
    /// Where the audit log (one JSON line per request; see docs/audit-log.md) goes.
    #[arg(long, env = "UPROX_AUDIT_LOG", value_enum, default_value_t = AuditLog::Stdout)]
    audit_log: AuditLog,
    /// Export request spans over OTLP/HTTP to this collector (a base URL such as
    /// `http://otel-collector:4318`, which gets `/v1/traces`, or the full traces URL). Default:
    /// `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT` or `OTEL_EXPORTER_OTLP_ENDPOINT` when set, else no
    /// tracing.
    #[arg(long, env = "UPROX_OTLP_ENDPOINT")]
    otlp_endpoint: Option<String>,
    /// The OTLP encoding: `http/protobuf` or `http/json`. Default: `OTEL_EXPORTER_OTLP_PROTOCOL`,
    /// else `http/protobuf`.
    #[arg(long, env = "UPROX_OTLP_PROTOCOL")]
    otlp_protocol: Option<String>,
    /// A header for the OTLP collector, `name=value` (repeatable); also read from
    /// `OTEL_EXPORTER_OTLP_HEADERS`.
    #[arg(long = "otlp-header", value_name = "NAME=VALUE")]
    otlp_headers: Vec<String>,
    /// The share of new traces recorded, 0 to 1 (requests with a `traceparent` follow their
    /// caller's decision). Default: `OTEL_TRACES_SAMPLER`/`OTEL_TRACES_SAMPLER_ARG`, else 1.
    #[arg(long, env = "UPROX_TRACE_SAMPLE_RATIO")]
    trace_sample_ratio: Option<f64>,
}

/// Where audit lines go.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
enum AuditLog {
    /// One JSON object per line on standard output.
    Stdout,
    /// Nowhere.
    Off,
}

/// Logs to stderr (text, or JSON with `--log-json`, filtered by `UPROX_LOG`); audit lines, one
/// per request, to stdout unless `--audit-log off`, through a writer thread (returned, to be
/// drained at exit).
fn init_logging(args: &Args) -> Option<audit::sink::Sink> {
    use tracing_subscriber::Layer as _;
    use tracing_subscriber::layer::SubscriberExt as _;
    use tracing_subscriber::util::SubscriberInitExt as _;
    let directives = std::env::var("UPROX_LOG").unwrap_or_else(|_| "info".to_owned());
    // The audit target is written by its own layer only.
    let filter = EnvFilter::try_new(format!("{directives},{}=off", audit::TARGET))
        .unwrap_or_else(|_| EnvFilter::new(format!("info,{}=off", audit::TARGET)));
    let logs = if args.log_json {
        tracing_subscriber::fmt::layer().json().with_writer(std::io::stderr).with_filter(filter).boxed()
    } else {
        // Colours only on a terminal: files and log collectors get plain text.
        let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr()) && std::env::var_os("NO_COLOR").is_none();
        tracing_subscriber::fmt::layer().with_writer(std::io::stderr).with_ansi(ansi).with_filter(filter).boxed()
    };
    let sink = match args.audit_log {
        AuditLog::Off => None,
        AuditLog::Stdout => match audit::sink::Sink::start(std::io::stdout()) {
            Ok(sink) => Some(sink),
            Err(e) => {
                eprintln!("uprox-gateway: cannot start the audit log writer: {e}");
                std::process::exit(1);
            }
        },
    };
    let audit_layer = sink.clone().map(audit::layer);
    tracing_subscriber::registry().with(logs).with(audit_layer).init();
    sink
}

fn main() -> ExitCode {
    let args = Args::parse();
    let audit_sink = init_logging(&args);
    // The control runtime: config loading and watching, signals. Requests are served on the
    // worker threads (server::Workers), each with a runtime of its own.
    let runtime = match tokio::runtime::Builder::new_current_thread().enable_all().build() {
        Ok(r) => r,
        Err(e) => {
            eprintln!("uprox-gateway: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let code = runtime.block_on(run(args));
    if let Some(sink) = audit_sink {
        sink.drain(Duration::from_secs(2));
    }
    code
}

async fn run(args: Args) -> ExitCode {
    let tracing_options = uprox_gateway::trace::Options {
        endpoint: args.otlp_endpoint.clone(),
        protocol: args.otlp_protocol.clone(),
        headers: args.otlp_headers.clone(),
        sample_ratio: args.trace_sample_ratio,
    };
    let tracing = match uprox_gateway::trace::Config::from_options(&tracing_options, |name| std::env::var(name).ok()) {
        Ok(config) => config,
        Err(e) => {
            eprintln!("uprox-gateway: tracing: {e}");
            return ExitCode::FAILURE;
        }
    };
    let settings = Settings {
        max_body_bytes: args.max_body_bytes,
        max_file_bytes: args.max_file_bytes,
        cache: uprox_gateway::cache::Limits {
            max_bytes: args.cache_max_bytes,
            max_entry_bytes: args.cache_max_entry_bytes,
        },
        tracing,
        ..Settings::default()
    };
    let gateway = Gateway::new(settings);
    let started = match args.source {
        Source::Standalone => start_standalone(&args, &gateway).await,
        Source::Cluster => start_cluster(&args, &gateway).await,
    };
    let Some(Started { source, description, ledger }) = started else {
        return ExitCode::FAILURE;
    };
    // The usage ledger: read once before serving, so budgets count this month's spend from the
    // first request, then written every interval and once more at shutdown.
    let prefix = std::env::var("HOSTNAME").ok().filter(|h| !h.is_empty()).unwrap_or_else(|| "gateway".to_owned());
    let mut flusher = Flusher::new(gateway.spend.clone(), ledger.clone(), Flusher::writer_name(&prefix));
    if let Err(e) = flusher.round(unix_now()).await {
        tracing::warn!(error = %e, store = ?ledger, "the usage ledger could not be read; budgets count from zero until it can");
    }
    let (stop_flusher, flusher_stopped) = tokio::sync::oneshot::channel::<()>();
    let flusher = tokio::spawn(flusher.run(Duration::from_secs(args.ledger_flush_seconds), async move {
        let _ = flusher_stopped.await;
    }));
    let count = args.workers.unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()));
    let workers = match server::Workers::start(gateway.clone(), args.listen, count, Duration::from_secs(30)) {
        Ok(w) => w,
        Err(e) => {
            eprintln!("uprox-gateway: cannot listen on {}: {e}", args.listen);
            return ExitCode::FAILURE;
        }
    };
    tracing::info!("uprox-gateway listening on http://{} ({} workers, {description})", workers.addr, workers.count());
    let admin = match args.admin_listen {
        Some(addr) => match tokio::net::TcpListener::bind(addr).await {
            Ok(listener) => {
                tracing::info!("admin port on http://{addr} (/healthz, /readyz)");
                Some(tokio::spawn(uprox_gateway::admin::serve(listener, gateway.clone())))
            }
            Err(e) => {
                eprintln!("uprox-gateway: cannot listen on {addr} for the admin port: {e}");
                return ExitCode::FAILURE;
            }
        },
        None => None,
    };
    let source = tokio::spawn(source);
    shutdown_signal().await;
    source.abort();
    if let Some(admin) = admin {
        admin.abort();
    }
    // Joining blocks until in-flight requests drain; keep it off the runtime thread.
    let _ = tokio::task::spawn_blocking(move || workers.stop_and_join()).await;
    // Every answer has settled its cost: write the last of it.
    let _ = stop_flusher.send(());
    let _ = flusher.await;
    if let Some(tracer) = gateway.tracer {
        tracer.shutdown(Duration::from_secs(2)).await;
    }
    tracing::info!("stopped");
    ExitCode::SUCCESS
}

/// What a config source starts: its task (run once serving begins), how to describe it, and
/// where the usage ledger is kept.
struct Started {
    source: futures_util::future::BoxFuture<'static, ()>,
    description: String,
    ledger: Store,
}

/// Loads the folder once (a config that cannot be served is fatal at start-up), then watches it.
async fn start_standalone(args: &Args, gateway: &Arc<Gateway>) -> Option<Started> {
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
            return None;
        }
        Err(e) => {
            eprintln!("uprox-gateway: loading the config failed: {e}");
            return None;
        }
    }
    // Who uploaded which file: STATE/files/owners.json.
    let files_dir = args.state.join("files");
    match files::standalone::JsonFileOwners::load(&files_dir) {
        Ok(owners) => {
            let _ = gateway.files.set_owners(Arc::new(owners));
        }
        Err(e) => {
            eprintln!("uprox-gateway: {e}");
            return None;
        }
    }
    let ledger = match FileStore::new(&args.state) {
        Ok(store) => Store::File(store),
        Err(e) => {
            eprintln!("uprox-gateway: {e}");
            return None;
        }
    };
    let description = format!("standalone mode, config {}", args.config.display());
    Some(Started { source: Box::pin(standalone::watch(gateway.clone(), options)), description, ledger })
}

/// Connects to the Kubernetes API (an unreachable API is fatal at start-up), then watches the
/// compiled objects. A config that is not there yet is not: the gateway stays unready and waits.
async fn start_cluster(args: &Args, gateway: &Arc<Gateway>) -> Option<Started> {
    let namespace = args.namespace.clone().unwrap_or_else(cluster::pod_namespace);
    let client = match kube::Client::try_default().await {
        Ok(c) => c,
        Err(e) => {
            eprintln!(
                "uprox-gateway: cluster mode needs a Kubernetes client (in-cluster service account or kubeconfig): {e}"
            );
            return None;
        }
    };
    match tokio::time::timeout(API_CHECK_TIMEOUT, client.apiserver_version()).await {
        Ok(Ok(v)) => tracing::info!("connected to the Kubernetes API (version {}.{})", v.major, v.minor),
        Ok(Err(e)) => {
            eprintln!("uprox-gateway: the Kubernetes API is unreachable: {e}");
            return None;
        }
        Err(_) => {
            eprintln!("uprox-gateway: the Kubernetes API did not answer within {}s", API_CHECK_TIMEOUT.as_secs());
            return None;
        }
    }
    tracing::info!("watching the compiled config in namespace {namespace}; not ready until it is loaded");
    let description = format!("cluster mode, namespace {namespace}");
    // Who uploaded which file: one ConfigMap per Service in this namespace, watched.
    let owners = files::cluster::ConfigMapOwners::new(client.clone(), &namespace);
    let _ = gateway.files.set_owners(owners.clone());
    let peers = args.peers_service.clone().map(|service| {
        tracing::info!("rate limits are shared by the ready endpoints of Service {namespace}/{service}");
        cluster::peers::watch(gateway.clone(), client.clone(), namespace.clone(), service)
    });
    let ledger = Store::config_map(client.clone(), &namespace);
    let config = cluster::watch(gateway.clone(), client, namespace);
    Some(Started {
        source: Box::pin(async move {
            let peers = async move {
                if let Some(peers) = peers {
                    peers.await;
                }
            };
            tokio::join!(config, owners.run(), peers);
        }),
        description,
        ledger,
    })
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
