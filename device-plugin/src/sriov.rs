//! For users who keep the SR-IOV network device plugin: its `config.json` (a `resourceList` with a
//! `pciAddresses` selector per resource), written atomically so that plugin never reads half a file.

use std::collections::BTreeMap;
use std::path::Path;

use nodeeni_conf::{Mode, PoolConfig};
use nodeeni_state::atomic::{Durability, STATE_FILE_MODE, replace_file};
use nodeeni_state::node::{Lifecycle, NodeState};
use serde_json::json;

/// The SR-IOV plugin's resources go under this prefix unless told otherwise: never nodeeni's own
/// names, which nodeeni registers itself (one resource name must have one advertiser).
pub const DEFAULT_SRIOV_PREFIX: &str = "sriov.nodeeni.io";

/// The config for the resources of `config`'s kernel and dpdk pools, from the ENIs `state` has Ready,
/// each as `<prefix>/<the pool resource's name>`. An entry that would carry a name nodeeni registers
/// itself is left out (and logged): the kubelet would take the two plugins for one.
pub fn config_json(config: &PoolConfig, state: &NodeState, prefix: &str) -> serde_json::Value {
    let mut by_resource: BTreeMap<String, (Mode, Vec<String>)> = BTreeMap::new();
    for pool in &config.pools {
        let Some(resource) = &pool.resource_name else { continue };
        let entry = by_resource.entry(resource.to_string()).or_insert((pool.mode, Vec::new()));
        for e in state.enis.iter().filter(|e| e.pool == pool.name && e.lifecycle == Lifecycle::Ready) {
            if let Some(pci) = e.pci {
                entry.1.push(pci.to_string());
            }
        }
    }
    let ours: Vec<String> = by_resource.keys().cloned().collect();
    let list: Vec<serde_json::Value> = by_resource
        .into_iter()
        .filter_map(|(resource, (mode, mut pcis))| {
            pcis.sort();
            let name = resource.rsplit_once('/').map_or(resource.as_str(), |(_, n)| n);
            if ours.contains(&format!("{prefix}/{name}")) {
                tracing::error!(
                    resource = format!("{prefix}/{name}"),
                    "not giving the SR-IOV device plugin a resource nodeeni registers itself; choose another --sriov-resource-prefix"
                );
                return None;
            }
            Some(json!({
                "resourcePrefix": prefix,
                "resourceName": name,
                "deviceType": if mode == Mode::Dpdk { "accelerator" } else { "netDevice" },
                "selectors": {"pciAddresses": pcis},
            }))
        })
        .collect();
    json!({"resourceList": list})
}

/// Writes the config to `path` atomically and durably, readable by the SR-IOV plugin (0644).
pub fn write_config(path: &Path, config: &PoolConfig, state: &NodeState, prefix: &str) -> std::io::Result<()> {
    let body = serde_json::to_vec_pretty(&config_json(config, state, prefix)).map_err(std::io::Error::other)?;
    Ok(replace_file(path, &body, STATE_FILE_MODE, Durability::PowerLoss)?)
}

#[cfg(test)]
mod tests {
    use super::*;
    use nodeeni_conf::load::LoadOptions;
    use nodeeni_state::node::EniRecord;

    #[test]
    fn lists_ready_enis_per_resource_and_writes_atomically() {
        let config = PoolConfig::from_text(
            "clusterName: c\npools:\n  - {name: dp, mode: dpdk, resourceName: nodeeni.io/dpdk, subnetIds: [subnet-12345678], enisPerSubnet: 2}\n  - {name: m, mode: host, subnetIds: [subnet-12345678], firstDeviceIndex: 5}\n",
            &LoadOptions::default(),
        )
        .expect("config");
        let mut state = NodeState::default();
        for (pci, lifecycle) in [
            ("0000:00:07.0", Lifecycle::Ready),
            ("0000:00:06.0", Lifecycle::Ready),
            ("0000:00:08.0", Lifecycle::Draining),
        ] {
            state.enis.push(EniRecord {
                pci: Some(pci.parse().expect("pci")),
                ..EniRecord::new("dp", Mode::Dpdk, lifecycle)
            });
        }
        let v = config_json(&config, &state, DEFAULT_SRIOV_PREFIX);
        let list = v["resourceList"].as_array().expect("list");
        assert_eq!(list.len(), 1, "host pools are not advertised");
        assert_eq!(list[0]["resourcePrefix"], "sriov.nodeeni.io", "never the name nodeeni registers");
        let clash = config_json(&config, &state, "nodeeni.io");
        assert_eq!(clash["resourceList"], json!([]), "a prefix that would repeat nodeeni's own name is refused");
        assert_eq!(list[0]["resourceName"], "dpdk");
        assert_eq!(
            list[0]["selectors"]["pciAddresses"],
            json!(["0000:00:06.0", "0000:00:07.0"]),
            "Ready ones only, sorted"
        );
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("config.json");
        write_config(&path, &config, &state, DEFAULT_SRIOV_PREFIX).expect("write");
        let back: serde_json::Value = serde_json::from_slice(&std::fs::read(&path).expect("read")).expect("json");
        assert_eq!(back, v);
        use std::os::unix::fs::PermissionsExt;
        assert_eq!(std::fs::metadata(&path).expect("meta").permissions().mode() & 0o777, 0o644);
        assert_eq!(std::fs::read_dir(dir.path()).expect("ls").count(), 1, "no temp file left");
    }
}
