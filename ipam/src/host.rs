//! The host side of a pool ENI: find its netdev by the MAC EC2 reports (never by name or device
//! index, which differ across instance types and above PCI slot 9), wait for it (bounded), record what
//! the host knows of it, and prepare it as its pool declares — whatever the OS's own network tooling
//! (ec2-net-utils, systemd-networkd) did to the hot-plugged interface meanwhile:
//!
//! - kernel pools: no addresses, the pool's MTU, up — ready to be moved into a pod;
//! - host pools: renamed to the pool's stable name (`multus<device index>`), MTU, up, no addresses;
//! - dpdk pools: bound to the pool's DPDK driver through the shared PCI layer.
//!
//! Netlink and sysfs are synchronous; they run on a blocking thread, never across an await.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use std::future::Future;

use nodeeni_conf::{DriverName, MacAddr, Mode, PciAddress, Pool};
use nodeeni_host::netlink::{Link, Netlink, NetlinkError};
use nodeeni_host::netns::{NetNs, NetnsError};
use nodeeni_host::pci::{PciBus, PciError};
use nodeeni_state::node::EniRecord;

/// What the host knows of an attached ENI once it is prepared for its pool.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct HostFacts {
    pub ifname: Option<String>,
    pub pci: Option<PciAddress>,
    /// The kernel driver found on the device, to return to.
    pub driver: Option<DriverName>,
    pub iommu_group: Option<u32>,
    pub numa_node: Option<u32>,
}

/// Why an attached ENI could not be prepared on the host.
#[derive(Debug, thiserror::Error)]
pub enum HostError {
    #[error("the record has no MAC yet")]
    NoMac,
    #[error("no netdev with MAC {mac} appeared within {waited:?}")]
    NetdevMissing { mac: MacAddr, waited: Duration },
    #[error("the node's network namespace: {0}")]
    Netns(#[from] NetnsError),
    #[error("{ifname}: {source}")]
    Netlink {
        ifname: String,
        #[source]
        source: NetlinkError,
    },
    #[error(transparent)]
    Pci(#[from] PciError),
    #[error("{ifname} has no PCI device to bind")]
    NoPciDevice { ifname: String },
    #[error("host preparation thread: {0}")]
    Thread(#[from] tokio::task::JoinError),
}

impl HostError {
    fn netlink(ifname: &str) -> impl Fn(NetlinkError) -> HostError + '_ {
        move |source| HostError::Netlink { ifname: ifname.to_string(), source }
    }
}

/// The host side: find the attached ENI's netdev by MAC and prepare it for its pool's mode.
pub trait HostPrep: Send + Sync {
    fn prepare(&self, pool: &Pool, record: &EniRecord) -> impl Future<Output = Result<HostFacts, HostError>> + Send;
}

#[derive(Debug, Clone)]
pub struct HostSide {
    pub sysfs_root: PathBuf,
    /// The node's network namespace, when it is not the daemon's own (tests).
    pub netns: Option<PathBuf>,
    /// How long a hot-plugged ENI may take to show up as a netdev.
    pub netdev_wait: Duration,
}

impl HostSide {
    pub fn new(sysfs_root: impl Into<PathBuf>) -> Self {
        Self { sysfs_root: sysfs_root.into(), netns: None, netdev_wait: Duration::from_secs(60) }
    }

    fn netlink(&self) -> Result<Netlink, HostError> {
        let opened = match &self.netns {
            Some(p) => Netlink::open_in(&NetNs::open(p)?),
            None => Netlink::open(),
        };
        opened.map_err(HostError::netlink("(netlink socket)"))
    }

    fn wait_for(&self, nl: &mut Netlink, mac: MacAddr) -> Result<Link, HostError> {
        let start = Instant::now();
        loop {
            if let Some(link) = nl.link_by_mac(mac).map_err(HostError::netlink("(link by MAC)"))? {
                return Ok(link);
            }
            if start.elapsed() >= self.netdev_wait {
                return Err(HostError::NetdevMissing { mac, waited: self.netdev_wait });
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// The synchronous work of [`HostPrep::prepare`].
    pub fn prepare_blocking(&self, pool: &Pool, record: &EniRecord) -> Result<HostFacts, HostError> {
        let mac = record.mac.ok_or(HostError::NoMac)?;
        let bus = PciBus::new(&self.sysfs_root);
        if pool.mode == Mode::Dpdk
            && let Some(pci) = record.pci
            && bus.driver(pci)? == Some(pool.dpdk_driver.driver_name())
        {
            // Already bound (a restart): nothing to find, the netdev is gone by design.
            return Ok(HostFacts {
                ifname: None,
                pci: Some(pci),
                driver: record.driver.clone(),
                ..facts_of(&bus, pci)
            });
        }
        let mut nl = self.netlink()?;
        let link = self.wait_for(&mut nl, mac)?;
        let pci = bus.pci_of_netdev(&link.name);
        if pci.is_none() {
            // Every ENA/Nitro ENI is a PCI device; without the address Allocate can write no
            // device-info file and puts no PCI address in the pod's environment.
            tracing::warn!(ifname = link.name, "the ENI's netdev has no PCI device in sysfs");
        }
        let driver = match pci {
            Some(p) => bus.driver(p)?,
            None => None,
        };
        let mut facts = HostFacts { ifname: Some(link.name.clone()), pci, driver, ..Default::default() };
        if let Some(p) = pci {
            let more = facts_of(&bus, p);
            (facts.iommu_group, facts.numa_node) = (more.iommu_group, more.numa_node);
        }
        let err = HostError::netlink(&link.name);
        match pool.mode {
            Mode::Kernel | Mode::Host => {
                // The pool declares no host addresses: whatever the OS tooling added goes.
                for addr in nl.addresses(link.index).map_err(&err)? {
                    tracing::info!(ifname = link.name, %addr, "removing an address the OS put on a pool ENI");
                    nl.del_address(link.index, &addr).map_err(&err)?;
                }
                if pool.mode == Mode::Host {
                    let stable = pool.host_ifname(record.device_index.unwrap_or(0));
                    if link.name != stable {
                        if link.up {
                            nl.set_up(link.index, false).map_err(&err)?;
                        }
                        nl.set_name(link.index, &stable).map_err(&err)?;
                        tracing::info!(from = link.name, to = stable, "named host-pool ENI");
                        facts.ifname = Some(stable);
                    }
                }
                if let Some(mtu) = pool.mtu
                    && mtu != link.mtu
                {
                    nl.set_mtu(link.index, mtu).map_err(&err)?;
                }
                nl.set_up(link.index, true).map_err(&err)?;
            }
            Mode::Dpdk => {
                let pci = pci.ok_or_else(|| HostError::NoPciDevice { ifname: link.name.clone() })?;
                if let Some(mtu) = pool.mtu
                    && mtu != link.mtu
                {
                    nl.set_mtu(link.index, mtu).map_err(&err)?;
                }
                bus.bind(pci, &pool.dpdk_driver.driver_name(), Duration::from_secs(10))?;
                tracing::info!(%pci, driver = %pool.dpdk_driver, "bound dpdk-pool ENI");
            }
        }
        Ok(facts)
    }
}

fn facts_of(bus: &PciBus, pci: PciAddress) -> HostFacts {
    HostFacts {
        pci: Some(pci),
        iommu_group: bus.iommu_group(pci).ok().flatten(),
        numa_node: bus.numa_node(pci).ok().flatten(),
        ..Default::default()
    }
}

impl HostPrep for HostSide {
    async fn prepare(&self, pool: &Pool, record: &EniRecord) -> Result<HostFacts, HostError> {
        if record.allocation.is_some() {
            // A pod has it; its netdev is in the pod's namespace.
            return Ok(HostFacts {
                ifname: record.host_ifname.clone(),
                pci: record.pci,
                driver: record.driver.clone(),
                ..Default::default()
            });
        }
        let (this, pool, record) = (self.clone(), pool.clone(), record.clone());
        tokio::task::spawn_blocking(move || this.prepare_blocking(&pool, &record)).await?
    }
}
