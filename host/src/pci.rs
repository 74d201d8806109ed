//! PCI devices through sysfs, under a configurable root so tests run against a temp tree.
//!
//! Binding follows the kernel's documented order: set `driver_override`, unbind from the current
//! driver, bind to the new one, then check the `driver` link says so. Writes never create files: a
//! wrong path fails loudly, with the path and the data in the error. Drivers are named by
//! [`DriverName`], so `bus/pci/drivers/<name>/bind` never leaves the drivers folder, whatever a record
//! said.

use std::fs::OpenOptions;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use nodeeni_conf::{DriverName, PciAddress};

#[derive(Debug, thiserror::Error)]
pub enum PciError {
    #[error("PCI device {pci} does not exist under {root}")]
    NoDevice { pci: PciAddress, root: PathBuf },
    #[error("cannot write {data:?} to {path}: {source}")]
    Write { path: PathBuf, data: String, source: std::io::Error },
    #[error("cannot read {path}: {source}")]
    Read { path: PathBuf, source: std::io::Error },
    #[error("{path} holds {content:?}, not a hexadecimal PCI ID")]
    BadId { path: PathBuf, content: String },
    #[error("{path} names a driver that is not a safe name: {source}")]
    BadDriverLink { path: PathBuf, source: nodeeni_conf::NameError },
    #[error("driver {driver} is not loaded (no {path}); load its module first")]
    NoDriver { driver: String, path: PathBuf },
    #[error("{pci} did not reach driver {want:?} within {waited:?} (driver now {now:?})")]
    Timeout { pci: PciAddress, want: Option<String>, now: Option<String>, waited: Duration },
    #[error("binding {pci} to {driver} failed: {bind}; rolling back to {original:?} failed too: {rollback}")]
    RollbackFailed {
        pci: PciAddress,
        driver: String,
        original: Option<String>,
        bind: Box<PciError>,
        rollback: Box<PciError>,
    },
    #[error("binding {pci} to {driver} failed (rolled back to {original:?}): {bind}")]
    RolledBack { pci: PciAddress, driver: String, original: Option<String>, bind: Box<PciError> },
}

type Result<T> = std::result::Result<T, PciError>;

/// A driver as the errors show it.
fn names(driver: Option<&DriverName>) -> Option<String> {
    driver.map(DriverName::to_string)
}

/// What a device looked like before a bind: enough to put it back.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct DriverState {
    pub driver: Option<DriverName>,
    pub netdevs: Vec<String>,
}

/// What kind of device a PCI function is: its `vendor` and `class` in sysfs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PciIds {
    pub vendor: u16,
    /// Base class, subclass and programming interface (`0x020000`: an Ethernet controller).
    pub class: u32,
}

impl PciIds {
    /// Amazon's vendor ID, which ENA devices carry.
    pub const ENA_VENDOR: u16 = 0x1d0f;
    /// The network controller base class.
    pub const NETWORK_CLASS: u8 = 0x02;

    pub fn is_network(&self) -> bool {
        (self.class >> 16) as u8 == Self::NETWORK_CLASS
    }

    pub fn is_ena_vendor(&self) -> bool {
        self.vendor == Self::ENA_VENDOR
    }
}

/// The PCI bus under a sysfs root (`/sys` in production).
#[derive(Debug, Clone)]
pub struct PciBus {
    root: PathBuf,
}

impl PciBus {
    pub fn new(sysfs_root: impl Into<PathBuf>) -> Self {
        Self { root: sysfs_root.into() }
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    pub fn device_dir(&self, pci: PciAddress) -> PathBuf {
        self.root.join("bus/pci/devices").join(pci.to_string())
    }

    fn driver_dir(&self, driver: &DriverName) -> PathBuf {
        self.root.join("bus/pci/drivers").join(driver.as_str())
    }

    pub fn exists(&self, pci: PciAddress) -> bool {
        self.device_dir(pci).is_dir()
    }

    fn require(&self, pci: PciAddress) -> Result<PathBuf> {
        let dir = self.device_dir(pci);
        if dir.is_dir() { Ok(dir) } else { Err(PciError::NoDevice { pci, root: self.root.clone() }) }
    }

    /// The driver bound now, from the `driver` link's target name.
    pub fn driver(&self, pci: PciAddress) -> Result<Option<DriverName>> {
        let link = self.require(pci)?.join("driver");
        match std::fs::read_link(&link) {
            Ok(target) => target
                .file_name()
                .map(|n| n.to_string_lossy().parse().map_err(|source| PciError::BadDriverLink { path: link, source }))
                .transpose(),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(source) => Err(PciError::Read { path: link, source }),
        }
    }

    /// The network interfaces the device has now (none while bound to a userspace I/O driver).
    pub fn netdevs(&self, pci: PciAddress) -> Result<Vec<String>> {
        let dir = self.require(pci)?.join("net");
        match std::fs::read_dir(&dir) {
            Ok(entries) => {
                let mut names: Vec<String> =
                    entries.filter_map(|e| e.ok()).map(|e| e.file_name().to_string_lossy().into_owned()).collect();
                names.sort();
                Ok(names)
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Vec::new()),
            Err(source) => Err(PciError::Read { path: dir, source }),
        }
    }

    pub fn state(&self, pci: PciAddress) -> Result<DriverState> {
        Ok(DriverState { driver: self.driver(pci)?, netdevs: self.netdevs(pci)? })
    }

    /// The IOMMU group number (also the vfio group node's name).
    pub fn iommu_group(&self, pci: PciAddress) -> Result<Option<u32>> {
        let link = self.require(pci)?.join("iommu_group");
        match std::fs::read_link(&link) {
            Ok(t) => Ok(t.file_name().and_then(|n| n.to_str()).and_then(|n| n.parse().ok())),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(source) => Err(PciError::Read { path: link, source }),
        }
    }

    /// The NUMA node, or None where the platform has none (-1).
    pub fn numa_node(&self, pci: PciAddress) -> Result<Option<u32>> {
        let path = self.require(pci)?.join("numa_node");
        match std::fs::read_to_string(&path) {
            Ok(s) => Ok(s.trim().parse::<i64>().ok().filter(|n| *n >= 0).map(|n| n as u32)),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(source) => Err(PciError::Read { path, source }),
        }
    }

    /// The device's vendor and class IDs.
    pub fn ids(&self, pci: PciAddress) -> Result<PciIds> {
        let dev = self.require(pci)?;
        let read_hex = |file: &str| {
            let path = dev.join(file);
            let content =
                std::fs::read_to_string(&path).map_err(|source| PciError::Read { path: path.clone(), source })?;
            let hex = content.trim();
            u32::from_str_radix(hex.strip_prefix("0x").unwrap_or(hex), 16)
                .map_err(|_| PciError::BadId { path, content: hex.to_string() })
        };
        let vendor = read_hex("vendor")?;
        let vendor = u16::try_from(vendor)
            .map_err(|_| PciError::BadId { path: dev.join("vendor"), content: format!("{vendor:#x}") })?;
        Ok(PciIds { vendor, class: read_hex("class")? })
    }

    /// The PCI device behind a host netdev, if it has one (veths and other virtual links do not).
    pub fn pci_of_netdev(&self, ifname: &str) -> Option<PciAddress> {
        let target = std::fs::read_link(self.root.join("class/net").join(ifname).join("device")).ok()?;
        target.file_name()?.to_str()?.parse().ok()
    }

    fn write(&self, path: &Path, data: &str) -> Result<()> {
        let err = |source| PciError::Write { path: path.to_path_buf(), data: data.to_string(), source };
        // O_TRUNC is what `echo x > attr` does; sysfs ignores it, plain files (tests) need it.
        let mut f = OpenOptions::new().write(true).create(false).truncate(true).open(path).map_err(err)?;
        f.write_all(data.as_bytes()).map_err(err)
    }

    fn wait_for_driver(&self, pci: PciAddress, want: Option<&DriverName>, timeout: Duration) -> Result<()> {
        let start = Instant::now();
        loop {
            let now = self.driver(pci)?;
            if now.as_ref() == want {
                return Ok(());
            }
            if start.elapsed() >= timeout {
                return Err(PciError::Timeout { pci, want: names(want), now: names(now.as_ref()), waited: timeout });
            }
            std::thread::sleep(Duration::from_millis(2));
        }
    }

    /// Moves the device from whatever driver it has to `driver`.
    fn switch_driver(
        &self,
        pci: PciAddress,
        from: Option<&DriverName>,
        driver: &DriverName,
        timeout: Duration,
    ) -> Result<()> {
        let bind = self.driver_dir(driver).join("bind");
        if !self.driver_dir(driver).is_dir() {
            return Err(PciError::NoDriver { driver: driver.to_string(), path: self.driver_dir(driver) });
        }
        let dev = self.require(pci)?;
        self.write(&dev.join("driver_override"), driver.as_str())?;
        if let Some(cur) = from {
            self.write(&self.driver_dir(cur).join("unbind"), &pci.to_string())?;
            self.wait_for_driver(pci, None, timeout)?;
        }
        self.write(&bind, &pci.to_string())?;
        self.wait_for_driver(pci, Some(driver), timeout)
    }

    /// Binds the device to `driver` (e.g. vfio-pci). Returns the state it had, for [`Self::restore`].
    /// On failure it puts the device back and reports both errors if that fails too.
    pub fn bind(&self, pci: PciAddress, driver: &DriverName, timeout: Duration) -> Result<DriverState> {
        let before = self.state(pci)?;
        if before.driver.as_ref() == Some(driver) {
            return Ok(before);
        }
        tracing::info!(%pci, from = ?names(before.driver.as_ref()), to = %driver, "binding PCI device");
        match self.switch_driver(pci, before.driver.as_ref(), driver, timeout) {
            Ok(()) => Ok(before),
            Err(bind) => {
                tracing::warn!(%pci, error = %bind, "bind failed; rolling back");
                match self.restore(pci, &before, timeout) {
                    Ok(()) => Err(PciError::RolledBack {
                        pci,
                        driver: driver.to_string(),
                        original: names(before.driver.as_ref()),
                        bind: Box::new(bind),
                    }),
                    Err(rollback) => Err(PciError::RollbackFailed {
                        pci,
                        driver: driver.to_string(),
                        original: names(before.driver.as_ref()),
                        bind: Box::new(bind),
                        rollback: Box::new(rollback),
                    }),
                }
            }
        }
    }

    /// Puts the device back on the driver it had and waits (bounded) for its netdevs to return.
    pub fn restore(&self, pci: PciAddress, before: &DriverState, timeout: Duration) -> Result<()> {
        let dev = self.require(pci)?;
        // An empty override lets the normal driver match again.
        self.write(&dev.join("driver_override"), "\n")?;
        let now = self.driver(pci)?;
        if now != before.driver {
            if let Some(cur) = &now {
                self.write(&self.driver_dir(cur).join("unbind"), &pci.to_string())?;
                self.wait_for_driver(pci, None, timeout)?;
            }
            if let Some(orig) = &before.driver {
                self.write(&self.driver_dir(orig).join("bind"), &pci.to_string())?;
                self.wait_for_driver(pci, Some(orig), timeout)?;
            }
        }
        if !before.netdevs.is_empty() {
            let start = Instant::now();
            while self.netdevs(pci)?.is_empty() {
                if start.elapsed() >= timeout {
                    return Err(PciError::Timeout {
                        pci,
                        want: names(before.driver.as_ref()),
                        now: names(self.driver(pci)?.as_ref()),
                        waited: timeout,
                    });
                }
                std::thread::sleep(Duration::from_millis(2));
            }
        }
        Ok(())
    }
}
