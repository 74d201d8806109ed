//! The whole pool chain: EC2 (moto) attaches, a hot-plug stand-in makes the netdev appear with the
//! ENI's MAC (as the kernel does for ENA), the host side finds it by MAC and prepares it per pool.

mod common;

use std::collections::BTreeSet;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use aws_sdk_ec2::types::Filter;
use common::{sdk, world};
use nodeeni_conf::PoolConfig;
use nodeeni_conf::pool::LoadOptions;
use nodeeni_ipam::ec2::AwsEc2;
use nodeeni_ipam::host::HostSide;
use nodeeni_ipam::reconcile::{NodeIdentity, Reconciler};
use nodeeni_ipam::store::Lifecycle;
use nodeeni_tests::moto::Moto;
use nodeeni_tests::netns::TestNs;
use nodeeni_tests::root::require_root;
use nodeeni_tests::sysfs::FakeSysfs;

/// Plugs a veth into `node` for every ENI attached to `instance`, named eth<device index>.
async fn hot_plug(raw: aws_sdk_ec2::Client, instance: String, node: String, stop: Arc<AtomicBool>) {
    let mut plugged = BTreeSet::new();
    while !stop.load(Ordering::SeqCst) {
        let filter = Filter::builder().name("attachment.instance-id").values(&instance).build();
        if let Ok(out) = raw.describe_network_interfaces().filters(filter).send().await {
            for ni in out.network_interfaces() {
                let (Some(mac), Some(index)) = (ni.mac_address(), ni.attachment().and_then(|a| a.device_index()))
                else {
                    continue;
                };
                if index == 0 || !plugged.insert(mac.to_string()) {
                    continue;
                }
                let name = format!("eth{index}");
                let peer = format!("hp{index}");
                let _ = std::process::Command::new("ip")
                    .args(["-n", &node, "link", "add", &name, "address", mac, "type", "veth", "peer", "name", &peer])
                    .status();
            }
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test]
async fn warmed_enis_are_found_by_mac_and_prepared_per_pool() {
    if !require_root("warmed_enis_are_found_by_mac_and_prepared_per_pool") {
        return;
    }
    let Some(moto) = Moto::start("pool_with_host_side") else { return };
    let raw = sdk(&moto.endpoint);
    let w = world(&raw).await;
    let node = TestNs::new("pool-host");
    let sysfs = FakeSysfs::new();
    let state = tempfile::tempdir().expect("state");
    let text = format!(
        "clusterName: test\nstateDir: {}\npools:\n  - {{name: fast, mode: kernel, resourceName: nodeeni.io/fast, subnetIds: [{}], mtu: 9001, firstDeviceIndex: 1}}\n  - {{name: masters, mode: host, subnetIds: [{}], mtu: 9001, firstDeviceIndex: 2}}\n",
        state.path().display(),
        w.subnet_a,
        w.subnet_a
    );
    let config = PoolConfig::from_text(&text, &LoadOptions::default()).expect("config");
    let host = HostSide {
        sysfs_root: sysfs.root().to_path_buf(),
        netns: Some(node.path()),
        netdev_wait: Duration::from_secs(15),
    };
    let identity = NodeIdentity {
        instance_id: w.instance.clone(),
        availability_zone: "us-east-1a".into(),
        instance_type: "c5.large".into(),
        labels: Default::default(),
    };
    let r = Reconciler::new(AwsEc2::from_client(raw.clone(), &config.ec2), host, config, identity);
    let stop = Arc::new(AtomicBool::new(false));
    let plug = tokio::spawn(hot_plug(raw.clone(), w.instance.to_string(), node.name().to_string(), stop.clone()));
    let report = r.reconcile().await.expect("reconcile");
    stop.store(true, Ordering::SeqCst);
    plug.await.expect("hot plug task");
    assert_eq!(report.created.len(), 2, "{report:?}");

    let state = r.store.load(Duration::from_secs(1)).expect("state");
    let fast = state.enis.iter().find(|e| e.pool == "fast").expect("fast");
    let masters = state.enis.iter().find(|e| e.pool == "masters").expect("masters");
    assert_eq!((fast.lifecycle, masters.lifecycle), (Lifecycle::Ready, Lifecycle::Ready));
    assert_eq!(fast.host_ifname.as_deref(), Some("eth1"), "found by the MAC EC2 reported");
    assert_eq!(node.mtu_and_up("eth1"), (9001, true), "kernel pool: MTU and up");
    assert_eq!(masters.host_ifname.as_deref(), Some("multus2"), "host pool: its stable name");
    assert!(node.has_link("multus2") && !node.has_link("eth2"));
    assert_eq!(node.mtu_and_up("multus2"), (9001, true));
    assert_eq!(node.mac_of("multus2"), masters.mac.map(|m| m.to_string()).unwrap_or_default());
}
