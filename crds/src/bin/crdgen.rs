//! Writes `crds/<plural>.yaml` for every uprox CRD (or prints them with `--stdout`).

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
    for (file, yaml) in rendered {
        let path = dir.join(&file);
        if let Err(e) = std::fs::write(&path, yaml) {
            eprintln!("crdgen: cannot write {}: {e}", path.display());
            return ExitCode::FAILURE;
        }
        eprintln!("crdgen: wrote {}", path.display());
    }
    ExitCode::SUCCESS
}
