//! One resource's devices as the kubelet sees them: device IDs are ENI IDs.

use nodeeni_conf::{EniId, PciAddress};
use nodeeni_proto::deviceplugin::v1beta1 as api;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Device {
    pub eni_id: EniId,
    pub pci: Option<PciAddress>,
    pub healthy: bool,
    pub numa_node: Option<u32>,
    /// The EC2 network card the ENI is attached on.
    pub network_card: u32,
    pub iommu_group: Option<u32>,
}

impl Device {
    pub fn to_api(&self) -> api::Device {
        api::Device {
            id: self.eni_id.to_string(),
            health: if self.healthy { api::HEALTHY } else { api::UNHEALTHY }.to_string(),
            topology: self.numa_node.map(|n| api::TopologyInfo { nodes: vec![api::NumaNode { id: i64::from(n) }] }),
        }
    }
}

/// The env var name the SR-IOV device plugin uses for a resource: `PCIDEVICE_` and the full resource
/// name upper-cased with `.`, `/` and `-` as `_` (`nodeeni.io/dpdk` → `PCIDEVICE_NODEENI_IO_DPDK`).
pub fn pcidevice_env(resource: &str) -> String {
    let mut name = String::from("PCIDEVICE_");
    name.extend(resource.chars().map(|c| match c {
        '.' | '/' | '-' => '_',
        c => c.to_ascii_uppercase(),
    }));
    name
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn env_names_follow_the_sriov_convention() {
        assert_eq!(pcidevice_env("nodeeni.io/dpdk"), "PCIDEVICE_NODEENI_IO_DPDK");
        assert_eq!(pcidevice_env("nodeeni.io/user-plane"), "PCIDEVICE_NODEENI_IO_USER_PLANE");
    }

    #[test]
    fn devices_carry_health_and_numa_to_the_kubelet() {
        let d = Device {
            eni_id: "eni-12345678".parse().expect("id"),
            pci: None,
            healthy: false,
            numa_node: Some(1),
            network_card: 0,
            iommu_group: None,
        };
        let a = d.to_api();
        assert_eq!((a.id.as_str(), a.health.as_str()), ("eni-12345678", "Unhealthy"));
        assert_eq!(a.topology.map(|t| t.nodes[0].id), Some(1));
    }
}
