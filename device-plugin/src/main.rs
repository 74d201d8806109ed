//! `nodeeni-device-plugin`, the node daemon's command line: `validate-config` and `status` today;
//! `run` and `drain` come with the daemon wiring (see the README's status section).

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use nodeeni_conf::PoolConfig;
use nodeeni_conf::pool::{ConfigError, LoadOptions};

#[derive(Debug, Parser)]
#[command(name = "nodeeni-device-plugin", version, about = "nodeeni node daemon: ENI pools for pods")]
struct Cli {
    #[command(subcommand)]
    command: Cmd,
}

#[derive(Debug, Subcommand)]
enum Cmd {
    /// Show the node's pool ENIs as the node state has them: a table, or JSON with --json.
    Status {
        /// The state folder (stateDir of the pool config).
        #[arg(long, default_value = nodeeni_conf::pool::DEFAULT_STATE_DIR)]
        state_dir: PathBuf,
        /// Print the node state as JSON.
        #[arg(long)]
        json: bool,
    },
    /// Check a pool configuration (YAML or JSON; PoolConfig and/or NodeENI documents). Prints every
    /// problem with its path and exits 1 if there is any.
    ValidateConfig {
        /// The configuration file.
        file: PathBuf,
        /// Cluster name for files that hold only NodeENI manifests.
        #[arg(long)]
        cluster_name: Option<String>,
    },
}

fn validate(file: &std::path::Path, cluster_name: Option<String>) -> ExitCode {
    match PoolConfig::from_file(file, &LoadOptions { cluster_name }) {
        Ok(config) => {
            println!("{}: valid; cluster {}, {} pool(s)", file.display(), config.cluster_name, config.pools.len());
            for p in &config.pools {
                let resource = p.resource_name.as_ref().map_or("(not advertised)".to_string(), |r| r.to_string());
                println!(
                    "  {:<20} {:<6} {:<28} {} ENI(s), device indexes {}..{}",
                    p.name,
                    p.mode.as_str(),
                    resource,
                    p.eni_count(),
                    p.device_indexes().start,
                    p.device_indexes().end
                );
            }
            ExitCode::SUCCESS
        }
        Err(ConfigError::Invalid(problems)) => {
            eprintln!("{}: {problems}", file.display());
            ExitCode::FAILURE
        }
        Err(e) => {
            eprintln!("{}: {e}", file.display());
            ExitCode::FAILURE
        }
    }
}

fn status(state_dir: &std::path::Path, as_json: bool) -> ExitCode {
    let store = nodeeni_state::node::NodeStore::new(state_dir);
    if !store.exists() {
        eprintln!("no node state at {} (has the daemon run on this node?)", store.path().display());
        return ExitCode::FAILURE;
    }
    let state = match store.load(std::time::Duration::from_secs(5)) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("{e}");
            return ExitCode::FAILURE;
        }
    };
    if as_json {
        match serde_json::to_string_pretty(&state) {
            Ok(text) => println!("{text}"),
            Err(e) => {
                eprintln!("{e}");
                return ExitCode::FAILURE;
            }
        }
        return ExitCode::SUCCESS;
    }
    let dash = |v: Option<String>| v.unwrap_or_else(|| "-".into());
    println!(
        "{:<24} {:<12} {:<7} {:<10} {:<5} {:<10} {:<13} {:<18} {:<16} HELD BY",
        "ENI", "POOL", "MODE", "STATE", "INDEX", "IFNAME", "PCI", "MAC", "ADDRESS"
    );
    for e in &state.enis {
        println!(
            "{:<24} {:<12} {:<7} {:<10} {:<5} {:<10} {:<13} {:<18} {:<16} {}",
            dash(e.eni_id.as_ref().map(ToString::to_string)),
            e.pool,
            e.mode.as_str(),
            format!("{:?}", e.lifecycle).to_lowercase(),
            dash(e.device_index.map(|i| i.to_string())),
            dash(e.host_ifname.clone()),
            dash(e.pci.map(|p| p.to_string())),
            dash(e.mac.map(|m| m.to_string())),
            dash(e.primary_ip.map(|ip| ip.to_string())),
            dash(e.allocation.as_ref().map(|a| format!("{}/{}", a.container_id, a.ifname))),
        );
    }
    ExitCode::SUCCESS
}

fn main() -> ExitCode {
    match Cli::parse().command {
        Cmd::ValidateConfig { file, cluster_name } => validate(&file, cluster_name),
        Cmd::Status { state_dir, json } => status(&state_dir, json),
    }
}
