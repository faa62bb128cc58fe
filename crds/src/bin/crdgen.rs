//! Writes `crds/<plural>.yaml` for every uprox CRD, and the same files into the Helm chart's
//! `charts/uprox/crds/`, which Helm installs before the chart's templates.

use std::path::Path;
use std::process::ExitCode;

fn main() -> ExitCode {
    let rendered = match uprox_crds::crdgen::render() {
        Ok(r) => r,
        Err(e) => {
            eprintln!("crdgen: cannot render CRDs: {e}");
            return ExitCode::FAILURE;
        }
    };
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"));
    let chart = dir.join("../charts/uprox/crds");
    if let Err(e) = std::fs::create_dir_all(&chart) {
        eprintln!("crdgen: cannot create {}: {e}", chart.display());
        return ExitCode::FAILURE;
    }
    for (file, yaml) in rendered {
        for path in [dir.join(&file), chart.join(&file)] {
            if let Err(e) = std::fs::write(&path, &yaml) {
                eprintln!("crdgen: cannot write {}: {e}", path.display());
                return ExitCode::FAILURE;
            }
            eprintln!("crdgen: wrote {}", path.display());
        }
    }
    ExitCode::SUCCESS
}
