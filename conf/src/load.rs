//! Loading the configuration: a file's text split into YAML/JSON documents, each read as what its
//! `kind` says (a `PoolConfig`, or a `NodeENI` manifest read as one more pool), the pools merged and
//! checked together. The types it fills are [`crate::pool`]'s; [`crate::nodeeni`] reads the manifests.
//! Neither of those modules knows this one: loading depends on them, never the other way round.

use std::path::{Path, PathBuf};

use serde::Deserialize;
use serde_json::Value;

use crate::nodeeni;
use crate::pool::{DEFAULT_STATE_DIR, Ec2Settings, NodeIdentity, PoolConfig, check_pools_together, read_pool_config};
use crate::problems::{Problems, child};

/// What the caller knows that the file may not say.
#[derive(Debug, Clone, Default)]
pub struct LoadOptions {
    /// Used when no `PoolConfig` document names the cluster (a file of NodeENI manifests only).
    pub cluster_name: Option<String>,
}

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read {path}: {source}")]
    Read { path: PathBuf, source: std::io::Error },
    #[error("cannot decode the configuration: {0}")]
    Decode(String),
    #[error("invalid configuration: {0}")]
    Invalid(#[from] Problems),
}

/// Splits YAML (or JSON, a subset) into documents; empty documents are skipped.
pub fn parse_documents(text: &str) -> Result<Vec<Value>, ConfigError> {
    let mut docs = Vec::new();
    for (i, de) in serde_yaml_ng::Deserializer::from_str(text).enumerate() {
        let v = Value::deserialize(de).map_err(|e| ConfigError::Decode(format!("document {}: {e}", i + 1)))?;
        if !v.is_null() {
            docs.push(v);
        }
    }
    if docs.is_empty() {
        return Err(ConfigError::Decode("the file holds no document".into()));
    }
    Ok(docs)
}

impl PoolConfig {
    /// Parses and validates a configuration file's text (YAML or JSON; several documents allowed).
    pub fn from_text(text: &str, opts: &LoadOptions) -> Result<Self, ConfigError> {
        let docs = parse_documents(text)?;
        Self::from_documents(&docs, opts)
    }

    /// Validates documents [`parse_documents`] split a file into.
    pub fn from_documents(docs: &[Value], opts: &LoadOptions) -> Result<Self, ConfigError> {
        Ok(from_documents(docs, opts)?)
    }

    /// Reads and validates a configuration file.
    pub fn from_file(path: &Path, opts: &LoadOptions) -> Result<Self, ConfigError> {
        let text =
            std::fs::read_to_string(path).map_err(|source| ConfigError::Read { path: path.to_path_buf(), source })?;
        Self::from_text(&text, opts)
    }
}

fn from_documents(docs: &[Value], opts: &LoadOptions) -> Result<PoolConfig, Problems> {
    let mut problems = Problems::new();
    let mut config: Option<PoolConfig> = None;
    let mut extra_pools = Vec::new();
    let multi = docs.len() > 1;
    for (i, doc) in docs.iter().enumerate() {
        let doc_path = if multi { format!("documents[{i}]") } else { String::new() };
        let kind = doc.get("kind").and_then(Value::as_str);
        match kind {
            Some(nodeeni::KIND) => {
                if let Some(pool) = nodeeni::to_pool(doc, &doc_path, &mut problems) {
                    extra_pools.push(pool);
                }
            }
            None | Some("PoolConfig") => {
                if config.is_some() {
                    problems.push(doc_path, "a second PoolConfig document; a file holds at most one");
                    continue;
                }
                config = read_pool_config(doc, &doc_path, &mut problems);
            }
            Some(other) => problems
                .push(child(&doc_path, "kind"), format!("unknown kind {other:?} (expected PoolConfig or NodeENI)")),
        }
    }
    let mut config = match config {
        Some(c) => c,
        None => {
            let Some(cluster_name) = opts.cluster_name.clone() else {
                problems.push(
                    "clusterName",
                    "required: add a PoolConfig document naming the cluster, or pass --cluster-name",
                );
                return Err(problems);
            };
            PoolConfig {
                cluster_name,
                node: NodeIdentity::default(),
                ec2: Ec2Settings::default(),
                state_dir: PathBuf::from(DEFAULT_STATE_DIR),
                reconcile_interval_secs: 60,
                idle_interval_max_secs: crate::pool::DEFAULT_IDLE_INTERVAL_MAX_SECS,
                leak_grace_secs: 300,
                pools: Vec::new(),
                keep_undeclared: false,
            }
        }
    };
    // Pools that name the same resource (as several NodeENIs may) together form that one resource.
    config.pools.extend(extra_pools);
    check_pools_together(&config.pools, &mut problems);
    problems.into_result(config)
}

/// Whether every document is a NodeENI manifest (a file a user checks before `kubectl apply`).
pub fn only_nodeenis(docs: &[Value]) -> bool {
    docs.iter().all(|d| d.get("kind").and_then(Value::as_str) == Some(nodeeni::KIND))
}

/// NodeENI manifests alone, without a `PoolConfig`: each read as a pool and the pools checked
/// together, as a configuration holding them would check them. No cluster name is needed: it is the
/// daemon's setting, not the manifests'.
pub fn nodeeni_manifests(docs: &[Value]) -> Result<Vec<crate::Pool>, Problems> {
    let mut problems = Problems::new();
    let multi = docs.len() > 1;
    let mut pools = Vec::new();
    for (i, doc) in docs.iter().enumerate() {
        let doc_path = if multi { format!("documents[{i}]") } else { String::new() };
        pools.extend(nodeeni::to_pool(doc, &doc_path, &mut problems));
    }
    check_pools_together(&pools, &mut problems);
    problems.into_result(pools)
}

/// Reads one NodeENI object (as a file or the Kubernetes API holds it) as a pool, checked alone:
/// the same reading and the same messages as a NodeENI document in a file.
pub fn nodeeni_pool(doc: &Value) -> Result<crate::Pool, Problems> {
    let mut pools = nodeeni_manifests(std::slice::from_ref(doc))?;
    pools.pop().ok_or_else(|| {
        let mut problems = Problems::new();
        problems.push("", "not a NodeENI object");
        problems
    })
}

/// What the rules across pools find with `candidate` beside the admitted `pools` (a name both use,
/// device indexes that overlap on nodes both select, one resource in two modes): the problems are the
/// candidate's, the later one; the admitted pools stay as they are.
pub fn admit(pools: &[crate::Pool], candidate: &crate::Pool) -> Result<(), Problems> {
    let mut all = pools.to_vec();
    all.push(candidate.clone());
    let mut found = Problems::new();
    check_pools_together(&all, &mut found);
    let mut problems = Problems::new();
    for p in found.iter().filter(|p| p.path.starts_with(&candidate.origin)) {
        problems.push(p.path.clone(), p.message.clone());
    }
    problems.into_result(())
}
