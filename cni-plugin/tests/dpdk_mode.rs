//! DPDK mode against the emulated sysfs tree: bind to vfio-pci on ADD, rebind the kernel driver on DEL,
//! roll back when the bind fails.

mod common;

use common::NodeBox;
use nodeeni_tests::root::require_root;
use serde_json::json;

const PCI: &str = "0000:00:06.0";

fn setup(label: &str) -> (NodeBox, nodeeni_tests::netns::TestNs) {
    let b = NodeBox::new(label);
    b.sysfs.add_device(PCI, Some("ena"), "eth1", 12, 0);
    let pod = b.pod(label);
    (b, pod)
}

#[test]
fn add_binds_vfio_and_del_rebinds_the_kernel_driver() {
    if !require_root("add_binds_vfio_and_del_rebinds_the_kernel_driver") {
        return;
    }
    let (b, pod) = setup("dbind");
    let conf = b.conf("1.1.0", json!({"deviceID": PCI, "mode": "dpdk"}));
    let r = b.cni("ADD", &conf, "c1", Some(&pod.path()), "dpdk0").expect_ok();
    assert_eq!(r["interfaces"][0]["pciID"], PCI);
    assert_eq!(r["interfaces"][0]["name"], "dpdk0");
    assert_eq!(b.sysfs.driver_of(PCI).as_deref(), Some("vfio-pci"));
    assert!(b.sysfs.netdevs_of(PCI).is_empty());
    b.cni("CHECK", &conf, "c1", Some(&pod.path()), "dpdk0").expect_ok();

    // A second pod asking for the same device is refused.
    let pod2 = b.pod("dbind2");
    b.cni("ADD", &conf, "c2", Some(&pod2.path()), "dpdk0").expect_code(101, "already given to container c1");

    b.cni("DEL", &conf, "c1", Some(&pod.path()), "dpdk0").expect_ok();
    assert_eq!(b.sysfs.driver_of(PCI).as_deref(), Some("ena"));
    assert_eq!(b.sysfs.netdevs_of(PCI), ["eth1"], "netdev came back");
    assert_eq!(b.sysfs.driver_override_of(PCI), "");
    b.cni("DEL", &conf, "c1", Some(&pod.path()), "dpdk0").expect_ok();
    assert!(b.records().is_empty() && b.lock_files() == 0);
}

#[test]
fn a_device_already_on_vfio_is_detected_as_dpdk_and_left_there() {
    if !require_root("a_device_already_on_vfio_is_detected_as_dpdk_and_left_there") {
        return;
    }
    let b = NodeBox::new("dpre");
    b.sysfs.add_device(PCI, Some("vfio-pci"), "eth1", 12, 0);
    let pod = b.pod("dpre");
    // No mode given: the driver link says DPDK, as host-device decides it.
    let conf = b.conf("1.1.0", json!({"pciBusID": PCI}));
    let r = b.cni("ADD", &conf, "c1", Some(&pod.path()), "net1").expect_ok();
    assert_eq!(r["interfaces"][0]["pciID"], PCI);
    b.cni("DEL", &conf, "c1", Some(&pod.path()), "net1").expect_ok();
    assert_eq!(b.sysfs.driver_of(PCI).as_deref(), Some("vfio-pci"), "a DPDK pool device stays bound");
}

#[test]
fn a_failed_bind_rolls_back_and_reports_it() {
    if !require_root("a_failed_bind_rolls_back_and_reports_it") {
        return;
    }
    let (b, pod) = setup("dfail");
    b.sysfs.break_bind_file("vfio-pci");
    let conf = b.conf("1.1.0", json!({"deviceID": PCI, "mode": "dpdk"}));
    let out = b.cni("ADD", &conf, "c1", Some(&pod.path()), "dpdk0");
    out.expect_code(103, "rolled back");
    assert!(out.msg().contains("vfio-pci/bind"), "{}", out.msg());
    assert_eq!(b.sysfs.driver_of(PCI).as_deref(), Some("ena"));
    assert_eq!(b.sysfs.netdevs_of(PCI), ["eth1"]);
    assert!(b.records().is_empty());
}

#[test]
fn a_failed_rollback_reports_both_errors() {
    if !require_root("a_failed_rollback_reports_both_errors") {
        return;
    }
    let (b, pod) = setup("dboth");
    b.sysfs.break_bind_file("vfio-pci");
    b.sysfs.break_bind_file("ena");
    let conf = b.conf("1.1.0", json!({"deviceID": PCI, "mode": "dpdk"}));
    let out = b.cni("ADD", &conf, "c1", Some(&pod.path()), "dpdk0");
    out.expect_code(103, "rolling back");
    assert!(out.msg().contains("vfio-pci/bind") && out.msg().contains("ena/bind"), "{}", out.msg());
}

#[test]
fn dpdk_pool_enis_from_the_node_state_use_the_pool_driver() {
    if !require_root("dpdk_pool_enis_from_the_node_state_use_the_pool_driver") {
        return;
    }
    let (b, pod) = setup("dpool");
    let state = json!({"version": 1, "enis": [{
        "eniId": "eni-0000000000000d0d1", "pool": "dp", "mode": "dpdk", "lifecycle": "ready",
        "pci": PCI, "mac": "0a:00:00:00:0d:01", "dpdkDriver": "uio_pci_generic", "updatedUnix": 0
    }]});
    std::fs::write(b.state.path().join("node-state.json"), state.to_string()).expect("state");
    b.write_node_file(json!({}));
    b.write_checkpoint(&[("uid-p", "nodeeni.io/dpdk", &["eni-0000000000000d0d1"])]);
    let conf = b.conf("1.1.0", json!({"runtimeConfig": {"deviceID": "eni-0000000000000d0d1"}}));
    let r = b.cni_args("ADD", &conf, "c1", Some(&pod.path()), "dpdk0", "K8S_POD_UID=uid-p").expect_ok();
    assert_eq!(r["interfaces"][0]["pciID"], PCI);
    assert_eq!(r["interfaces"][0]["mac"], "0a:00:00:00:0d:01");
    assert_eq!(b.sysfs.driver_of(PCI).as_deref(), Some("uio_pci_generic"));
    assert_eq!(b.node_state_json()["enis"][0]["allocation"]["containerId"], "c1");
    b.cni("DEL", &conf, "c1", Some(&pod.path()), "dpdk0").expect_ok();
    assert_eq!(b.sysfs.driver_of(PCI).as_deref(), Some("ena"));
    assert!(b.node_state_json()["enis"][0].get("allocation").is_none());
}

#[test]
fn a_device_without_a_driver_is_left_without_one_at_del() {
    if !require_root("a_device_without_a_driver_is_left_without_one_at_del") {
        return;
    }
    let b = NodeBox::new("dnone");
    b.sysfs.add_device(PCI, None, "eth1", 12, 0);
    let pod = b.pod("dnone");
    let conf = b.conf("1.1.0", json!({"deviceID": PCI, "mode": "dpdk", "dpdkDriver": "igb_uio"}));
    b.cni("ADD", &conf, "c1", Some(&pod.path()), "dpdk0").expect_ok();
    assert_eq!(b.sysfs.driver_of(PCI).as_deref(), Some("igb_uio"));
    // The record keeps the DPDK driver as its name, and "no driver before" as null (as it always has).
    let record: serde_json::Value =
        serde_json::from_slice(&std::fs::read(b.state.path().join("attachments/c1@dpdk0.json")).expect("record"))
            .expect("json");
    assert_eq!(record["dpdkDriver"], "igb_uio");
    assert_eq!(record.get("driverBefore"), Some(&serde_json::Value::Null), "{record}");
    b.cni("CHECK", &conf, "c1", Some(&pod.path()), "dpdk0").expect_ok();
    b.cni("DEL", &conf, "c1", Some(&pod.path()), "dpdk0").expect_ok();
    assert_eq!(b.sysfs.driver_of(PCI), None, "unbound again, as it was before ADD");
    assert_eq!(b.sysfs.driver_override_of(PCI), "");
    assert!(b.records().is_empty() && b.lock_files() == 0);
}

/// DPDK mode binds only network devices of the ENA vendor: never the root disk (an NVMe device of
/// Amazon's, class 0x010802), and another vendor's NIC only where the node file allows it.
#[test]
fn dpdk_binds_only_ena_network_devices_unless_the_node_file_allows_others() {
    if !require_root("dpdk_binds_only_ena_network_devices_unless_the_node_file_allows_others") {
        return;
    }
    let b = NodeBox::new("dven");
    const DISK: &str = "0000:00:04.0";
    const INTEL: &str = "0000:00:08.0";
    b.sysfs.add_device(DISK, Some("ena"), "nvme0", 3, 0);
    b.sysfs.set_ids(DISK, 0x1d0f, 0x010802);
    b.sysfs.add_device(INTEL, Some("ena"), "eth8", 4, 0);
    b.sysfs.set_ids(INTEL, 0x8086, 0x020000);
    let pod = b.pod("dven");
    let disk = b.conf("1.1.0", json!({"pciBusID": DISK, "mode": "dpdk"}));
    b.cni("ADD", &disk, "c1", Some(&pod.path()), "dpdk0").expect_code(7, "is not a network device (class 0x010802)");
    assert_eq!(b.sysfs.driver_of(DISK).as_deref(), Some("ena"), "left on its driver");
    let intel = b.conf("1.1.0", json!({"pciBusID": INTEL, "mode": "dpdk"}));
    b.cni("ADD", &intel, "c1", Some(&pod.path()), "dpdk0").expect_code(7, "vendor 0x8086");
    assert_eq!(b.sysfs.driver_of(INTEL).as_deref(), Some("ena"));
    assert!(b.records().is_empty());

    b.write_node_file(json!({"allowStandaloneDevices": true, "allowNonEnaDpdk": true}));
    b.cni("ADD", &intel, "c1", Some(&pod.path()), "dpdk0").expect_ok();
    assert_eq!(b.sysfs.driver_of(INTEL).as_deref(), Some("vfio-pci"));
    b.cni("DEL", &intel, "c1", Some(&pod.path()), "dpdk0").expect_ok();
    b.cni("ADD", &disk, "c1", Some(&pod.path()), "dpdk0").expect_code(7, "not a network device");
}
