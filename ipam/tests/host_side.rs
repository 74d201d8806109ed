//! The host side of pool ENIs against veth stand-ins carrying the ENI's MAC, in a node namespace.

use std::time::Duration;

use nodeeni_conf::load::LoadOptions;
use nodeeni_conf::{Mode, Pool, PoolConfig};
use nodeeni_ipam::host::HostPrep;
use nodeeni_ipam::host::HostSide;
use nodeeni_ipam::store::{Allocation, EniRecord, Lifecycle};
use nodeeni_tests::netns::TestNs;
use nodeeni_tests::root::require_root;
use nodeeni_tests::sysfs::FakeSysfs;

fn pool(mode: &str, extra: &str) -> Pool {
    let resource = if mode == "host" { String::new() } else { format!(", resourceName: nodeeni.io/{mode}") };
    let text = format!(
        "clusterName: c\npools:\n  - {{name: p, mode: {mode}{resource}, subnetIds: [subnet-12345678], mtu: 9001{extra}}}\n"
    );
    PoolConfig::from_text(&text, &LoadOptions::default()).expect("valid").pools.remove(0)
}

fn record(mac: &str, device_index: u32, mode: Mode) -> EniRecord {
    EniRecord {
        eni_id: Some("eni-0000000000000c0de".parse().expect("id")),
        mac: Some(mac.parse().expect("mac")),
        device_index: Some(device_index),
        ..EniRecord::new("p", mode, Lifecycle::Attaching)
    }
}

fn side(node: &TestNs, sysfs: &FakeSysfs) -> HostSide {
    HostSide {
        sysfs_root: sysfs.root().to_path_buf(),
        netns: Some(node.path()),
        netdev_wait: Duration::from_millis(500),
    }
}

#[tokio::test]
async fn a_kernel_pool_eni_is_cleaned_sized_and_up() {
    if !require_root("a_kernel_pool_eni_is_cleaned_sized_and_up") {
        return;
    }
    let node = TestNs::new("hs-kern");
    let sysfs = FakeSysfs::new();
    node.ip(&["link", "add", "eth7", "address", "0a:00:00:00:07:07", "type", "veth", "peer", "name", "x7"]);
    // What ec2-net-utils would have done to a hot-plugged ENI.
    node.ip(&["addr", "add", "10.9.9.9/24", "dev", "eth7"]);
    let facts = side(&node, &sysfs)
        .prepare(&pool("kernel", ""), &record("0a:00:00:00:07:07", 1, Mode::Kernel))
        .await
        .expect("prepare");
    assert_eq!(facts.ifname.as_deref(), Some("eth7"), "found by MAC");
    assert_eq!(node.mtu_and_up("eth7"), (9001, true));
    assert!(node.addresses("eth7").is_empty(), "OS-added address removed");
}

#[tokio::test]
async fn a_host_pool_eni_gets_its_stable_name() {
    if !require_root("a_host_pool_eni_gets_its_stable_name") {
        return;
    }
    let node = TestNs::new("hs-host");
    let sysfs = FakeSysfs::new();
    node.ip(&["link", "add", "ens7", "address", "0a:00:00:00:07:08", "type", "veth", "peer", "name", "x8"]);
    node.ip(&["link", "set", "ens7", "up"]);
    let facts = side(&node, &sysfs)
        .prepare(&pool("host", ""), &record("0a:00:00:00:07:08", 3, Mode::Host))
        .await
        .expect("prepare");
    assert_eq!(facts.ifname.as_deref(), Some("multus3"));
    assert!(node.has_link("multus3") && !node.has_link("ens7"));
    assert_eq!(node.mtu_and_up("multus3"), (9001, true));
    // Idempotent: again, with the name already stable.
    side(&node, &sysfs).prepare(&pool("host", ""), &record("0a:00:00:00:07:08", 3, Mode::Host)).await.expect("again");
    assert!(node.has_link("multus3"));
}

#[tokio::test]
async fn a_dpdk_pool_eni_is_bound_to_its_driver() {
    if !require_root("a_dpdk_pool_eni_is_bound_to_its_driver") {
        return;
    }
    let node = TestNs::new("hs-dpdk");
    let sysfs = FakeSysfs::new();
    sysfs.add_device("0000:00:07.0", Some("ena"), "eth8", 4, 1);
    node.ip(&["link", "add", "eth8", "address", "0a:00:00:00:07:09", "type", "veth", "peer", "name", "x9"]);
    let p = pool("dpdk", ", dpdkDriver: igb_uio");
    let mut rec = record("0a:00:00:00:07:09", 2, Mode::Dpdk);
    let facts = side(&node, &sysfs).prepare(&p, &rec).await.expect("prepare");
    assert_eq!(facts.pci.map(|p| p.to_string()).as_deref(), Some("0000:00:07.0"));
    assert_eq!(facts.driver.as_ref().map(|d| d.as_str()), Some("ena"), "the kernel driver, to return to");
    assert_eq!((facts.iommu_group, facts.numa_node), (Some(4), Some(1)));
    assert_eq!(sysfs.driver_of("0000:00:07.0").as_deref(), Some("igb_uio"));
    // After a restart: already bound, no netdev to find, nothing to do.
    rec.pci = facts.pci;
    rec.driver = facts.driver;
    node.ip(&["link", "del", "eth8"]);
    let again = side(&node, &sysfs).prepare(&p, &rec).await.expect("already bound");
    assert_eq!(again.pci, rec.pci);
}

#[tokio::test]
async fn a_netdev_that_never_appears_is_a_bounded_error() {
    if !require_root("a_netdev_that_never_appears_is_a_bounded_error") {
        return;
    }
    let node = TestNs::new("hs-none");
    let sysfs = FakeSysfs::new();
    let start = std::time::Instant::now();
    let err = side(&node, &sysfs)
        .prepare(&pool("kernel", ""), &record("0a:00:00:00:07:0a", 1, Mode::Kernel))
        .await
        .expect_err("absent");
    assert!(matches!(err, nodeeni_ipam::host::HostError::NetdevMissing { .. }), "{err:?}");
    let err = err.to_string();
    assert!(err.contains("0a:00:00:00:07:0a") && err.contains("500ms"), "{err}");
    assert!(start.elapsed() < Duration::from_secs(5));
}

#[tokio::test]
async fn an_eni_held_by_a_pod_is_not_touched() {
    if !require_root("an_eni_held_by_a_pod_is_not_touched") {
        return;
    }
    let node = TestNs::new("hs-held");
    let sysfs = FakeSysfs::new();
    let mut rec = record("0a:00:00:00:07:0b", 1, Mode::Kernel);
    rec.host_ifname = Some("eth9".into());
    rec.allocation = Some(Allocation {
        container_id: "c".parse().expect("container id"),
        ifname: "net1".into(),
        netns: None,
        since_unix: 0,
    });
    let facts = side(&node, &sysfs).prepare(&pool("kernel", ""), &rec).await.expect("no-op");
    assert_eq!(facts.ifname.as_deref(), Some("eth9"));
}
