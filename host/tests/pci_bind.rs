//! Binding to a DPDK driver and back, and rolling back on failure, against the emulated sysfs tree.

use std::time::Duration;

use nodeeni_conf::{DriverName, PciAddress};
use nodeeni_host::pci::{PciBus, PciError};
use nodeeni_tests::sysfs::FakeSysfs;

const T: Duration = Duration::from_secs(5);

fn drv(name: &str) -> DriverName {
    name.parse().expect("driver name")
}

/// A driver as a test compares it.
fn name(d: Option<DriverName>) -> Option<String> {
    d.map(|d| d.to_string())
}

fn setup() -> (FakeSysfs, PciBus, PciAddress) {
    let sys = FakeSysfs::new();
    sys.add_device("0000:00:06.0", Some("ena"), "eth1", 7, 0);
    let bus = PciBus::new(sys.root());
    (sys, bus, "0000:00:06.0".parse().expect("pci"))
}

#[test]
fn reads_driver_group_numa_and_netdev() {
    let (sys, bus, pci) = setup();
    assert_eq!(name(bus.driver(pci).expect("driver")).as_deref(), Some("ena"));
    assert_eq!(bus.netdevs(pci).expect("netdevs"), ["eth1"]);
    assert_eq!(bus.iommu_group(pci).expect("group"), Some(7));
    assert_eq!(bus.numa_node(pci).expect("numa"), Some(0));
    assert_eq!(bus.pci_of_netdev("eth1"), Some(pci));
    assert_eq!(bus.pci_of_netdev("eth9"), None);
    sys.add_device("0000:00:07.0", None, "eth2", 8, -1);
    assert_eq!(bus.numa_node("0000:00:07.0".parse().expect("pci")).expect("numa"), None, "-1 means none");
    let missing: PciAddress = "0000:00:1f.0".parse().expect("pci");
    assert!(matches!(bus.driver(missing), Err(PciError::NoDevice { .. })));
}

#[test]
fn bind_to_vfio_and_restore_the_original_driver() {
    let (sys, bus, pci) = setup();
    let before = bus.bind(pci, &drv("vfio-pci"), T).expect("bind");
    assert_eq!(name(before.driver.clone()).as_deref(), Some("ena"));
    assert_eq!(before.netdevs, ["eth1"]);
    assert_eq!(sys.driver_of("0000:00:06.0").as_deref(), Some("vfio-pci"));
    assert_eq!(sys.driver_override_of("0000:00:06.0"), "vfio-pci");
    assert!(sys.netdevs_of("0000:00:06.0").is_empty(), "netdev gone while in vfio");

    // Binding again is a no-op that reports the current state.
    let again = bus.bind(pci, &drv("vfio-pci"), T).expect("idempotent");
    assert_eq!(name(again.driver).as_deref(), Some("vfio-pci"));

    bus.restore(pci, &before, T).expect("restore");
    assert_eq!(sys.driver_of("0000:00:06.0").as_deref(), Some("ena"));
    assert_eq!(sys.netdevs_of("0000:00:06.0"), ["eth1"]);
    assert_eq!(sys.driver_override_of("0000:00:06.0"), "", "override cleared");
}

#[test]
fn a_failed_probe_rolls_back_to_the_kernel_driver() {
    let (sys, bus, pci) = setup();
    sys.fail_binds_to("vfio-pci");
    let err = bus.bind(pci, &drv("vfio-pci"), Duration::from_millis(300)).expect_err("probe fails");
    assert!(matches!(err, PciError::RolledBack { .. }), "{err}");
    assert!(err.to_string().contains("did not reach driver"), "{err}");
    assert_eq!(sys.driver_of("0000:00:06.0").as_deref(), Some("ena"));
    assert_eq!(sys.netdevs_of("0000:00:06.0"), ["eth1"]);
}

#[test]
fn a_write_error_rolls_back_and_names_the_path() {
    let (sys, bus, pci) = setup();
    sys.break_bind_file("vfio-pci");
    let err = bus.bind(pci, &drv("vfio-pci"), T).expect_err("write fails");
    let text = err.to_string();
    assert!(text.contains("vfio-pci/bind") && text.contains("0000:00:06.0"), "{text}");
    assert_eq!(sys.driver_of("0000:00:06.0").as_deref(), Some("ena"), "rolled back");
}

#[test]
fn when_rollback_fails_too_both_errors_are_reported() {
    let (sys, bus, pci) = setup();
    sys.fail_binds_to("vfio-pci");
    sys.break_bind_file("ena");
    let err = bus.bind(pci, &drv("vfio-pci"), Duration::from_millis(200)).expect_err("both fail");
    assert!(matches!(err, PciError::RollbackFailed { .. }), "{err}");
    let text = err.to_string();
    assert!(text.contains("did not reach driver") && text.contains("ena/bind"), "{text}");
}

#[test]
fn an_unloaded_driver_is_named() {
    let (_sys, bus, pci) = setup();
    let err = bus.bind(pci, &drv("no-such-driver"), T).expect_err("no driver");
    assert!(err.to_string().contains("no-such-driver"), "{err}");
    assert_eq!(name(bus.driver(pci).expect("driver")).as_deref(), Some("ena"));
}

#[test]
fn a_driver_link_naming_an_unsafe_driver_is_an_error_not_a_path() {
    let (sys, bus, pci) = setup();
    let link = sys.root().join("bus/pci/devices/0000:00:06.0/driver");
    std::fs::remove_file(&link).expect("rm link");
    std::os::unix::fs::symlink("../../../bus/pci/drivers/no good", &link).expect("link");
    let err = bus.driver(pci).expect_err("refused");
    assert!(matches!(err, PciError::BadDriverLink { .. }), "{err}");
    assert!(err.to_string().contains("driver name"), "{err}");
    // Nothing is unbound from a driver whose name could not be trusted.
    bus.bind(pci, &drv("vfio-pci"), T).expect_err("bind refuses");
    assert_eq!(std::fs::read_to_string(sys.root().join("bus/pci/drivers/vfio-pci/bind")).expect("bind"), "");
}

#[test]
fn vendor_and_class_tell_an_ena_nic_from_other_devices() {
    let (sys, bus, pci) = setup();
    let ids = bus.ids(pci).expect("ids");
    assert_eq!((ids.vendor, ids.class), (0x1d0f, 0x020000));
    assert!(ids.is_ena_vendor() && ids.is_network());
    // An NVMe disk (class 0x010802) and an Intel NIC.
    sys.add_device("0000:00:1e.0", Some("nvme"), "x", 9, 0);
    sys.set_ids("0000:00:1e.0", 0x1d0f, 0x010802);
    let nvme = bus.ids("0000:00:1e.0".parse().expect("pci")).expect("ids");
    assert!(nvme.is_ena_vendor() && !nvme.is_network(), "{nvme:?}");
    sys.set_ids("0000:00:1e.0", 0x8086, 0x020000);
    let intel = bus.ids("0000:00:1e.0".parse().expect("pci")).expect("ids");
    assert!(!intel.is_ena_vendor() && intel.is_network(), "{intel:?}");
    std::fs::write(sys.root().join("bus/pci/devices/0000:00:1e.0/vendor"), "zz\n").expect("garble");
    let e = bus.ids("0000:00:1e.0".parse().expect("pci")).expect_err("not hex");
    assert!(matches!(e, PciError::BadId { .. }) && e.to_string().contains("vendor"), "{e}");
}
