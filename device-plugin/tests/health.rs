//! Health changes on the node reach the device list within a second: a stand-in link taken down or
//! removed, a DPDK device off its driver, an ENI no longer Ready.

use std::time::Duration;

use nodeeni_conf::Mode;
use nodeeni_device_plugin::devices::Device;
use nodeeni_device_plugin::health::{HealthSource, watch};
use nodeeni_state::node::{EniRecord, Lifecycle, NodeState, NodeStore, StoreError};
use nodeeni_tests::netns::TestNs;
use nodeeni_tests::root::require_root;
use nodeeni_tests::sysfs::FakeSysfs;
use tokio_util::sync::CancellationToken;

fn kernel(id: &str, mac: &str) -> EniRecord {
    EniRecord {
        eni_id: Some(id.parse().expect("id")),
        mac: Some(mac.parse().expect("mac")),
        ..EniRecord::new("fast", Mode::Kernel, Lifecycle::Ready)
    }
}

fn dpdk(id: &str, pci: &str) -> EniRecord {
    EniRecord {
        eni_id: Some(id.parse().expect("id")),
        pci: Some(pci.parse().expect("pci")),
        dpdk_driver: Some(nodeeni_conf::pool::DpdkDriver::VfioPci),
        iommu_group: Some(7),
        numa_node: Some(1),
        network_card: Some(1),
        ..EniRecord::new("dp", Mode::Dpdk, Lifecycle::Ready)
    }
}

/// Waits (up to 10 s; the watch judges every 200 ms) until the published health of `id` is `want`.
async fn health_becomes(rx: &mut tokio::sync::watch::Receiver<Vec<Device>>, id: &str, want: bool) {
    let ok = tokio::time::timeout(
        Duration::from_secs(10),
        rx.wait_for(|ds| ds.iter().any(|d| d.eni_id.as_str() == id && d.healthy == want)),
    )
    .await
    .is_ok_and(|r| r.is_ok());
    assert!(ok, "{id} did not become healthy={want} in time: {:?}", *rx.borrow());
}

#[tokio::test]
async fn health_changes_reach_the_list_within_a_second() {
    if !require_root("health_changes_reach_the_list_within_a_second") {
        return;
    }
    let node = TestNs::new("dp-health");
    let sysfs = FakeSysfs::new();
    sysfs.add_device("0000:00:06.0", Some("vfio-pci"), "eth6", 7, 1);
    node.ip(&["link", "add", "eth1", "address", "0a:00:00:00:0e:01", "type", "veth", "peer", "name", "x1"]);
    node.ip(&["link", "set", "eth1", "up"]);
    let dir = tempfile::tempdir().expect("state");
    let store = NodeStore::new(dir.path());
    store
        .update(Duration::from_secs(1), |s: &mut NodeState| {
            s.enis.push(kernel("eni-0000000e", "0a:00:00:00:0e:01"));
            s.enis.push(dpdk("eni-0000000d", "0000:00:06.0"));
            Ok::<_, StoreError>(())
        })
        .expect("state");
    let source = HealthSource {
        store: store.clone(),
        sysfs_root: sysfs.root().to_path_buf(),
        netns: Some(node.path()),
        pools: vec!["fast".into(), "dp".into()],
    };
    let (tx, mut rx) = tokio::sync::watch::channel(Vec::new());
    let stop = CancellationToken::new();
    let task = {
        let stop = stop.clone();
        tokio::spawn(async move { watch(source, tx, Duration::from_millis(200), &stop).await })
    };
    health_becomes(&mut rx, "eni-0000000e", true).await;
    health_becomes(&mut rx, "eni-0000000d", true).await;
    assert_eq!(rx.borrow().iter().find(|d| d.eni_id.as_str() == "eni-0000000d").and_then(|d| d.numa_node), Some(1));
    // The preferred allocation sees each device's card from its record (card 0 where none is kept).
    let cards: Vec<(String, u32)> = rx.borrow().iter().map(|d| (d.eni_id.to_string(), d.network_card)).collect();
    assert_eq!(cards, [("eni-0000000d".to_string(), 1), ("eni-0000000e".to_string(), 0)]);

    node.ip(&["link", "set", "eth1", "down"]);
    health_becomes(&mut rx, "eni-0000000e", false).await;
    node.ip(&["link", "set", "eth1", "up"]);
    health_becomes(&mut rx, "eni-0000000e", true).await;
    node.ip(&["link", "del", "eth1"]);
    health_becomes(&mut rx, "eni-0000000e", false).await;

    // The DPDK device falls off its driver.
    let bus = nodeeni_host::pci::PciBus::new(sysfs.root());
    let before = nodeeni_host::pci::DriverState { driver: Some("ena".parse().expect("driver")), netdevs: vec![] };
    bus.restore("0000:00:06.0".parse().expect("pci"), &before, Duration::from_secs(5)).expect("to ena");
    health_becomes(&mut rx, "eni-0000000d", false).await;

    // An ENI the pool no longer keeps Ready (say, detached in EC2) is unhealthy too.
    store
        .update(Duration::from_secs(1), |s: &mut NodeState| {
            s.enis.push(EniRecord { lifecycle: Lifecycle::Attaching, ..kernel("eni-0000000f", "0a:00:00:00:0e:0f") });
            Ok::<_, StoreError>(())
        })
        .expect("state");
    health_becomes(&mut rx, "eni-0000000f", false).await;
    stop.cancel();
    task.await.expect("stops");
}
