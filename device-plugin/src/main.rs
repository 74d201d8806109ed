//! `nodeeni-device-plugin`, the node daemon. Today it validates configurations; serving the kubelet
//! and running the pool come with the daemon work (see the README's status section).

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

fn main() -> ExitCode {
    match Cli::parse().command {
        Cmd::ValidateConfig { file, cluster_name } => validate(&file, cluster_name),
    }
}
