//! Device health, judged on the host from the node state: a kernel-pool ENI is healthy when its netdev
//! is on the node and up (or a pod holds it), a DPDK-pool ENI when it is bound to its pool's driver,
//! and no ENI is healthy unless the pool keeps it Ready (detached in EC2, draining, being replaced).
//! [`watch`] re-judges every `interval` and publishes only changes, so ListAndWatch hears of each one
//! within an interval.

use std::path::PathBuf;
use std::time::Duration;

use nodeeni_conf::Mode;
use nodeeni_host::netlink::Netlink;
use nodeeni_host::netns::NetNs;
use nodeeni_host::pci::PciBus;
use nodeeni_state::node::{EniRecord, Lifecycle, NodeStore};
use tokio::sync::{Notify, watch};

use crate::devices::Device;

#[derive(Debug, Clone)]
pub struct HealthSource {
    pub store: NodeStore,
    pub sysfs_root: PathBuf,
    /// The node's namespace when it is not ours (tests).
    pub netns: Option<PathBuf>,
    /// The pools that make up the resource.
    pub pools: Vec<String>,
}

impl HealthSource {
    fn judge(rec: &EniRecord, nl: &mut Netlink, bus: &PciBus) -> bool {
        if rec.lifecycle != Lifecycle::Ready {
            return false;
        }
        if rec.allocation.is_some() {
            // In a pod's namespace, out of our sight; the pod has it.
            return true;
        }
        match rec.mode {
            Mode::Dpdk => match (rec.pci, &rec.dpdk_driver) {
                (Some(pci), Some(want)) => bus.driver(pci).ok().flatten().as_deref() == Some(want.as_str()),
                _ => false,
            },
            Mode::Kernel | Mode::Host => match rec.mac {
                Some(mac) => nl.link_by_mac(mac).ok().flatten().is_some_and(|l| l.up),
                None => false,
            },
        }
    }

    /// The resource's devices with their health now. Blocking (netlink, sysfs, the state file).
    pub fn devices(&self) -> Result<Vec<Device>, String> {
        let state = self.store.load(Duration::from_secs(5)).map_err(|e| e.to_string())?;
        let mut nl = match &self.netns {
            Some(p) => Netlink::open_in(&NetNs::open(p).map_err(|e| e.to_string())?),
            None => Netlink::open(),
        }
        .map_err(|e| e.to_string())?;
        let bus = PciBus::new(&self.sysfs_root);
        let mut out: Vec<Device> = state
            .enis
            .iter()
            .filter(|r| self.pools.contains(&r.pool))
            .filter_map(|r| {
                Some(Device {
                    eni_id: r.eni_id.clone()?,
                    pci: r.pci,
                    healthy: Self::judge(r, &mut nl, &bus),
                    numa_node: r.numa_node,
                    network_card: 0,
                    iommu_group: r.iommu_group,
                })
            })
            .collect();
        out.sort_by(|a, b| a.eni_id.cmp(&b.eni_id));
        Ok(out)
    }
}

/// Publishes the devices whenever they change, judging every `interval`, until `stop`.
pub async fn watch(source: HealthSource, tx: watch::Sender<Vec<Device>>, interval: Duration, stop: &Notify) {
    loop {
        let s = source.clone();
        match tokio::task::spawn_blocking(move || s.devices()).await {
            Ok(Ok(devices)) => {
                tx.send_if_modified(|current| {
                    if *current == devices {
                        return false;
                    }
                    for d in devices
                        .iter()
                        .filter(|d| current.iter().any(|c| c.eni_id == d.eni_id && c.healthy != d.healthy))
                    {
                        tracing::info!(eni = %d.eni_id, healthy = d.healthy, "device health changed");
                    }
                    *current = devices;
                    true
                });
            }
            Ok(Err(e)) => tracing::warn!(error = %e, "cannot judge device health; keeping the last list"),
            Err(e) => tracing::warn!(error = %e, "health thread failed"),
        }
        tokio::select! {
            _ = tokio::time::sleep(interval) => {}
            _ = stop.notified() => return,
        }
    }
}
