//! Standalone mode, the embedded default: the gateway reads a folder of the same manifests you
//! would `kubectl apply` (the five uprox kinds and `v1/Secret`), compiles them in-process with
//! [`uprox_crds::compile`], and serves. A state folder keeps the tokens it issues. The folders
//! are polled; any change recompiles within a second, and a change that does not parse or
//! compile cleanly is logged with its diagnostics while the last good snapshot keeps serving.
//!
//! Polling (content fingerprints every 250 ms) is deliberate: it sees edits made by any editor
//! (write in place, rename over, ConfigMap symlink swaps) on any file system, costs microseconds
//! for a folder of manifests, and needs no platform notification API.

pub mod manifests;
pub mod tokens;

use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use uprox_crds::compile::compile;

use crate::app::Gateway;
use crate::snapshot::Snapshot;
use manifests::Manifests;

/// Where standalone mode reads and writes.
#[derive(Debug, Clone)]
pub struct Options {
    /// The manifests.
    pub config_dir: PathBuf,
    /// Issued tokens.
    pub state_dir: PathBuf,
    /// How often to look for changes.
    pub poll_interval: Duration,
}

/// A successful load.
#[derive(Debug)]
pub struct Loaded {
    /// Ready to install.
    pub snapshot: Snapshot,
    /// One line for the log.
    pub summary: String,
    /// Non-fatal diagnostics.
    pub warnings: Vec<String>,
}

/// Reads both folders, issues missing tokens, compiles and builds a snapshot. Any parse error
/// or compile error refuses the whole load: the list says what to fix.
pub fn load(options: &Options) -> Result<Loaded, Vec<String>> {
    let mut config = Manifests::default();
    let mut errors = manifests::load_dir(&options.config_dir, &mut config);
    let mut state = Manifests::default();
    if options.state_dir.exists() {
        errors.extend(manifests::load_dir(&options.state_dir, &mut state));
    }
    if !errors.is_empty() {
        return Err(errors);
    }
    // A Secret in the config folder wins over the state folder's of the same name.
    let mut resources = config.resources;
    for s in state.resources.secrets {
        if !resources
            .secrets
            .iter()
            .any(|c| c.metadata.namespace == s.metadata.namespace && c.metadata.name == s.metadata.name)
        {
            resources.secrets.push(s);
        }
    }
    let now = k8s_openapi::jiff::Timestamp::now().to_string();
    let issued = tokens::issue_missing(&resources.tokens, &mut resources.secrets, &options.state_dir, &now)
        .map_err(|e| vec![e.to_string()])?;
    for i in &issued {
        // Printed once, on stdout, for the person who started the gateway; never logged.
        let _ = writeln!(std::io::stdout(), "uprox: issued token for MachineToken {}: {}", i.token, i.plaintext);
    }

    let compiled = compile(&resources.inputs());
    let (fatal, warnings): (Vec<_>, Vec<_>) = compiled.diagnostics.iter().partition(|d| d.is_error());
    if !fatal.is_empty() {
        return Err(fatal.iter().map(ToString::to_string).collect());
    }
    let snapshot = Snapshot::build(&compiled.config, &compiled.keys).map_err(|e| vec![e.to_string()])?;
    let c = &compiled.config;
    let summary = format!(
        "{} providers, {} services, {} tokens, {} policies, {} budgets",
        c.providers.len(),
        c.services.len(),
        c.tokens.len(),
        c.policies.len(),
        c.budgets.len()
    );
    let mut warnings: Vec<String> = warnings.iter().map(ToString::to_string).collect();
    warnings.extend(config.skipped.iter().map(|s| format!("{s}: not a uprox resource or Secret; skipped")));
    Ok(Loaded { snapshot, summary, warnings })
}

/// Loads once and installs the result; on failure returns the problems and installs nothing.
pub fn load_and_install(gateway: &Gateway, options: &Options) -> Result<(), Vec<String>> {
    let loaded = load(options)?;
    for w in &loaded.warnings {
        tracing::warn!("{w}");
    }
    tracing::info!(config = %options.config_dir.display(), "config loaded: {}", loaded.summary);
    gateway.install(loaded.snapshot);
    Ok(())
}

/// Polls the folders and reloads on change, until the task is dropped.
pub async fn watch(gateway: Arc<Gateway>, options: Options) {
    let mut last = fingerprint(&options);
    let mut ticker = tokio::time::interval(options.poll_interval);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        ticker.tick().await;
        let opts = options.clone();
        let Ok(current) = tokio::task::spawn_blocking(move || fingerprint(&opts)).await else {
            continue;
        };
        if current == last {
            continue;
        }
        let opts = options.clone();
        let gw = gateway.clone();
        let outcome = tokio::task::spawn_blocking(move || load_and_install(&gw, &opts)).await;
        match outcome {
            Ok(Ok(())) => {}
            Ok(Err(problems)) => {
                gateway.metrics.refused();
                for p in &problems {
                    tracing::error!("{p}");
                }
                tracing::error!(
                    "config change refused ({} problem(s)); the last good config keeps serving",
                    problems.len()
                );
            }
            Err(e) => tracing::error!(error = %e, "config reload task failed"),
        }
        // Tokens issued by the reload changed the state folder; count that as seen.
        let opts = options.clone();
        last = tokio::task::spawn_blocking(move || fingerprint(&opts)).await.unwrap_or(current);
    }
}

fn fingerprint(options: &Options) -> u64 {
    manifests::fingerprint(&[options.config_dir.as_path(), options.state_dir.as_path()])
}

/// Writes a file of the state folder atomically and privately: `bytes` go to a temporary
/// sibling (`path` with the extension `tmp_extension`; mode 0600 on Unix), are synced, then the
/// sibling is renamed over `path`. Missing parent folders are created. Issued tokens and the
/// file ownership store are written this way.
pub(crate) fn write_private(path: &Path, tmp_extension: &str, bytes: &[u8]) -> std::io::Result<()> {
    let dir = path.parent().unwrap_or(Path::new("."));
    std::fs::create_dir_all(dir)?;
    let tmp = path.with_extension(tmp_extension);
    {
        let mut options = std::fs::OpenOptions::new();
        options.write(true).create(true).truncate(true);
        #[cfg(unix)]
        std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
        let mut file = options.open(&tmp)?;
        file.write_all(bytes)?;
        file.sync_all()?;
    }
    std::fs::rename(&tmp, path)
}

/// Resolves a folder relative to the working directory, for messages.
pub fn display(path: &Path) -> String {
    path.display().to_string()
}
