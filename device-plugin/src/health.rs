//! Device health, judged on the host from the node state: a kernel-pool ENI is healthy when its netdev
//! is on the node and up (or a pod holds it), a DPDK-pool ENI when it is bound to its pool's driver,
//! and no ENI is healthy unless the pool keeps it Ready (detached in EC2, draining, being replaced).
//! [`watch`] re-judges every `interval` and publishes only changes, so ListAndWatch hears of each one
//! within an interval. What goes wrong is a [`HealthError`]: the whole list (the node state, the
//! namespace), or one device (its netdev or driver could not be read: it is judged unhealthy, and why
//! is logged with its ENI, netdev and PCI address).

use std::path::PathBuf;
use std::time::Duration;

use nodeeni_conf::{EniId, MacAddr, Mode, PciAddress};
use nodeeni_host::netlink::{Netlink, NetlinkError};
use nodeeni_host::netns::{NetNs, NetnsError};
use nodeeni_host::pci::{PciBus, PciError};
use nodeeni_state::node::{EniRecord, Lifecycle, NodeStore, StoreError};
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use crate::devices::Device;

/// Why health could not be judged: for the whole resource, or for one device.
#[derive(Debug, thiserror::Error)]
pub enum HealthError {
    #[error("reading the node state: {0}")]
    State(#[source] StoreError),
    #[error("the node's network namespace: {0}")]
    Netns(#[source] NetnsError),
    #[error("a netlink socket in the node's namespace: {0}")]
    Netlink(#[source] NetlinkError),
    /// A kernel-pool or host-pool ENI's netdev could not be looked up.
    #[error("{eni} (netdev {}): looking up MAC {mac}: {source}", .ifname.as_deref().unwrap_or("unknown"))]
    Link {
        eni: EniId,
        ifname: Option<String>,
        mac: MacAddr,
        #[source]
        source: NetlinkError,
    },
    /// A DPDK-pool ENI's driver could not be read.
    #[error("{eni}: reading the driver of {pci}: {source}")]
    Driver {
        eni: EniId,
        pci: PciAddress,
        #[source]
        source: PciError,
    },
}

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
    /// Whether one ENI is healthy; an error when what would say so cannot be read.
    fn judge(eni: &EniId, rec: &EniRecord, nl: &mut Netlink, bus: &PciBus) -> Result<bool, HealthError> {
        if rec.lifecycle != Lifecycle::Ready {
            return Ok(false);
        }
        if rec.allocation.is_some() {
            // In a pod's namespace, out of our sight; the pod has it.
            return Ok(true);
        }
        match rec.mode {
            Mode::Dpdk => match (rec.pci, rec.dpdk_driver) {
                (Some(pci), Some(want)) => {
                    let now =
                        bus.driver(pci).map_err(|source| HealthError::Driver { eni: eni.clone(), pci, source })?;
                    Ok(now == Some(want.driver_name()))
                }
                _ => Ok(false),
            },
            Mode::Kernel | Mode::Host => match rec.mac {
                Some(mac) => {
                    let link = nl.link_by_mac(mac).map_err(|source| HealthError::Link {
                        eni: eni.clone(),
                        ifname: rec.host_ifname.clone(),
                        mac,
                        source,
                    })?;
                    Ok(link.is_some_and(|l| l.up))
                }
                None => Ok(false),
            },
        }
    }

    /// The resource's devices with their health now. Blocking (netlink, sysfs, the state file). A
    /// device whose health cannot be read is unhealthy (the reason is logged).
    pub fn devices(&self) -> Result<Vec<Device>, HealthError> {
        let state = self.store.load(Duration::from_secs(5)).map_err(HealthError::State)?;
        let mut nl = match &self.netns {
            Some(p) => Netlink::open_in(&NetNs::open(p).map_err(HealthError::Netns)?),
            None => Netlink::open(),
        }
        .map_err(HealthError::Netlink)?;
        let bus = PciBus::new(&self.sysfs_root);
        let mut out: Vec<Device> = state
            .enis
            .iter()
            .filter(|r| self.pools.contains(&r.pool))
            .filter_map(|r| {
                let eni = r.eni_id.clone()?;
                let healthy = Self::judge(&eni, r, &mut nl, &bus).unwrap_or_else(|e| {
                    tracing::debug!(%eni, error = %e, "cannot judge the device's health; unhealthy");
                    false
                });
                Some(Device {
                    eni_id: eni,
                    pci: r.pci,
                    healthy,
                    numa_node: r.numa_node,
                    network_card: r.network_card.unwrap_or(0),
                    iommu_group: r.iommu_group,
                })
            })
            .collect();
        out.sort_by(|a, b| a.eni_id.cmp(&b.eni_id));
        Ok(out)
    }
}

/// Publishes the devices whenever they change, judging every `interval`, until `stop`.
pub async fn watch(source: HealthSource, tx: watch::Sender<Vec<Device>>, interval: Duration, stop: &CancellationToken) {
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
            _ = stop.cancelled() => return,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use nodeeni_state::node::NodeState;

    fn dpdk(id: &str, pci: &str) -> EniRecord {
        EniRecord {
            eni_id: Some(id.parse().expect("id")),
            pci: Some(pci.parse().expect("pci")),
            dpdk_driver: Some(nodeeni_conf::pool::DpdkDriver::VfioPci),
            ..EniRecord::new("dp", Mode::Dpdk, Lifecycle::Ready)
        }
    }

    #[test]
    fn a_driver_that_cannot_be_read_is_an_error_naming_the_eni_and_pci_and_the_device_unhealthy() {
        let (sysfs, dir) = (tempfile::tempdir().expect("sysfs"), tempfile::tempdir().expect("state"));
        let rec = dpdk("eni-0000000d", "0000:00:06.0");
        let eni = rec.eni_id.clone().expect("id");
        let bus = PciBus::new(sysfs.path());
        let mut nl = Netlink::open().expect("netlink");
        // No such device under the sysfs root.
        let err = HealthSource::judge(&eni, &rec, &mut nl, &bus).expect_err("cannot read the driver");
        let HealthError::Driver { eni: e, pci, source: PciError::NoDevice { .. } } = &err else {
            panic!("expected a Driver error with its source, got {err:?}")
        };
        assert_eq!((e.as_str(), pci.to_string().as_str()), ("eni-0000000d", "0000:00:06.0"));
        assert!(std::error::Error::source(&err).is_some(), "the PCI error is kept as the source");
        assert!(err.to_string().starts_with("eni-0000000d: reading the driver of 0000:00:06.0: "), "{err}");

        // In the list, the device is unhealthy; the list itself is fine.
        let store = NodeStore::new(dir.path());
        store
            .update(Duration::from_secs(1), |s: &mut NodeState| {
                s.enis.push(rec.clone());
                Ok::<_, StoreError>(())
            })
            .expect("state");
        let source =
            HealthSource { store, sysfs_root: sysfs.path().to_path_buf(), netns: None, pools: vec!["dp".into()] };
        let devices = source.devices().expect("the list");
        assert_eq!(devices.len(), 1);
        assert!(!devices[0].healthy);
    }

    #[test]
    fn a_node_namespace_that_cannot_be_opened_fails_the_list_naming_it() {
        let dir = tempfile::tempdir().expect("state");
        let source = HealthSource {
            store: NodeStore::new(dir.path()),
            sysfs_root: dir.path().to_path_buf(),
            netns: Some(dir.path().join("no-such-netns")),
            pools: vec!["dp".into()],
        };
        let err = source.devices().expect_err("no namespace");
        assert!(matches!(err, HealthError::Netns(NetnsError::Open { .. })), "{err:?}");
        assert!(err.to_string().contains("no-such-netns"), "{err}");
    }
}
