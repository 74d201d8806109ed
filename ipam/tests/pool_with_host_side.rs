//! The whole pool chain: EC2 (moto) attaches, a hot-plug stand-in makes the netdev appear with the
//! ENI's MAC (as the kernel does for ENA), the host side finds it by MAC and prepares it per pool.

mod common;

use std::sync::Arc;
use std::time::Duration;

use common::{sdk, world};
use nodeeni_conf::PoolConfig;
use nodeeni_conf::load::LoadOptions;
use nodeeni_ipam::ec2::AwsEc2;
use nodeeni_ipam::host::HostSide;
use nodeeni_ipam::identity::NodeIdentity;
use nodeeni_ipam::reconcile::Reconciler;
use nodeeni_ipam::store::Lifecycle;
use nodeeni_tests::hotplug::HotPlug;
use nodeeni_tests::moto::Moto;
use nodeeni_tests::netns::TestNs;
use nodeeni_tests::root::require_root;
use nodeeni_tests::sysfs::FakeSysfs;
use nodeeni_tests::vpc::Vpc;

#[tokio::test]
async fn warmed_enis_are_found_by_mac_and_prepared_per_pool() {
    if !require_root("warmed_enis_are_found_by_mac_and_prepared_per_pool") {
        return;
    }
    let Some(moto) = Moto::start("pool_with_host_side") else { return };
    let raw = sdk(&moto.endpoint);
    let w = world(&raw).await;
    let node = TestNs::new("pool-host");
    let sysfs = Arc::new(FakeSysfs::new());
    let vpc = Arc::new(Vpc::new("pool-host"));
    vpc.add_subnet("10.0.1.0/24");
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
    };
    let r = Reconciler::new(AwsEc2::from_client(raw.clone(), &config.ec2), host, config, identity);
    let plug = HotPlug::start(
        &moto.endpoint,
        w.instance.as_str(),
        node.name(),
        vpc.clone(),
        vec![(w.subnet_a.to_string(), "10.0.1.0/24".into())],
        sysfs.clone(),
    );
    let report = r.reconcile().await.expect("reconcile");
    drop(plug);
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
