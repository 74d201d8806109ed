//! The whole system on a node in a box: the daemon as a process against moto, ENIs appearing through
//! the hot-plug stand-in, the kubelet stand-in, and the CNI run through libcni. Each test is one of
//! the scenarios the system is built for.

use std::time::{Duration, Instant};

use nodeeni_proto::deviceplugin::v1beta1 as api;
use nodeeni_state::node::{Lifecycle, NodeState};
use nodeeni_tests::bins;
use nodeeni_tests::ec2world::cluster_enis;
use nodeeni_tests::hotplug::link_with_mac;
use nodeeni_tests::kubelet::PluginClient;
use nodeeni_tests::netns::TestNs;
use nodeeni_tests::nodebox::{CLUSTER, DPDK_RESOURCE, KERNEL_RESOURCE, NodeBox, PodNet};
use nodeeni_tests::root::require_root;
use nodeeni_tests::vpc::Vpc;
use tokio_stream::StreamExt;

const WARM: Duration = Duration::from_secs(120);

fn all_ready(s: &NodeState, n: usize) -> bool {
    s.enis.len() == n && s.enis.iter().all(|e| e.lifecycle == Lifecycle::Ready && e.eni_id.is_some())
}

fn ids_of(s: &NodeState, pool: &str) -> Vec<String> {
    let mut ids: Vec<String> =
        s.enis.iter().filter(|e| e.pool == pool).filter_map(|e| e.eni_id.as_ref().map(ToString::to_string)).collect();
    ids.sort();
    ids
}

/// Reads the ListAndWatch stream until `check` holds for a list (bounded).
async fn stream_until(
    stream: &mut tonic::Streaming<api::ListAndWatchResponse>,
    what: &str,
    timeout: Duration,
    check: impl Fn(&[api::Device]) -> bool,
) -> Vec<api::Device> {
    let start = Instant::now();
    let mut last = Vec::new();
    while start.elapsed() < timeout {
        match tokio::time::timeout(timeout.saturating_sub(start.elapsed()), stream.next()).await {
            Ok(Some(Ok(list))) => {
                if check(&list.devices) {
                    return list.devices;
                }
                last = list.devices;
            }
            Ok(Some(Err(e))) => panic!("{what}: stream error {e}"),
            Ok(None) => panic!("{what}: the stream ended"),
            Err(_) => break,
        }
    }
    panic!("{what}: not within {timeout:?}; last list {last:?}")
}

fn healthy_ids(list: &[api::Device]) -> Vec<String> {
    let mut ids: Vec<String> = list.iter().filter(|d| d.health == api::HEALTHY).map(|d| d.id.clone()).collect();
    ids.sort();
    ids
}

async fn allocate(client: &mut PluginClient, ids: &[String]) -> Result<api::ContainerAllocateResponse, tonic::Status> {
    let req =
        api::AllocateRequest { container_requests: vec![api::ContainerAllocateRequest { devices_ids: ids.to_vec() }] };
    client.allocate(req).await.map(|r| r.into_inner().container_responses.remove(0))
}

/// Scenario 1, Multus-style: the daemon warms 2 kernel ENIs, 1 DPDK ENI and 1 host ENI; the kubelet
/// sees the two advertised resources; the host ENI carries its stable name, MTU and is up; one kernel
/// ENI is allocated and handed to a pod through libcni; the pod pings its gateway; DEL gives it back
/// and it is healthy in the pool again. Along the way: DPDK Allocate, device-info files, metrics and
/// readiness.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scenario_1_multus_style_flow() {
    if !require_root("scenario_1_multus_style_flow") {
        return;
    }
    let Some(driver) = bins::libcni_driver() else { return };
    let Some(mut nb) = NodeBox::start("e2e-flow").await else { return };
    nb.write_config(&nb.standard_pools());
    nb.start_daemon();

    let state = nb.wait_for_state("2 kernel + 1 dpdk + 1 host ENI ready", WARM, |s| all_ready(s, 4)).await;
    let fast_ids = ids_of(&state, "fast");
    let dp_ids = ids_of(&state, "dp");
    assert_eq!((fast_ids.len(), dp_ids.len(), ids_of(&state, "masters").len()), (2, 1, 1));

    // The kubelet sees exactly the two advertised resources, registered as v1beta1 with our options.
    let fast = nb.kubelet.wait_registered(KERNEL_RESOURCE, 1, Duration::from_secs(30)).await;
    let dpdk = nb.kubelet.wait_registered(DPDK_RESOURCE, 1, Duration::from_secs(30)).await;
    let mut names: Vec<String> = nb.kubelet.registrations().into_iter().map(|r| r.resource_name).collect();
    names.sort();
    names.dedup();
    assert_eq!(names, vec![DPDK_RESOURCE.to_string(), KERNEL_RESOURCE.to_string()], "host pools are not advertised");
    assert_eq!((fast.version.as_str(), fast.endpoint.as_str()), (api::VERSION, "nodeeni-fast.sock"));
    let mut client = nb.kubelet.client(&fast.endpoint).await;
    let options = client.get_device_plugin_options(api::Empty {}).await.expect("options").into_inner();
    assert_eq!(Some(options), fast.options, "registered options equal GetDevicePluginOptions");

    // The host ENI: its stable name, the pool's MTU, up, on the node.
    let masters = state.enis.iter().find(|e| e.pool == "masters").expect("masters");
    assert_eq!(masters.host_ifname.as_deref(), Some("multus4"));
    assert_eq!(nb.node.mtu_and_up("multus4"), (9001, true));

    // ListAndWatch: both kernel ENIs, healthy.
    let mut stream = client.list_and_watch(api::Empty {}).await.expect("watch").into_inner();
    stream_until(&mut stream, "both kernel ENIs healthy", Duration::from_secs(10), |l| healthy_ids(l) == fast_ids)
        .await;

    // GetPreferredAllocation keeps a must-include device.
    let preferred = client
        .get_preferred_allocation(api::PreferredAllocationRequest {
            container_requests: vec![api::ContainerPreferredAllocationRequest {
                available_device_i_ds: fast_ids.clone(),
                must_include_device_i_ds: vec![fast_ids[1].clone()],
                allocation_size: 1,
            }],
        })
        .await
        .expect("preferred")
        .into_inner();
    assert_eq!(preferred.container_responses[0].device_i_ds, vec![fast_ids[1].clone()]);

    // Allocate one kernel ENI: SR-IOV style env and a device-info file.
    let eni = fast_ids[0].clone();
    let rec = state.enis.iter().find(|e| e.eni_id.as_ref().map(ToString::to_string) == Some(eni.clone())).expect("rec");
    let pci = rec.pci.expect("the hot-plugged ENI has a PCI address").to_string();
    let resp = allocate(&mut client, std::slice::from_ref(&eni)).await.expect("allocate");
    assert_eq!(resp.envs.get("PCIDEVICE_NODEENI_IO_FAST"), Some(&pci));
    assert_eq!(resp.envs.get("NODEENI_ENI_IDS_NODEENI_IO_FAST"), Some(&eni));
    let info: serde_json::Value =
        serde_json::from_str(&resp.envs["PCIDEVICE_NODEENI_IO_FAST_INFO"]).expect("info json");
    assert_eq!(info[&pci]["generic"]["deviceID"], eni.as_str());
    let devinfo = nb.devinfo_dir().join(format!("nodeeni.io-fast-{eni}-device.json"));
    let devinfo_json: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&devinfo).expect("device-info file")).expect("json");
    assert_eq!(
        (devinfo_json["type"].as_str(), devinfo_json["pci"]["pci-address"].as_str()),
        (Some("pci"), Some(pci.as_str()))
    );
    let unknown = allocate(&mut client, &["eni-0000000000000dead".to_string()]).await.expect_err("unknown device");
    assert_eq!(unknown.code(), tonic::Code::NotFound);

    // Allocate the DPDK ENI: bound to vfio-pci by the pool, vfio nodes in no-IOMMU form.
    let dp = state.enis.iter().find(|e| e.pool == "dp").expect("dp");
    let dp_pci = dp.pci.expect("dpdk pci").to_string();
    assert_eq!(nb.sysfs.driver_of(&dp_pci).as_deref(), Some("vfio-pci"), "the pool bound the DPDK ENI");
    let group = dp.iommu_group.expect("iommu group");
    let mut dpdk_client = nb.kubelet.client(&dpdk.endpoint).await;
    let mut dpdk_stream = dpdk_client.list_and_watch(api::Empty {}).await.expect("watch").into_inner();
    stream_until(&mut dpdk_stream, "DPDK ENI healthy", Duration::from_secs(10), |l| healthy_ids(l) == dp_ids).await;
    let resp = allocate(&mut dpdk_client, &dp_ids).await.expect("allocate dpdk");
    assert_eq!(resp.envs.get("PCIDEVICE_NODEENI_IO_DPDK"), Some(&dp_pci));
    let specs: Vec<(String, String)> =
        resp.devices.iter().map(|d| (d.container_path.clone(), d.host_path.clone())).collect();
    let dev = nb.dev_root();
    assert!(specs.contains(&("/dev/vfio/vfio".into(), dev.join("vfio/vfio").display().to_string())), "{specs:?}");
    assert!(
        specs
            .contains(&(format!("/dev/vfio/{group}"), dev.join(format!("vfio/noiommu-{group}")).display().to_string())),
        "{specs:?}"
    );

    // CNI ADD through libcni with the allocated deviceID: the pod has the whole ENI and its address.
    let pod = TestNs::new("e2e-flow-pod");
    let conf = nb.write_cni_conf("fast");
    let cap = format!("deviceID={eni}");
    let at = PodNet { conf, container: "pod-1".into(), pod: pod.path(), ifname: "net1".into() };
    let (ok, out) = nb.cni(&driver, "add", &at, &[&cap]);
    assert!(ok, "ADD: {out}");
    let ip = rec.primary_ip.expect("primary ip").to_string();
    assert!(out.contains(&ip), "the result carries the ENI's VPC address {ip}: {out}");
    assert!(pod.addresses("net1").iter().any(|a| a.starts_with(&format!("{ip}/"))), "{:?}", pod.addresses("net1"));
    assert_eq!(pod.mac_of("net1"), rec.mac.expect("mac").to_string());
    assert!(Vpc::ping_from(&pod, "10.0.1.1"), "the pod reaches its subnet gateway");
    let held = nb.state();
    let held = held.enis.iter().find(|e| e.eni_id.as_ref().map(ToString::to_string) == Some(eni.clone())).expect("rec");
    assert_eq!(held.allocation.as_ref().map(|a| a.container_id.as_str()), Some("pod-1"));

    // CNI DEL: back on the node, free, healthy in the stream.
    let (ok, out) = nb.cni(&driver, "del", &at, &[&cap]);
    assert!(ok, "DEL: {out}");
    assert!(!pod.has_link("net1"));
    assert!(link_with_mac(nb.node.name(), &rec.mac.expect("mac").to_string()).is_some(), "the ENI is back on the node");
    let back = nb.state();
    assert!(back.enis.iter().all(|e| e.allocation.is_none()), "released in the node state");
    // ListAndWatch sends only changes; a new watch starts with the list as it is now.
    drop(stream);
    let mut stream = client.list_and_watch(api::Empty {}).await.expect("watch").into_inner();
    stream_until(&mut stream, "the ENI healthy again", Duration::from_secs(10), |l| healthy_ids(l) == fast_ids).await;

    // Metrics and probes.
    let m = nb.metrics();
    assert_eq!(m.get("nodeeni_pool_enis{pool=\"fast\",state=\"ready\"}"), Some(&2.0), "{m:?}");
    assert_eq!(m.get("nodeeni_pool_enis{pool=\"dp\",state=\"ready\"}"), Some(&1.0));
    assert_eq!(m.get("nodeeni_allocations_total{resource=\"nodeeni.io/fast\"}"), Some(&1.0));
    assert_eq!(m.get("nodeeni_allocations_total{resource=\"nodeeni.io/dpdk\"}"), Some(&1.0));
    assert_eq!(m.get("nodeeni_allocation_errors_total{resource=\"nodeeni.io/fast\"}"), Some(&1.0));
    assert_eq!(m.get("nodeeni_ec2_calls_total{operation=\"CreateNetworkInterface\",outcome=\"ok\"}"), Some(&4.0));
    let creates = m.get("nodeeni_ec2_call_duration_seconds_count{operation=\"CreateNetworkInterface\"}");
    assert_eq!(creates, Some(&4.0), "one latency sample per attempt");
    assert_eq!(
        m.get("nodeeni_ec2_call_duration_seconds_bucket{operation=\"CreateNetworkInterface\",le=\"+Inf\"}"),
        Some(&4.0)
    );
    assert_eq!(m.get("nodeeni_ec2_circuit_breaker_state{state=\"closed\"}"), Some(&1.0));
    assert!(m.get("nodeeni_reconcile_total{result=\"ok\"}").is_some_and(|n| *n >= 1.0));
    assert_eq!(m.get("nodeeni_devices{resource=\"nodeeni.io/fast\",health=\"healthy\"}"), Some(&2.0));
    assert_eq!(nb.http_get("/readyz").expect("readyz"), (200, "ok\n".into()));
    assert_eq!(nb.http_get("/healthz").expect("healthz").0, 200);
    let in_moto = cluster_enis(&nb.raw, CLUSTER).await;
    assert_eq!(in_moto.len(), 4, "exactly the declared ENIs exist in EC2: {in_moto:?}");
}
