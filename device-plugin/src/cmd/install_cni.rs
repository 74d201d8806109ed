//! `install-cni`: the CNI binary into the CNI folder, atomically.

use std::path::Path;
use std::process::ExitCode;

/// Copies `from` into the folder `to` under a temporary name, then renames it over the old binary.
pub fn install_cni(from: &Path, to: &Path) -> ExitCode {
    match nodeeni_device_plugin::install::install_binary(from, to) {
        Ok(path) => {
            println!("installed {}", path.display());
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("{e}");
            ExitCode::FAILURE
        }
    }
}
