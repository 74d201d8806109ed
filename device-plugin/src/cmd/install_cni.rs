//! `install-cni`: the CNI's node file where there is none (at `/etc/nodeeni/node.json`, or where
//! NODEENI_NODE_FILE says, the variable the plugin reads too: in a container, the host's file through a
//! mount), carrying the daemon's state folder; then the CNI binary into the CNI folder, atomically. In
//! that order: a plugin never runs here without its node file.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use nodeeni_conf::cni::{DEFAULT_STATE_DIR, NODE_FILE, NODE_FILE_ENV};
use nodeeni_device_plugin::install::{NodeFileOutcome, install_cni as install};

/// Writes the node file (for the daemon's `state_dir`, default /var/lib/nodeeni) unless one is there,
/// then copies `from` into the folder `to` under a temporary name and renames it over the old binary.
pub fn install_cni(from: &Path, to: &Path, state_dir: Option<&Path>) -> ExitCode {
    let node_file =
        std::env::var_os(NODE_FILE_ENV).filter(|v| !v.is_empty()).map_or(PathBuf::from(NODE_FILE), PathBuf::from);
    let state_dir = state_dir.unwrap_or(Path::new(DEFAULT_STATE_DIR));
    match install(from, to, &node_file, state_dir) {
        Ok(done) => {
            match done.node_file {
                NodeFileOutcome::Written => println!("wrote the CNI node file {}", node_file.display()),
                NodeFileOutcome::Kept => println!("kept the CNI node file {}", node_file.display()),
            }
            if let Some(warning) = done.warning {
                eprintln!("warning: {warning}");
            }
            println!("installed {}", done.binary.display());
            println!("installed {} (the host-pool IPAM plugin)", done.ipam_binary.display());
            ExitCode::SUCCESS
        }
        Err(e) => {
            // Without the node file the plugin would take node paths from network configs: the binary
            // is not installed then, and the install fails.
            eprintln!("{e}");
            ExitCode::FAILURE
        }
    }
}
