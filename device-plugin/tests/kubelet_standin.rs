//! A kubelet stand-in (the Registration service on kubelet.sock in a temp folder) drives registration,
//! then a kubelet restart: every plugin socket deleted, a new kubelet.sock. The plugin must serve again
//! and register again (bench-daemon measures how soon, against the 2 s target).

use std::os::unix::fs::PermissionsExt;
use std::time::Duration;

use nodeeni_conf::Mode;
use nodeeni_device_plugin::allocate::AllocateSettings;
use nodeeni_device_plugin::devices::Device;
use nodeeni_device_plugin::registration::{Endpoint, serve_and_register};
use nodeeni_device_plugin::service::PluginService;
use nodeeni_proto::deviceplugin::v1beta1 as api;
use nodeeni_proto::uds;
use tokio::sync::{mpsc, oneshot};
use tokio_stream::StreamExt;
use tokio_util::sync::CancellationToken;

struct Kubelet {
    registrations: mpsc::UnboundedSender<api::RegisterRequest>,
}

#[tonic::async_trait]
impl api::registration_server::Registration for Kubelet {
    async fn register(
        &self,
        req: tonic::Request<api::RegisterRequest>,
    ) -> Result<tonic::Response<api::Empty>, tonic::Status> {
        let _ = self.registrations.send(req.into_inner());
        Ok(tonic::Response::new(api::Empty {}))
    }
}

/// Starts a kubelet stand-in; dropping (sending on) the returned channel stops it.
fn start_kubelet(dir: &std::path::Path, tx: mpsc::UnboundedSender<api::RegisterRequest>) -> oneshot::Sender<()> {
    let incoming = uds::bind(&dir.join(api::KUBELET_SOCKET)).expect("bind kubelet.sock");
    let (stop, stopped) = oneshot::channel::<()>();
    tokio::spawn(
        tonic::transport::Server::builder()
            .add_service(api::registration_server::RegistrationServer::new(Kubelet { registrations: tx }))
            .serve_with_incoming_shutdown(incoming, async {
                let _ = stopped.await;
            }),
    );
    stop
}

async fn list_once(sock: &std::path::Path) -> Vec<api::Device> {
    let mut client = api::device_plugin_client::DevicePluginClient::new(uds::connect(sock).await.expect("dial plugin"));
    let mut stream = client.list_and_watch(api::Empty {}).await.expect("watch").into_inner();
    stream.next().await.expect("first").expect("ok").devices
}

#[tokio::test]
async fn registers_and_registers_again_after_a_kubelet_restart() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (registrations_tx, mut registrations) = mpsc::unbounded_channel();
    let kubelet = start_kubelet(dir.path(), registrations_tx.clone());

    let device = Device {
        eni_id: "eni-00000001".parse().expect("id"),
        pci: Some("0000:00:06.0".parse().expect("pci")),
        healthy: true,
        numa_node: Some(0),
        network_card: 0,
        iommu_group: None,
    };
    let (_devices, rx) = tokio::sync::watch::channel(vec![device]);
    let settings = AllocateSettings {
        resource: "nodeeni.io/fast".parse().expect("resource"),
        mode: Mode::Kernel,
        dev_root: dir.path().join("dev"),
        devinfo_dir: dir.path().join("devinfo"),
    };
    let ep = Endpoint::for_resource(dir.path(), settings.resource.clone());
    let sock = dir.path().join(&ep.socket);
    let stop = CancellationToken::new();
    let task = {
        let (stop, service, ep) = (stop.clone(), PluginService::new(settings, rx), ep.clone());
        tokio::spawn(async move { serve_and_register(service, ep, &stop).await })
    };

    let first = tokio::time::timeout(Duration::from_secs(30), registrations.recv())
        .await
        .expect("registered")
        .expect("request");
    assert_eq!(first.version, "v1beta1");
    assert_eq!(first.endpoint, "nodeeni-nodeeni.io_fast.sock");
    let mode = std::fs::metadata(dir.path().join(&first.endpoint)).expect("socket").permissions().mode();
    assert_eq!(mode & 0o777, 0o600, "only root may dial it");
    let other = Endpoint::for_resource(dir.path(), "other.io/fast".parse().expect("resource"));
    assert_ne!(other.socket, first.endpoint, "one name, two domains: two sockets");
    assert_eq!(first.resource_name, "nodeeni.io/fast");
    assert_eq!(first.options, Some(PluginService::options()), "options equal GetDevicePluginOptions");
    assert_eq!(list_once(&sock).await[0].id, "eni-00000001", "served before registering");

    // The kubelet restarts: it deletes every socket in the folder, then listens anew.
    let _ = kubelet.send(());
    std::fs::remove_file(&sock).expect("kubelet removes our socket");
    std::fs::remove_file(dir.path().join(api::KUBELET_SOCKET)).expect("and its own");
    tokio::time::sleep(Duration::from_millis(300)).await;
    let _kubelet = start_kubelet(dir.path(), registrations_tx.clone());
    let again = tokio::time::timeout(Duration::from_secs(30), registrations.recv())
        .await
        .expect("re-registered")
        .expect("request");
    assert_eq!(again.endpoint, "nodeeni-nodeeni.io_fast.sock");
    assert!(sock.exists(), "socket recreated");
    assert_eq!(list_once(&sock).await.len(), 1, "and serving");

    // The kubelet comes back again, this time leaving our socket in place: register again, same server.
    use std::os::unix::fs::MetadataExt;
    let inode = std::fs::metadata(&sock).expect("socket").ino();
    let _ = _kubelet.send(());
    std::fs::remove_file(dir.path().join(api::KUBELET_SOCKET)).expect("kubelet.sock");
    let _kubelet = start_kubelet(dir.path(), registrations_tx);
    let third = tokio::time::timeout(Duration::from_secs(30), registrations.recv())
        .await
        .expect("registered again")
        .expect("request");
    assert_eq!(third.resource_name, "nodeeni.io/fast");
    assert_eq!(std::fs::metadata(&sock).expect("socket").ino(), inode, "the running server was kept");
    assert_eq!(list_once(&sock).await.len(), 1);

    stop.cancel();
    tokio::time::timeout(Duration::from_secs(5), task).await.expect("stops").expect("joined").expect("clean stop");
    assert!(!sock.exists(), "socket removed on stop");
}

/// One unary gRPC call as the kubelet (1.26+) makes it: HTTP/2 straight over the socket with
/// `:authority: localhost` (kubernetes PR #112597; older kubelets sent the socket path there, which an
/// HTTP/2 server refuses as no authority). Returns the HTTP status, the `grpc-status` trailer and the
/// response message's bytes.
async fn call_as_the_kubelet(sock: &std::path::Path, method: &str, message: &[u8]) -> (u16, String, Vec<u8>) {
    let io = tokio::net::UnixStream::connect(sock).await.expect("dial plugin");
    let (client, connection) = h2::client::handshake(io).await.expect("HTTP/2 handshake");
    tokio::spawn(connection);
    let mut client = client.ready().await.expect("ready");
    let request = http::Request::post(format!("http://localhost/v1beta1.DevicePlugin/{method}"))
        .header("content-type", "application/grpc")
        .header("te", "trailers")
        .body(())
        .expect("request");
    assert_eq!(request.uri().authority().map(|a| a.as_str()), Some("localhost"));
    let (response, mut body) = client.send_request(request, false).expect("send");
    let mut frame = vec![0u8];
    frame.extend(u32::try_from(message.len()).expect("small").to_be_bytes());
    frame.extend(message);
    body.send_data(bytes::Bytes::from(frame), true).expect("send body");
    let response = response.await.expect("response");
    let status = response.status().as_u16();
    let mut body = response.into_body();
    let mut data = Vec::new();
    while let Some(chunk) = body.data().await {
        let chunk = chunk.expect("data");
        let _ = body.flow_control().release_capacity(chunk.len());
        data.extend_from_slice(&chunk);
    }
    let trailers = body.trailers().await.expect("trailers").unwrap_or_default();
    let grpc_status = trailers.get("grpc-status").and_then(|v| v.to_str().ok()).unwrap_or("none").to_string();
    (status, grpc_status, data.get(5..).map(<[u8]>::to_vec).unwrap_or_default())
}

#[tokio::test]
async fn answers_the_kubelet_dialling_with_authority_localhost() {
    use prost::Message;
    let dir = tempfile::tempdir().expect("tempdir");
    let (registrations_tx, mut registrations) = mpsc::unbounded_channel();
    let _kubelet = start_kubelet(dir.path(), registrations_tx);
    let (_devices, rx) = tokio::sync::watch::channel(Vec::new());
    let settings = AllocateSettings {
        resource: "nodeeni.io/dpdk".parse().expect("resource"),
        mode: Mode::Dpdk,
        dev_root: dir.path().join("dev"),
        devinfo_dir: dir.path().join("devinfo"),
    };
    let ep = Endpoint::for_resource(dir.path(), settings.resource.clone());
    let sock = dir.path().join(&ep.socket);
    let stop = CancellationToken::new();
    let task = {
        let (stop, service) = (stop.clone(), PluginService::new(settings, rx));
        tokio::spawn(async move { serve_and_register(service, ep, &stop).await })
    };
    tokio::time::timeout(Duration::from_secs(30), registrations.recv()).await.expect("registered").expect("request");

    let (status, grpc_status, reply) = call_as_the_kubelet(&sock, "GetDevicePluginOptions", &[]).await;
    assert_eq!((status, grpc_status.as_str()), (200, "0"), "answered");
    let options = api::DevicePluginOptions::decode(&reply[..]).expect("options");
    assert_eq!(options, PluginService::options());

    stop.cancel();
    tokio::time::timeout(Duration::from_secs(5), task).await.expect("stops").expect("joined").expect("clean stop");
}
