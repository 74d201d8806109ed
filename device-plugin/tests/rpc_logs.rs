//! Each kubelet RPC runs in a span naming the method and the resource, so a log line says which call
//! it is about. Its own test binary: the subscriber that captures the lines is global.

use std::io::Write;
use std::sync::{Arc, Mutex};

use nodeeni_conf::Mode;
use nodeeni_device_plugin::allocate::AllocateSettings;
use nodeeni_device_plugin::devices::Device;
use nodeeni_device_plugin::service::PluginService;
use nodeeni_proto::deviceplugin::v1beta1 as api;
use nodeeni_proto::uds;
use tokio::sync::watch;

#[derive(Clone, Default)]
struct Lines(Arc<Mutex<Vec<u8>>>);

impl Write for Lines {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().expect("lock").extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

#[tokio::test]
async fn an_allocate_logs_inside_its_rpc_span() {
    let lines = Lines::default();
    let writer = lines.clone();
    tracing_subscriber::fmt().with_ansi(false).with_writer(move || writer.clone()).init();

    let dir = tempfile::tempdir().expect("tempdir");
    let settings = AllocateSettings {
        resource: "nodeeni.io/fast".parse().expect("resource"),
        mode: Mode::Kernel,
        dev_root: dir.path().join("dev"),
        devinfo_dir: dir.path().join("devinfo"),
    };
    let device = Device {
        eni_id: "eni-00000001".parse().expect("id"),
        pci: Some("0000:00:06.0".parse().expect("pci")),
        healthy: true,
        numa_node: None,
        network_card: 0,
        iommu_group: None,
    };
    let (_tx, rx) = watch::channel(vec![device]);
    let sock = dir.path().join("nodeeni.sock");
    let incoming = uds::bind(&sock).expect("bind");
    tokio::spawn(
        tonic::transport::Server::builder()
            .add_service(api::device_plugin_server::DevicePluginServer::new(PluginService::new(settings, rx)))
            .serve_with_incoming(incoming),
    );
    let mut client = api::device_plugin_client::DevicePluginClient::new(uds::connect(&sock).await.expect("dial"));
    client
        .allocate(api::AllocateRequest {
            container_requests: vec![api::ContainerAllocateRequest { devices_ids: vec!["eni-00000001".into()] }],
        })
        .await
        .expect("allocate");
    let refused = client
        .allocate(api::AllocateRequest {
            container_requests: vec![api::ContainerAllocateRequest { devices_ids: vec!["eni-0000000f".into()] }],
        })
        .await;
    assert!(refused.is_err());

    let text = String::from_utf8(lines.0.lock().expect("lock").clone()).expect("utf8");
    let span = "rpc{method=\"Allocate\" resource=nodeeni.io/fast}";
    let allocated =
        text.lines().find(|l| l.contains("allocated")).unwrap_or_else(|| panic!("no allocated line:\n{text}"));
    assert!(allocated.contains(span), "{allocated}");
    let refusal = text.lines().find(|l| l.contains("allocation refused")).unwrap_or_else(|| panic!("{text}"));
    assert!(refusal.contains(span), "{refusal}");
}
