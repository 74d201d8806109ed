//! `validate-config`: check a pool configuration as the daemon would load it.

use std::process::ExitCode;

use nodeeni_conf::PoolConfig;
use nodeeni_conf::load::{ConfigError, LoadOptions};

/// `validate-config`: every problem with its path; exit 1 if any.
pub fn validate(file: &std::path::Path, cluster_name: Option<String>) -> ExitCode {
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
