//! DPDK mode: the ENI's PCI device is bound to the userspace I/O driver (vfio-pci by default) for the
//! pod's DPDK application; DEL rebinds the driver it had and waits for its netdev to return.

use nodeeni_conf::cni::Interface;
use nodeeni_conf::pool::DpdkDriver;
use nodeeni_conf::{DriverName, PciAddress};
use nodeeni_host::pci::{DriverState, PciError};

use crate::context::{Ctx, DRIVER_TIMEOUT};
use crate::error::Result;

/// Binds and returns the state before, for the record.
pub fn bind(ctx: &Ctx, pci: PciAddress, driver: DpdkDriver) -> Result<DriverState> {
    Ok(ctx.bus.bind(pci, &driver.driver_name(), DRIVER_TIMEOUT)?)
}

/// Whether DEL may bind the device back to `driver`, which a record names: a record is a file, and its
/// names become sysfs paths, so only the known set: ena (every ENI), the DPDK drivers (a device that
/// was already bound to one), and, where the node file allows non-ENA devices in DPDK mode, the
/// driver such a device had.
pub fn may_restore(ctx: &Ctx, driver: &DriverName) -> bool {
    const ENA: &str = "ena";
    driver.as_str() == ENA || driver.as_str().parse::<DpdkDriver>().is_ok() || ctx.settings.allow_non_ena_dpdk
}

/// Rebinds the driver the device had; a device that is gone (the ENI detached) has nothing to rebind.
pub fn restore(ctx: &Ctx, pci: PciAddress, before: &DriverState) -> std::result::Result<(), PciError> {
    if !ctx.bus.exists(pci) {
        tracing::warn!(%pci, "PCI device is gone (ENI detached?); nothing to rebind");
        return Ok(());
    }
    ctx.bus.restore(pci, before, DRIVER_TIMEOUT)
}

pub fn interface(ifname: &str, sandbox: Option<&str>, mac: Option<String>, pci: PciAddress) -> Interface {
    Interface {
        name: ifname.to_string(),
        mac,
        mtu: None,
        sandbox: sandbox.map(str::to_string),
        socket_path: None,
        pci_id: Some(pci.to_string()),
    }
}
