//! `uprox-operator`: reconciles uprox.dev resources into the gateway's compiled config.
//!
//! This build carries the API and the CRD manifests only: `uprox-operator crds` prints every
//! CustomResourceDefinition (pipe it into `kubectl apply -f -`). The controllers, key sealing
//! and token issuance in the cluster land with the operator issue; until then standalone mode
//! (`uprox-gateway --config DIR`) compiles the same resources in-process.

use std::io::Write as _;
use std::process::ExitCode;

fn main() -> ExitCode {
    let command = std::env::args().nth(1);
    match command.as_deref() {
        Some("crds") => match uprox_crds::crdgen::render() {
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
        },
        Some("--version") | Some("-V") => {
            let _ = writeln!(std::io::stdout(), "uprox-operator {}", env!("CARGO_PKG_VERSION"));
            ExitCode::SUCCESS
        }
        _ => {
            eprintln!(
                "usage: uprox-operator crds     print the uprox CustomResourceDefinitions\n\n\
                 The in-cluster controllers are not part of this build yet; run the gateway in\n\
                 standalone mode (uprox-gateway --config DIR) to serve the same resources."
            );
            ExitCode::from(2)
        }
    }
}
