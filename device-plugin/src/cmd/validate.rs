//! `validate-config`: check a pool configuration as the daemon would load it.

use std::process::ExitCode;

use nodeeni_conf::PoolConfig;
use nodeeni_conf::load::{ConfigError, LoadOptions};

/// `validate-config`: every problem with its path; exit 1 if any.
/// The cluster name a manifests-only check loads with; never printed.
const MANIFESTS_ONLY: &str = "manifests-only";

/// Whether every document of the file is a NodeENI (unreadable files are left to the load to report).
fn only_nodeenis(file: &std::path::Path) -> bool {
    let Ok(text) = std::fs::read_to_string(file) else { return false };
    let Ok(docs) = nodeeni_conf::load::parse_documents(&text) else { return false };
    docs.iter().all(|d| d.get("kind").and_then(|k| k.as_str()) == Some(nodeeni_conf::nodeeni::KIND))
}

/// A file of NodeENI manifests alone is checked without `--cluster-name`: the cluster name is the
/// daemon's setting, not the manifests', and a user checks a manifest before `kubectl apply`.
pub fn validate(file: &std::path::Path, cluster_name: Option<String>) -> ExitCode {
    let manifests_only = cluster_name.is_none() && only_nodeenis(file);
    let cluster_name = if manifests_only { Some(MANIFESTS_ONLY.to_string()) } else { cluster_name };
    match PoolConfig::from_file(file, &LoadOptions { cluster_name }) {
        Ok(config) => {
            if manifests_only {
                println!("{}: valid; NodeENI manifests, {} pool(s)", file.display(), config.pools.len());
            } else {
                println!("{}: valid; cluster {}, {} pool(s)", file.display(), config.cluster_name, config.pools.len());
            }
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
            // deploy/iam-policy.json lets creates carry only the tag keys nodeeni sets; EC2 refuses a
            // create with any other key, so say so here rather than at the first warm-up.
            let user_keys: std::collections::BTreeSet<&str> =
                config.pools.iter().flat_map(|p| p.tags.keys().map(String::as_str)).collect();
            if !user_keys.is_empty() {
                let keys: Vec<&str> = user_keys.into_iter().collect();
                println!(
                    "note: pools set tags {}: add these keys to aws:TagKeys in the IAM policy \
                     (deploy/iam-policy.json, CreateOnlyClusterTaggedEnis), or EC2 refuses their creates",
                    keys.join(", ")
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
