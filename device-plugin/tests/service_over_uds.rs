//! The device-plugin service for one resource, served on a Unix socket and called as the kubelet does.

use std::os::unix::fs::PermissionsExt;
use std::time::Duration;

use nodeeni_conf::Mode;
use nodeeni_device_plugin::allocate::{AllocateSettings, DevInfoFiles, devinfo_path};
use nodeeni_device_plugin::devices::Device;
use nodeeni_device_plugin::service::{PluginService, preferred};
use nodeeni_proto::deviceplugin::v1beta1 as api;
use nodeeni_proto::uds;
use tokio::sync::watch;
use tokio_stream::StreamExt;

fn device(id: &str, pci: &str, numa: u32, card: u32, group: u32) -> Device {
    Device {
        eni_id: id.parse().expect("id"),
        pci: Some(pci.parse().expect("pci")),
        healthy: true,
        numa_node: Some(numa),
        network_card: card,
        iommu_group: Some(group),
    }
}

struct Served {
    client: api::device_plugin_client::DevicePluginClient<tonic::transport::Channel>,
    devices: watch::Sender<Vec<Device>>,
    settings: AllocateSettings,
    devinfo: DevInfoFiles,
    _dir: tempfile::TempDir,
}

async fn serve(mode: Mode, resource: &str, devices: Vec<Device>) -> Served {
    let dir = tempfile::tempdir().expect("tempdir");
    // /dev stand-in: vfio in no-IOMMU mode for group 7, a real group node for group 8.
    std::fs::create_dir_all(dir.path().join("dev/vfio")).expect("mkdir");
    for node in ["vfio", "noiommu-7", "8"] {
        std::fs::write(dir.path().join("dev/vfio").join(node), b"").expect("node");
    }
    let settings = AllocateSettings {
        resource: resource.parse().expect("resource"),
        mode,
        dev_root: dir.path().join("dev"),
        devinfo_dir: dir.path().join("devinfo"),
    };
    let (tx, rx) = watch::channel(devices);
    let sock = dir.path().join("nodeeni.sock");
    let incoming = uds::bind(&sock).expect("bind");
    let service = PluginService::new(settings.clone(), rx);
    let devinfo = service.devinfo_files();
    tokio::spawn(
        tonic::transport::Server::builder()
            .add_service(api::device_plugin_server::DevicePluginServer::new(service))
            .serve_with_incoming(incoming),
    );
    let client = api::device_plugin_client::DevicePluginClient::new(uds::connect(&sock).await.expect("dial"));
    Served { client, devices: tx, settings, devinfo, _dir: dir }
}

#[tokio::test]
async fn list_and_watch_pushes_every_health_change() {
    let mut s = serve(Mode::Kernel, "nodeeni.io/fast", vec![device("eni-00000001", "0000:00:06.0", 0, 0, 7)]).await;
    let opts = s.client.get_device_plugin_options(api::Empty {}).await.expect("options").into_inner();
    assert!(opts.get_preferred_allocation_available && !opts.pre_start_required);
    let mut stream = s.client.list_and_watch(api::Empty {}).await.expect("watch").into_inner();
    let first = stream.next().await.expect("first").expect("ok");
    assert_eq!(first.devices[0].health, api::HEALTHY);
    assert_eq!(first.devices[0].topology.as_ref().map(|t| t.nodes[0].id), Some(0));
    let mut down = device("eni-00000001", "0000:00:06.0", 0, 0, 7);
    down.healthy = false;
    s.devices.send(vec![down]).expect("publish");
    let next =
        tokio::time::timeout(Duration::from_secs(10), stream.next()).await.expect("pushed").expect("item").expect("ok");
    assert_eq!(next.devices[0].health, api::UNHEALTHY);
}

#[tokio::test]
async fn dpdk_allocate_gives_env_vfio_nodes_and_device_info() {
    let devices =
        vec![device("eni-00000001", "0000:00:06.0", 0, 0, 7), device("eni-00000002", "0000:00:07.0", 0, 0, 8)];
    let mut s = serve(Mode::Dpdk, "nodeeni.io/dpdk", devices).await;
    let resp = s
        .client
        .allocate(api::AllocateRequest {
            container_requests: vec![api::ContainerAllocateRequest {
                devices_ids: vec!["eni-00000001".into(), "eni-00000002".into()],
            }],
        })
        .await
        .expect("allocate")
        .into_inner();
    let c = &resp.container_responses[0];
    assert_eq!(c.envs.get("PCIDEVICE_NODEENI_IO_DPDK").map(String::as_str), Some("0000:00:06.0,0000:00:07.0"));
    assert_eq!(c.envs.get("NODEENI_ENI_IDS_NODEENI_IO_DPDK").map(String::as_str), Some("eni-00000001,eni-00000002"));
    let info: serde_json::Value = serde_json::from_str(&c.envs["PCIDEVICE_NODEENI_IO_DPDK_INFO"]).expect("json");
    assert_eq!(info["0000:00:06.0"]["generic"]["deviceID"], "eni-00000001");
    assert_eq!(info["0000:00:06.0"]["vfio"]["dev-mount"], "/dev/vfio/7");
    assert_eq!(info["0000:00:06.0"]["vfio"]["mount"], "/dev/vfio/vfio");
    let specs: Vec<(String, String, String)> =
        c.devices.iter().map(|d| (d.container_path.clone(), d.host_path.clone(), d.permissions.clone())).collect();
    let dev = s.settings.dev_root.display().to_string();
    assert_eq!(
        specs,
        [
            ("/dev/vfio/vfio".into(), format!("{dev}/vfio/vfio"), "rw".into()),
            ("/dev/vfio/7".into(), format!("{dev}/vfio/noiommu-7"), "rw".into()),
            ("/dev/vfio/8".into(), format!("{dev}/vfio/8"), "rw".into()),
        ],
        "no-IOMMU group node mounted as /dev/vfio/<group>; an IOMMU group node as itself"
    );
    let info_file = devinfo_path(&s.settings, &"eni-00000001".parse().expect("id"));
    assert_eq!(info_file.file_name().and_then(|n| n.to_str()), Some("nodeeni.io-dpdk-eni-00000001-device.json"));
    let body: serde_json::Value = serde_json::from_slice(&std::fs::read(&info_file).expect("devinfo")).expect("json");
    assert_eq!((body["type"].as_str(), body["version"].as_str()), (Some("pci"), Some("1.1.0")));
    assert_eq!(body["pci"]["pci-address"], "0000:00:06.0");
    assert_eq!(std::fs::metadata(&info_file).expect("meta").permissions().mode() & 0o777, 0o444, "read-only");
    // The device leaves the resource: its device-info file goes with it.
    s.devices.send(vec![device("eni-00000002", "0000:00:07.0", 0, 0, 8)]).expect("publish");
    let removed = s.devinfo.tidy().expect("tidy");
    assert_eq!(removed, std::slice::from_ref(&info_file));
    assert!(!info_file.exists());
    assert!(devinfo_path(&s.settings, &"eni-00000002".parse().expect("id")).exists());
    drop(s.devices);
}

#[tokio::test]
async fn kernel_allocate_has_no_device_nodes_and_bad_requests_are_refused() {
    let mut s = serve(Mode::Kernel, "nodeeni.io/fast", vec![device("eni-00000001", "0000:00:06.0", 0, 0, 7)]).await;
    let one = |id: &str| api::AllocateRequest {
        container_requests: vec![api::ContainerAllocateRequest { devices_ids: vec![id.into()] }],
    };
    let resp = s.client.allocate(one("eni-00000001")).await.expect("allocate").into_inner();
    assert!(resp.container_responses[0].devices.is_empty());
    assert_eq!(
        resp.container_responses[0].envs.get("PCIDEVICE_NODEENI_IO_FAST").map(String::as_str),
        Some("0000:00:06.0")
    );
    let err = s.client.allocate(one("eni-0000000f")).await.expect_err("unknown");
    assert_eq!(err.code(), tonic::Code::NotFound);
    let mut sick = device("eni-00000001", "0000:00:06.0", 0, 0, 7);
    sick.healthy = false;
    s.devices.send(vec![sick]).expect("publish");
    let err = s.client.allocate(one("eni-00000001")).await.expect_err("unhealthy");
    assert_eq!(err.code(), tonic::Code::FailedPrecondition);
}

#[tokio::test]
async fn a_dpdk_device_without_a_vfio_node_is_refused() {
    let mut s = serve(Mode::Dpdk, "nodeeni.io/dpdk", vec![device("eni-00000003", "0000:00:08.0", 0, 0, 9)]).await;
    let err = s
        .client
        .allocate(api::AllocateRequest {
            container_requests: vec![api::ContainerAllocateRequest { devices_ids: vec!["eni-00000003".into()] }],
        })
        .await
        .expect_err("no group 9 node");
    assert_eq!(err.code(), tonic::Code::FailedPrecondition);
    assert!(err.message().contains("IOMMU group 9"), "{}", err.message());
}

#[test]
fn preferred_allocation_keeps_must_includes_then_fewest_numa_nodes_then_cards() {
    let devices = vec![
        device("eni-00000001", "0000:00:01.0", 0, 0, 1),
        device("eni-00000002", "0000:00:02.0", 1, 0, 2),
        device("eni-00000003", "0000:00:03.0", 1, 1, 3),
        device("eni-00000004", "0000:00:04.0", 1, 0, 4),
        device("eni-00000005", "0000:00:05.0", 0, 1, 5),
    ];
    let all: Vec<String> = devices.iter().map(|d| d.eni_id.to_string()).collect();
    // No constraint: the NUMA node with the most free devices (1), card 0 before card 1.
    assert_eq!(preferred(&devices, &all, &[], 2), ["eni-00000002", "eni-00000004"]);
    // A must-include on NUMA 0 pulls the rest to NUMA 0.
    assert_eq!(preferred(&devices, &all, &["eni-00000005".into()], 2), ["eni-00000005", "eni-00000001"]);
    // Must-includes are kept even past the size.
    assert_eq!(
        preferred(&devices, &all, &["eni-00000003".into(), "eni-00000001".into()], 1),
        ["eni-00000003", "eni-00000001"]
    );
    // Unhealthy devices are never preferred: with two of NUMA 1's three sick, NUMA 0 has more to give.
    let mut sick = devices.clone();
    sick[1].healthy = false;
    sick[3].healthy = false;
    assert_eq!(preferred(&sick, &all, &[], 2), ["eni-00000001", "eni-00000005"]);
}
