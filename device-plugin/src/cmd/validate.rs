//! `validate-config`: check a pool configuration as the daemon would load it.

use std::process::ExitCode;

use nodeeni_conf::load::{ConfigError, LoadOptions, nodeeni_manifests, only_nodeenis, parse_documents};
use nodeeni_conf::{Pool, PoolConfig};

/// `validate-config`: every problem with its path; exit 1 if any. A file of NodeENI manifests alone
/// is checked without `--cluster-name`: the cluster name is the daemon's setting, not the manifests',
/// and a user checks a manifest before `kubectl apply`.
pub fn validate(file: &std::path::Path, cluster_name: Option<String>) -> ExitCode {
    let checked = std::fs::read_to_string(file)
        .map_err(|source| ConfigError::Read { path: file.to_path_buf(), source })
        .and_then(|text| parse_documents(&text))
        .and_then(|docs| {
            if cluster_name.is_none() && only_nodeenis(&docs) {
                let pools = nodeeni_manifests(&docs)?;
                Ok((format!("NodeENI manifests, {} pool(s)", pools.len()), pools))
            } else {
                let config = PoolConfig::from_documents(&docs, &LoadOptions { cluster_name })?;
                Ok((format!("cluster {}, {} pool(s)", config.cluster_name, config.pools.len()), config.pools))
            }
        });
    match checked {
        Ok((summary, pools)) => {
            println!("{}: valid; {summary}", file.display());
            print_pools(&pools);
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

/// A line per pool, and the tag keys the IAM policy must allow.
fn print_pools(pools: &[Pool]) {
    for p in pools {
        let resource = p.resource_name.as_ref().map_or("(not advertised)".to_string(), |r| r.to_string());
        println!(
            "  {:<20} {:<6} {:<28} {} ENI(s), device indexes {}..{}{}",
            p.name,
            p.mode.as_str(),
            resource,
            p.eni_count(),
            p.device_indexes().start,
            p.device_indexes().end,
            match p.network_card_index {
                0 => String::new(),
                card => format!(" on network card {card}"),
            }
        );
    }
    // deploy/aws/iam-policy.json lets creates carry only the tag keys nodeeni sets; EC2 refuses a
    // create with any other key, so say so here rather than at the first warm-up.
    let user_keys: std::collections::BTreeSet<&str> =
        pools.iter().flat_map(|p| p.tags.keys().map(String::as_str)).collect();
    if !user_keys.is_empty() {
        let keys: Vec<&str> = user_keys.into_iter().collect();
        println!(
            "note: pools set tags {}: add these keys to aws:TagKeys in the IAM policy \
             (deploy/aws/iam-policy.json, CreateOnlyClusterTaggedEnis), or EC2 refuses their creates",
            keys.join(", ")
        );
    }
}
