//! `install-cni`: the CNI binary into the CNI folder, atomically, and the CNI's node file where there
//! is none (at `/etc/nodeeni/node.json`, or where NODEENI_NODE_FILE says, the variable the plugin reads
//! too: in a container, the host's file through a mount).

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use nodeeni_conf::cni::{NODE_FILE, NODE_FILE_ENV};
use nodeeni_device_plugin::install::{NodeFileOutcome, install_binary, node_file_defaults, write_node_file};

/// Copies `from` into the folder `to` under a temporary name, then renames it over the old binary;
/// then makes sure the node file exists.
pub fn install_cni(from: &Path, to: &Path) -> ExitCode {
    match install_binary(from, to) {
        Ok(path) => println!("installed {}", path.display()),
        Err(e) => {
            eprintln!("{e}");
            return ExitCode::FAILURE;
        }
    }
    let node_file =
        std::env::var_os(NODE_FILE_ENV).filter(|v| !v.is_empty()).map_or(PathBuf::from(NODE_FILE), PathBuf::from);
    match write_node_file(&node_file, &node_file_defaults()) {
        Ok(NodeFileOutcome::Written) => println!("wrote the CNI node file {}", node_file.display()),
        Ok(NodeFileOutcome::Kept) => println!("kept the CNI node file {}", node_file.display()),
        Err(e) => {
            // Without it the plugin would take node paths from network configs: fail the install.
            eprintln!("{e}");
            return ExitCode::FAILURE;
        }
    }
    ExitCode::SUCCESS
}
