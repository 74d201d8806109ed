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
use nodeeni_tests::poll::eventually;
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

/// Reads the ListAndWatch stream until `check` holds for a list (bounded); a failure shows the daemon's log.
async fn stream_until(
    nb: &NodeBox,
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
            Ok(Some(Err(e))) => panic!("{what}: stream error {e}\n--- daemon log ---\n{}", nb.daemon_log()),
            Ok(None) => panic!("{what}: the stream ended\n--- daemon log ---\n{}", nb.daemon_log()),
            Err(_) => break,
        }
    }
    panic!("{what}: not within {timeout:?}; last list {last:?}\n--- daemon log ---\n{}", nb.daemon_log())
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
    assert_eq!((fast.version.as_str(), fast.endpoint.as_str()), (api::VERSION, "nodeeni-nodeeni.io_fast.sock"));
    let mut client = nb.kubelet.client(&fast.endpoint).await;
    let options = client.get_device_plugin_options(api::Empty {}).await.expect("options").into_inner();
    assert_eq!(Some(options), fast.options, "registered options equal GetDevicePluginOptions");

    // The host ENI: its stable name, the pool's MTU, up, on the node.
    let masters = state.enis.iter().find(|e| e.pool == "masters").expect("masters");
    assert_eq!(masters.host_ifname.as_deref(), Some("multus4"));
    assert_eq!(nb.node.mtu_and_up("multus4"), (9001, true));

    // ListAndWatch: both kernel ENIs, healthy.
    let mut stream = client.list_and_watch(api::Empty {}).await.expect("watch").into_inner();
    stream_until(&nb, &mut stream, "both kernel ENIs healthy", Duration::from_secs(10), |l| healthy_ids(l) == fast_ids)
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
    stream_until(&nb, &mut dpdk_stream, "DPDK ENI healthy", Duration::from_secs(10), |l| healthy_ids(l) == dp_ids)
        .await;
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
    stream_until(&nb, &mut stream, "the ENI healthy again", Duration::from_secs(10), |l| healthy_ids(l) == fast_ids)
        .await;

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

/// A node in a box whose daemon has warmed a `fast` pool of one ENI: the box, the ENI's ID and MAC.
async fn one_fast_eni(label: &str) -> Option<(NodeBox, String, String)> {
    let mut nb = NodeBox::start(label).await?;
    nb.write_config(&fast_pool(&nb, 1));
    nb.start_daemon();
    let state = nb.wait_for_state("1 ENI ready", WARM, |s| all_ready(s, 1)).await;
    let eni = ids_of(&state, "fast").remove(0);
    let mac = state.enis[0].mac.expect("mac").to_string();
    Some((nb, eni, mac))
}

fn fast_pool(nb: &NodeBox, count: u32) -> String {
    format!(
        "  - {{name: fast, mode: kernel, resourceName: {KERNEL_RESOURCE}, subnetIds: [{}], securityGroupIds: [{}], enisPerSubnet: {count}, firstDeviceIndex: 1, mtu: 9001}}\n",
        nb.world.subnet_a, nb.world.sg
    )
}

fn open_fds(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd")).map(|d| d.count()).unwrap_or(0)
}

/// The daemon's own life: a kubelet restart re-registers within 2 s; a link taken down reaches the
/// stream as Unhealthy within 1 s; a valid config change is applied and an invalid one keeps the
/// old config (both counted); SIGTERM stops serving, removes the socket and leaves every ENI attached;
/// a restart adopts them without a single create.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn daemon_reregisters_reloads_and_stops_without_touching_enis() {
    if !require_root("daemon_reregisters_reloads_and_stops_without_touching_enis") {
        return;
    }
    let Some(mut nb) = NodeBox::start("e2e-life").await else { return };
    let sriov = nb.dir.path().join("sriov/config.json");
    std::fs::create_dir_all(sriov.parent().expect("dir")).expect("mkdir");
    nb.extra_daemon_args = vec!["--sriov-config".into(), sriov.display().to_string()];
    nb.write_config(&fast_pool(&nb, 2));
    nb.start_daemon();
    let state = nb.wait_for_state("2 ENIs ready", WARM, |s| all_ready(s, 2)).await;
    let ids = ids_of(&state, "fast");

    // The SR-IOV device plugin's config.json follows the pool (written after a good pass).
    let mut pcis: Vec<String> = state.enis.iter().filter_map(|e| e.pci.map(|p| p.to_string())).collect();
    pcis.sort();
    let sriov_pcis = || -> Option<Vec<String>> {
        let written: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&sriov).ok()?).ok()?;
        let entry = written["resourceList"].as_array()?.iter().find(|r| r["resourceName"] == "fast")?.clone();
        let mut listed: Vec<String> = serde_json::from_value(entry["selectors"]["pciAddresses"].clone()).ok()?;
        listed.sort();
        Some(listed)
    };
    let context = || format!("SR-IOV config lists {:?}, want {pcis:?}", sriov_pcis());
    eventually(
        "the SR-IOV config lists the pool",
        Duration::from_secs(10),
        async || sriov_pcis().filter(|p| *p == pcis),
        context,
    )
    .await;
    let reg = nb.kubelet.wait_registered(KERNEL_RESOURCE, 1, Duration::from_secs(30)).await;

    // Kubelet restart: sockets deleted, new kubelet.sock; serve again and register again (how soon is
    // measured by bench-daemon against the 2 s target).
    nb.kubelet.restart().await;
    nb.kubelet.wait_registered(KERNEL_RESOURCE, 2, Duration::from_secs(30)).await;
    assert!(nb.plugin_dir().join(&reg.endpoint).exists(), "our socket is back");
    let registered = format!("nodeeni_kubelet_registered{{resource=\"{KERNEL_RESOURCE}\"}}");
    nb.wait_for_metric(&registered, Duration::from_secs(10), |n| n == Some(1.0)).await;
    // A restarted kubelet that refuses the new registration: the daemon says it is not registered
    // (gauge 0, /readyz 503) while the registrations counter stays where it was; once it accepts,
    // the daemon's retries register again.
    nb.kubelet.refuse_registrations(true);
    nb.kubelet.restart().await;
    nb.wait_for_metric(&registered, Duration::from_secs(10), |n| n == Some(0.0)).await;
    let (status, why) = nb.http_get("/readyz").expect("readyz");
    assert_eq!(status, 503, "not ready while unregistered: {why}");
    assert!(why.contains(&format!("{KERNEL_RESOURCE} is not registered")), "{why}");
    nb.kubelet.refuse_registrations(false);
    nb.kubelet.wait_registered(KERNEL_RESOURCE, 3, Duration::from_secs(30)).await;
    nb.wait_for_metric(&registered, Duration::from_secs(10), |n| n == Some(1.0)).await;

    // Health: the ENI's netdev goes down → Unhealthy in the stream; up again → Healthy (how soon is
    // measured by bench-daemon against the 1 s target).
    let mut client = nb.kubelet.client(&reg.endpoint).await;
    let mut stream = client.list_and_watch(api::Empty {}).await.expect("watch").into_inner();
    stream_until(&nb, &mut stream, "both healthy", Duration::from_secs(5), |l| healthy_ids(l) == ids).await;
    let rec =
        state.enis.iter().find(|e| e.eni_id.as_ref().map(ToString::to_string) == Some(ids[0].clone())).expect("rec");
    let ifname = link_with_mac(nb.node.name(), &rec.mac.expect("mac").to_string()).expect("netdev");
    nb.node.ip(&["link", "set", &ifname, "down"]);
    let list = stream_until(&nb, &mut stream, "link down → Unhealthy", Duration::from_secs(10), |l| {
        l.iter().any(|d| d.id == ids[0] && d.health == api::UNHEALTHY)
    })
    .await;
    assert!(list.iter().any(|d| d.id == ids[1] && d.health == api::HEALTHY), "the other ENI is unaffected");
    let refused = allocate(&mut client, &ids[..1]).await.expect_err("an unhealthy device is refused");
    assert_eq!(refused.code(), tonic::Code::FailedPrecondition);
    nb.node.ip(&["link", "set", &ifname, "up"]);
    stream_until(&nb, &mut stream, "link up → Healthy", Duration::from_secs(10), |l| healthy_ids(l) == ids).await;

    // The attachment lost in EC2 (detached behind nodeeni's back): the netdev goes with it, the device
    // turns Unhealthy; the next pass re-attaches it and it is Healthy again.
    let attachment = nb
        .raw
        .describe_network_interfaces()
        .network_interface_ids(&ids[0])
        .send()
        .await
        .expect("describe")
        .network_interfaces()[0]
        .attachment()
        .and_then(|a| a.attachment_id())
        .expect("attached")
        .to_string();
    nb.raw.detach_network_interface().attachment_id(attachment).force(true).send().await.expect("detach");
    stream_until(&nb, &mut stream, "detached in EC2 → Unhealthy", Duration::from_secs(3), |l| {
        l.iter().any(|d| d.id == ids[0] && d.health == api::UNHEALTHY)
    })
    .await;
    stream_until(&nb, &mut stream, "re-attached → Healthy", Duration::from_secs(30), |l| healthy_ids(l) == ids).await;
    assert!(nb.daemon_log().contains("re-attaching"), "the repair is logged");

    // A valid change is applied: a third ENI.
    nb.write_config(&fast_pool(&nb, 3));
    let state = nb.wait_for_state("3 ENIs after the reload", WARM, |s| all_ready(s, 3)).await;
    assert!(ids.iter().all(|id| ids_of(&state, "fast").contains(id)), "the first two stay");
    // An invalid file keeps the old configuration, says why, counts it.
    nb.write_config_text("clusterName: nib\npools:\n  - {name: fast, mode: warp}\n");
    nb.wait_for_metric("nodeeni_config_reloads_total{result=\"invalid\"}", Duration::from_secs(10), |n| n == Some(1.0))
        .await;
    assert_eq!(nb.metrics().get("nodeeni_config_reloads_total{result=\"ok\"}"), Some(&1.0));
    assert!(nb.daemon_log().contains("keeping the old configuration"), "{}", nb.daemon_log());
    nb.wait_for_passes(2).await; // a whole pass under the kept configuration
    assert!(all_ready(&nb.state(), 3), "the old configuration still rules");
    let ids = ids_of(&nb.state(), "fast");

    // SIGTERM: stops serving, removes our socket, exits 0; EC2 untouched.
    let status = nb.daemon.as_mut().expect("daemon").terminate().expect("exits on SIGTERM");
    assert!(status.success(), "{status:?}\n{}", nb.daemon_log());
    assert!(!nb.plugin_dir().join(&reg.endpoint).exists(), "our socket is removed");
    let in_moto = cluster_enis(&nb.raw, CLUSTER).await;
    assert_eq!(in_moto.len(), 3, "{in_moto:?}");
    assert!(in_moto.iter().all(|(_, status)| status == "in-use"), "every ENI stays attached: {in_moto:?}");

    // Started on the invalid file, the daemon refuses at once and says why.
    nb.start_daemon();
    let status = nb.daemon.as_mut().expect("daemon").wait(Duration::from_secs(10));
    assert!(status.is_some_and(|s| !s.success()), "refuses an invalid config: {status:?}");
    assert!(nb.daemon_log().contains("pools[0].mode"), "names the problem:\n{}", nb.daemon_log());

    // A restart adopts what is there: same ENIs, no create.
    nb.write_config(&fast_pool(&nb, 3));
    nb.start_daemon();
    // Two restarts and the refused one above: the fourth registration is the new daemon's.
    nb.kubelet.wait_registered(KERNEL_RESOURCE, 4, Duration::from_secs(30)).await;
    nb.wait_for_metric("nodeeni_reconcile_total{result=\"ok\"}", Duration::from_secs(30), |n| {
        n.is_some_and(|n| n >= 1.0)
    })
    .await;
    let m = nb.metrics();
    assert_eq!(m.get("nodeeni_ec2_calls_total{operation=\"CreateNetworkInterface\",outcome=\"ok\"}"), None, "{m:?}");
    assert_eq!(ids_of(&nb.state(), "fast"), ids);
}

/// Scenario 2, pod churn: 200 ADD/DEL cycles through libcni. Afterwards no leaked interface, no
/// growth in the daemon's open files, no attachment record and no lock file left.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scenario_2_pod_churn_leaves_nothing_behind() {
    if !require_root("scenario_2_pod_churn_leaves_nothing_behind") {
        return;
    }
    let Some(driver) = bins::libcni_driver() else { return };
    let Some((nb, eni, mac)) = one_fast_eni("e2e-churn").await else { return };
    nb.kubelet.wait_registered(KERNEL_RESOURCE, 1, Duration::from_secs(30)).await;
    let pid = nb.daemon.as_ref().and_then(|d| d.pid()).expect("pid");
    let fds_before = open_fds(pid);
    let links_before = nb.node.link_names();

    let pod = TestNs::new("e2e-churn-pod");
    nb.churn(&driver, &nb.write_cni_conf("fast"), &pod.path(), &eni, 200);

    assert_eq!(pod.link_names(), vec!["lo".to_string()], "nothing left in the pod");
    assert_eq!(nb.node.link_names(), links_before, "the node's links are as before");
    assert!(link_with_mac(nb.node.name(), &mac).is_some());
    let fds_after = open_fds(pid);
    assert!(fds_after <= fds_before + 2, "the daemon's open files grew: {fds_before} → {fds_after}");
    let leftovers = |sub: &str| -> Vec<String> {
        std::fs::read_dir(nb.state_dir().join(sub))
            .map(|d| d.filter_map(|e| e.ok()).map(|e| e.file_name().to_string_lossy().into_owned()).collect())
            .unwrap_or_default()
    };
    assert!(leftovers("attachments").is_empty(), "attachment records left: {:?}", leftovers("attachments"));
    assert!(leftovers("locks").is_empty(), "lock files left: {:?}", leftovers("locks"));
    assert!(nb.state().enis.iter().all(|e| e.allocation.is_none()));
    assert_eq!(cluster_enis(&nb.raw, CLUSTER).await.len(), 1);
}

/// Scenario 3: the daemon is killed (SIGKILL) in the middle of warming up and started again: the
/// declared number of ENIs exactly, none leaked in EC2.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scenario_3_sigkill_during_warm_up_leaks_nothing() {
    if !require_root("scenario_3_sigkill_during_warm_up_leaks_nothing") {
        return;
    }
    let Some(mut nb) = NodeBox::start("e2e-kill").await else { return };
    // Slow EC2 down (every call 150 ms later) so the kill lands mid-warm-up.
    let proxy = nodeeni_tests::fault_proxy::FaultProxy::start(&nb.moto.endpoint, |_| {
        nodeeni_tests::fault_proxy::Fault::Delay(Duration::from_millis(150))
    });
    nb.ec2_endpoint = proxy.endpoint.clone();
    nb.write_config(&fast_pool(&nb, 4));
    nb.start_daemon();
    let first_create = async || (!cluster_enis(&nb.raw, CLUSTER).await.is_empty()).then_some(());
    eventually("a first ENI created", WARM, first_create, || nb.daemon_log()).await;
    nb.daemon.as_mut().expect("daemon").kill();
    let mid = nb.state();
    assert!(!all_ready(&mid, 4), "the kill landed mid-warm-up: {mid:?}");
    eprintln!(
        "killed with {} ENI(s) in EC2 and records {:?}",
        cluster_enis(&nb.raw, CLUSTER).await.len(),
        mid.enis.iter().map(|e| format!("{:?}", e.lifecycle)).collect::<Vec<_>>()
    );
    nb.start_daemon();
    nb.wait_for_state("4 ENIs ready after the restart", WARM, |s| all_ready(s, 4)).await;
    // Two passes later nothing more appears.
    nb.wait_for_passes(2).await;
    let in_moto = cluster_enis(&nb.raw, CLUSTER).await;
    assert_eq!(in_moto.len(), 4, "exactly the declared ENIs, none leaked: {in_moto:?}");
    assert!(in_moto.iter().all(|(_, s)| s == "in-use"), "{in_moto:?}");
    assert!(all_ready(&nb.state(), 4));
}

/// Scenario 4: with the daemon down, CNI DEL still succeeds and the ENI returns to the node.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scenario_4_del_works_with_the_daemon_down() {
    if !require_root("scenario_4_del_works_with_the_daemon_down") {
        return;
    }
    let Some(driver) = bins::libcni_driver() else { return };
    let Some((mut nb, eni, mac)) = one_fast_eni("e2e-down").await else { return };
    let pod = TestNs::new("e2e-down-pod");
    let at =
        PodNet { conf: nb.write_cni_conf("fast"), container: "pod-1".into(), pod: pod.path(), ifname: "net1".into() };
    let cap = format!("deviceID={eni}");
    let (ok, out) = nb.cni(&driver, "add", &at, &[&cap]);
    assert!(ok, "ADD: {out}");
    assert!(link_with_mac(nb.node.name(), &mac).is_none(), "the ENI is in the pod");

    nb.daemon.as_mut().expect("daemon").kill();
    let (ok, out) = nb.cni(&driver, "del", &at, &[&cap]);
    assert!(ok, "DEL with the daemon down: {out}");
    assert!(!pod.has_link("net1"));
    let ifname = link_with_mac(nb.node.name(), &mac).expect("the ENI is back on the node");
    assert_eq!(nb.node.mtu_and_up(&ifname), (9001, true));
    assert!(nb.state().enis.iter().all(|e| e.allocation.is_none()), "released in the node state");
}

/// Scenario 5: drain: the pool pauses, every ENI is detached and deleted in EC2, and an ENI held by
/// a pod is waited for until the pod lets go; `--resume` brings the pool back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scenario_5_drain_waits_for_pods_and_empties_the_node() {
    if !require_root("scenario_5_drain_waits_for_pods_and_empties_the_node") {
        return;
    }
    let Some(driver) = bins::libcni_driver() else { return };
    let Some(mut nb) = NodeBox::start("e2e-drain").await else { return };
    nb.write_config(&fast_pool(&nb, 2));
    nb.start_daemon();
    let state = nb.wait_for_state("2 ENIs ready", WARM, |s| all_ready(s, 2)).await;
    let ids = ids_of(&state, "fast");
    let pod = TestNs::new("e2e-drain-pod");
    let at =
        PodNet { conf: nb.write_cni_conf("fast"), container: "pod-1".into(), pod: pod.path(), ifname: "net1".into() };
    let cap = format!("deviceID={}", ids[0]);
    let (ok, out) = nb.cni(&driver, "add", &at, &[&cap]);
    assert!(ok, "ADD: {out}");

    // The kubelet allocated the held ENI: its device-info file exists until the device leaves.
    let reg = nb.kubelet.wait_registered(KERNEL_RESOURCE, 1, Duration::from_secs(30)).await;
    let mut client = nb.kubelet.client(&reg.endpoint).await;
    let mut stream = client.list_and_watch(api::Empty {}).await.expect("watch").into_inner();
    stream_until(&nb, &mut stream, "held ENI healthy", Duration::from_secs(5), |l| {
        l.iter().any(|d| d.id == ids[0] && d.health == api::HEALTHY)
    })
    .await;
    allocate(&mut client, &ids[..1]).await.expect("allocate");
    let devinfo = nb.devinfo_dir().join(format!("nodeeni.io-fast-{}-device.json", ids[0]));
    assert!(devinfo.exists(), "Allocate wrote {}\n--- daemon log ---\n{}", devinfo.display(), nb.daemon_log());

    let bin = bins::path("nodeeni-device-plugin");
    let config = nb.config_path().display().to_string();
    let drain_args = |extra: &[&str]| -> Vec<String> {
        let mut a = vec!["drain".to_string(), "--config".into(), config.clone()];
        a.extend(extra.iter().map(|s| s.to_string()));
        a
    };
    let env =
        [("AWS_ACCESS_KEY_ID", "testing"), ("AWS_SECRET_ACCESS_KEY", "testing"), ("AWS_EC2_METADATA_DISABLED", "true")];
    let log = nb.dir.path().join("drain.log");
    let mut drain = nodeeni_tests::process::Process::spawn(&bin, &drain_args(&["--timeout", "60s"]), &env, &log);

    // The free ENI goes; the held one waits for its pod.
    let only_the_held_one = async || {
        let left: Vec<String> = cluster_enis(&nb.raw, CLUSTER).await.into_iter().map(|(id, _)| id).collect();
        (left == ids[..1]).then_some(())
    };
    eventually("the free ENI deleted", Duration::from_secs(30), only_the_held_one, || drain.log_text()).await;
    nb.wait_for_paused_turns(2).await;
    assert!(drain.running(), "drain waits for the held ENI:\n{}", drain.log_text());
    assert_eq!(cluster_enis(&nb.raw, CLUSTER).await.len(), 1, "the daemon does not re-create while drained");

    // The pod goes away; drain finishes.
    let (ok, out) = nb.cni(&driver, "del", &at, &[&cap]);
    assert!(ok, "DEL: {out}");
    let status = drain.wait(Duration::from_secs(30));
    assert!(status.is_some_and(|s| s.success()), "drain finishes with 0: {status:?}\n{}", drain.log_text());
    assert!(drain.log_text().contains("drained: 2 ENI(s)"), "{}", drain.log_text());
    assert!(cluster_enis(&nb.raw, CLUSTER).await.is_empty(), "every pool ENI deleted in EC2");
    nb.wait_for_paused_turns(2).await;
    assert!(cluster_enis(&nb.raw, CLUSTER).await.is_empty(), "and the paused daemon made none");
    assert!(!devinfo.exists(), "the device left: its device-info file is removed");

    // Resume: the pool comes back.
    let out = std::process::Command::new(&bin).args(drain_args(&["--resume"])).output().expect("resume");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    nb.wait_for_state("2 ENIs after resume", WARM, |s| all_ready(s, 2)).await;
}

/// Scenario 6: EC2 throttles, fails and stalls during warm-up (through the fault-injecting proxy);
/// the pool still converges to exactly what is declared.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scenario_6_warm_up_converges_through_ec2_faults() {
    if !require_root("scenario_6_warm_up_converges_through_ec2_faults") {
        return;
    }
    use nodeeni_tests::fault_proxy::{Fault, FaultProxy};
    let Some(mut nb) = NodeBox::start("e2e-faults").await else { return };
    // Of every 10 requests: 2 throttled, 1 server error, 1 reset, 1 delayed 300 ms.
    let proxy = FaultProxy::start(&nb.moto.endpoint, |n| match n % 10 {
        1 | 6 => Fault::Throttle,
        3 => Fault::ServerError,
        8 => Fault::Reset,
        4 => Fault::Delay(Duration::from_millis(300)),
        _ => Fault::Forward,
    });
    nb.ec2_endpoint = proxy.endpoint.clone();
    nb.write_config(&nb.standard_pools());
    nb.start_daemon();
    nb.wait_for_state("4 ENIs ready through faults", WARM, |s| all_ready(s, 4)).await;
    nb.wait_for_passes(2).await;
    let in_moto = cluster_enis(&nb.raw, CLUSTER).await;
    assert_eq!(in_moto.len(), 4, "exactly the declared ENIs: {in_moto:?}");
    let m = nb.metrics();
    let throttled: f64 = m.iter().filter(|(k, _)| k.contains("outcome=\"throttled\"")).map(|(_, v)| v).sum();
    let transient: f64 = m.iter().filter(|(k, _)| k.contains("outcome=\"transient\"")).map(|(_, v)| v).sum();
    assert!(throttled > 0.0 && transient > 0.0, "faults were met and retried: {m:?}");
    eprintln!("converged through {throttled} throttled and {transient} transient failures");
}

/// The secondary IPv4 addresses EC2 (moto) has on `eni`.
async fn ec2_secondary_ips(nb: &NodeBox, eni: &str) -> Vec<String> {
    let out = nb.raw.describe_network_interfaces().network_interface_ids(eni).send().await.expect("describe");
    let mut ips: Vec<String> = out
        .network_interfaces()
        .iter()
        .flat_map(|n| n.private_ip_addresses())
        .filter(|a| a.primary() != Some(true))
        .filter_map(|a| a.private_ip_address().map(str::to_string))
        .collect();
    ips.sort();
    ips
}

/// Scenario 7, pod IPs the VPC routes on a host ENI: 30 pods on one host ENI through libcni (ptp as
/// the main plugin, nodeeni-ipam as its IPAM). The daemon keeps warmIpTarget free addresses,
/// assigning more as pods use them up; every pod's address is one of the ENI's secondary IPs in EC2,
/// none twice; once the pods are gone the extras go back to EC2.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scenario_7_thirty_pods_get_vpc_routed_addresses_on_one_host_eni() {
    if !require_root("scenario_7_thirty_pods_get_vpc_routed_addresses_on_one_host_eni") {
        return;
    }
    let Some(driver) = bins::libcni_driver() else { return };
    // c5.18xlarge: 50 IPv4 addresses per ENI, room for 30 pods and the warm ones.
    let Some(mut nb) = NodeBox::start_on("e2e-ipam", "c5.18xlarge").await else { return };
    const WARM_IPS: usize = 5;
    nb.write_config(&format!(
        "  - {{name: masters, mode: host, subnetIds: [{}], securityGroupIds: [{}], firstDeviceIndex: 1, \
         warmIpTarget: {WARM_IPS}, maxIpsPerEni: 40, ipCooldownSeconds: 0}}\n",
        nb.world.subnet_a, nb.world.sg
    ));
    nb.start_daemon();
    let state = nb
        .wait_for_state("the host ENI ready with its warm addresses", WARM, |s| {
            all_ready(s, 1) && s.enis[0].secondary_ips.len() == WARM_IPS
        })
        .await;
    let eni = ids_of(&state, "masters").remove(0);
    assert_eq!(ec2_secondary_ips(&nb, &eni).await.len(), WARM_IPS, "EC2 has the warm addresses");

    let conf = nb.dir.path().join("50-hostnet.conf");
    let ptp = serde_json::json!({
        "cniVersion": "1.0.0", "name": "hostnet", "type": "ptp",
        "ipam": {"type": "nodeeni-ipam", "pool": "masters"}
    });
    std::fs::write(&conf, ptp.to_string()).expect("conf");
    let pods: Vec<TestNs> = (0..30).map(|i| TestNs::new(&format!("e2e-ipam-{i}"))).collect();
    let at = |i: usize| PodNet {
        conf: conf.clone(),
        container: format!("ipam-pod-{i}"),
        pod: pods[i].path(),
        ifname: "net1".into(),
    };
    let mut handed: Vec<String> = Vec::new();
    let mut exhausted = 0;
    for (i, pod) in pods.iter().enumerate() {
        // Used up, ADD fails (pool exhausted) until the daemon has assigned more, as a runtime retries.
        let started = Instant::now();
        let out = loop {
            let (ok, out) = nb.cni(&driver, "add", &at(i), &[]);
            if ok {
                break out;
            }
            assert!(out.contains("no free IPv4 address"), "pod {i}: {out}");
            assert!(started.elapsed() < Duration::from_secs(60), "pod {i}: no address came: {out}");
            exhausted += 1;
            tokio::time::sleep(Duration::from_millis(200)).await;
        };
        let result: serde_json::Value = serde_json::from_str(out.trim()).expect("result");
        let address = result["ips"][0]["address"].as_str().expect("address").to_string();
        assert_eq!(pod.addresses("net1"), std::slice::from_ref(&address), "pod {i}");
        handed.push(address.trim_end_matches("/24").to_string());
    }
    let mut distinct = handed.clone();
    distinct.sort();
    distinct.dedup();
    assert_eq!(distinct.len(), 30, "no address twice: {handed:?}");
    let on_ec2 = ec2_secondary_ips(&nb, &eni).await;
    assert!(
        handed.iter().all(|a| on_ec2.contains(a)),
        "every pod address is the ENI's in EC2: {handed:?} / {on_ec2:?}"
    );
    assert!(on_ec2.len() > WARM_IPS, "the daemon assigned more as pods took them: {}", on_ec2.len());
    eprintln!("30 pods: {exhausted} ADDs waited for addresses; EC2 has {} on the ENI", on_ec2.len());
    let recorded = nb.state();
    assert_eq!(recorded.enis[0].ip_holds.len(), 30);

    for i in 0..30 {
        let (ok, out) = nb.cni(&driver, "del", &at(i), &[]);
        assert!(ok, "DEL {i}: {out}");
    }
    assert!(nb.state().enis[0].ip_holds.is_empty(), "every address released on DEL");
    // No pod left: the extras go back (cool-down 0), the warm ones stay.
    nb.wait_for_state("extras returned", WARM, |s| s.enis[0].secondary_ips.len() == WARM_IPS).await;
    let left = ec2_secondary_ips(&nb, &eni).await;
    assert_eq!(left.len(), WARM_IPS, "EC2 has the warm ones only: {left:?}");
    let mut recorded: Vec<String> = nb.state().enis[0].secondary_ips.iter().map(ToString::to_string).collect();
    recorded.sort();
    assert_eq!(recorded, left, "the node state records what EC2 has");
}
