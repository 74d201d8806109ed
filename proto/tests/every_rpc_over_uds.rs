//! Serves both services of the kubelet device-plugin API on Unix sockets and calls every RPC, checking
//! that every field survives the wire.

use std::collections::HashMap;
use std::os::unix::fs::FileTypeExt;
use std::pin::Pin;
use std::sync::{Arc, Mutex};

use api::device_plugin_client::DevicePluginClient;
use api::device_plugin_server::{DevicePlugin, DevicePluginServer};
use api::registration_client::RegistrationClient;
use api::registration_server::{Registration, RegistrationServer};
use nodeeni_proto::deviceplugin::v1beta1 as api;
use nodeeni_proto::uds;
use tokio_stream::{Stream, StreamExt};
use tonic::{Request, Response, Status};

#[derive(Default)]
struct Kubelet {
    registered: Arc<Mutex<Vec<api::RegisterRequest>>>,
}

#[tonic::async_trait]
impl Registration for Kubelet {
    async fn register(&self, req: Request<api::RegisterRequest>) -> Result<Response<api::Empty>, Status> {
        let req = req.into_inner();
        if req.version != api::VERSION {
            return Err(Status::invalid_argument(format!("unsupported version {}", req.version)));
        }
        self.registered.lock().expect("lock").push(req);
        Ok(Response::new(api::Empty {}))
    }
}

struct Plugin;

fn device(id: &str, health: &str, numa: i64) -> api::Device {
    api::Device {
        id: id.into(),
        health: health.into(),
        topology: Some(api::TopologyInfo { nodes: vec![api::NumaNode { id: numa }] }),
    }
}

#[tonic::async_trait]
impl DevicePlugin for Plugin {
    async fn get_device_plugin_options(
        &self,
        _: Request<api::Empty>,
    ) -> Result<Response<api::DevicePluginOptions>, Status> {
        Ok(Response::new(api::DevicePluginOptions {
            pre_start_required: true,
            get_preferred_allocation_available: true,
        }))
    }

    type ListAndWatchStream = Pin<Box<dyn Stream<Item = Result<api::ListAndWatchResponse, Status>> + Send>>;

    async fn list_and_watch(&self, _: Request<api::Empty>) -> Result<Response<Self::ListAndWatchStream>, Status> {
        let updates = vec![
            Ok(api::ListAndWatchResponse { devices: vec![device("eni-1", api::HEALTHY, 0)] }),
            Ok(api::ListAndWatchResponse {
                devices: vec![device("eni-1", api::UNHEALTHY, 0), device("eni-2", api::HEALTHY, 1)],
            }),
        ];
        Ok(Response::new(Box::pin(tokio_stream::iter(updates))))
    }

    async fn get_preferred_allocation(
        &self,
        req: Request<api::PreferredAllocationRequest>,
    ) -> Result<Response<api::PreferredAllocationResponse>, Status> {
        let container_responses = req
            .into_inner()
            .container_requests
            .into_iter()
            .map(|c| {
                let mut ids = c.must_include_device_i_ds.clone();
                for id in c.available_device_i_ds {
                    if ids.len() >= c.allocation_size as usize {
                        break;
                    }
                    if !ids.contains(&id) {
                        ids.push(id);
                    }
                }
                api::ContainerPreferredAllocationResponse { device_i_ds: ids }
            })
            .collect();
        Ok(Response::new(api::PreferredAllocationResponse { container_responses }))
    }

    async fn allocate(&self, req: Request<api::AllocateRequest>) -> Result<Response<api::AllocateResponse>, Status> {
        let container_responses = req
            .into_inner()
            .container_requests
            .into_iter()
            .map(|c| api::ContainerAllocateResponse {
                envs: HashMap::from([("NODEENI_ENIS".to_string(), c.devices_ids.join(","))]),
                mounts: vec![api::Mount {
                    container_path: "/etc/x".into(),
                    host_path: "/var/x".into(),
                    read_only: true,
                }],
                devices: vec![api::DeviceSpec {
                    container_path: "/dev/vfio/7".into(),
                    host_path: "/dev/vfio/noiommu-7".into(),
                    permissions: "rw".into(),
                }],
                annotations: HashMap::from([("nodeeni.io/enis".to_string(), c.devices_ids.join(","))]),
                cdi_devices: vec![api::CdiDevice { name: "nodeeni.io/eni=eni-1".into() }],
            })
            .collect();
        Ok(Response::new(api::AllocateResponse { container_responses }))
    }

    async fn pre_start_container(
        &self,
        req: Request<api::PreStartContainerRequest>,
    ) -> Result<Response<api::PreStartContainerResponse>, Status> {
        if req.into_inner().devices_ids.is_empty() {
            return Err(Status::invalid_argument("no devices"));
        }
        Ok(Response::new(api::PreStartContainerResponse {}))
    }
}

#[tokio::test]
async fn every_rpc_round_trips_over_unix_sockets() {
    let dir = tempfile::tempdir().expect("tempdir");
    let kubelet_sock = dir.path().join(api::KUBELET_SOCKET);
    let plugin_sock = dir.path().join("nodeeni-dpdk.sock");

    let kubelet = Kubelet::default();
    let registered = kubelet.registered.clone();
    let kubelet_incoming = uds::bind(&kubelet_sock).expect("bind kubelet");
    tokio::spawn(
        tonic::transport::Server::builder()
            .add_service(RegistrationServer::new(kubelet))
            .serve_with_incoming(kubelet_incoming),
    );
    let plugin_incoming = uds::bind(&plugin_sock).expect("bind plugin");
    tokio::spawn(
        tonic::transport::Server::builder()
            .add_service(DevicePluginServer::new(Plugin))
            .serve_with_incoming(plugin_incoming),
    );

    // Register, as a plugin does with the kubelet.
    let mut reg = RegistrationClient::new(uds::connect(&kubelet_sock).await.expect("dial kubelet"));
    let options = api::DevicePluginOptions { pre_start_required: false, get_preferred_allocation_available: true };
    reg.register(api::RegisterRequest {
        version: api::VERSION.into(),
        endpoint: "nodeeni-dpdk.sock".into(),
        resource_name: "nodeeni.io/dpdk".into(),
        options: Some(options),
    })
    .await
    .expect("register");
    let bad = reg.register(api::RegisterRequest { version: "v1alpha".into(), ..Default::default() }).await;
    assert_eq!(bad.expect_err("old version").code(), tonic::Code::InvalidArgument);
    {
        let got = registered.lock().expect("lock");
        assert_eq!(got.len(), 1);
        assert_eq!(got[0].resource_name, "nodeeni.io/dpdk");
        assert_eq!(got[0].endpoint, "nodeeni-dpdk.sock");
        assert_eq!(got[0].options, Some(options));
    }

    // And every DevicePlugin RPC, as the kubelet calls them.
    let mut dp = DevicePluginClient::new(uds::connect(&plugin_sock).await.expect("dial plugin"));
    let opts = dp.get_device_plugin_options(api::Empty {}).await.expect("options").into_inner();
    assert!(opts.pre_start_required && opts.get_preferred_allocation_available);

    let mut stream = dp.list_and_watch(api::Empty {}).await.expect("watch").into_inner();
    let first = stream.next().await.expect("first update").expect("ok");
    assert_eq!(first.devices, vec![device("eni-1", api::HEALTHY, 0)]);
    let second = stream.next().await.expect("second update").expect("ok");
    assert_eq!(second.devices[0].health, api::UNHEALTHY);
    assert_eq!(second.devices[1].topology.as_ref().map(|t| t.nodes[0].id), Some(1));
    assert!(stream.next().await.is_none());

    let pref = dp
        .get_preferred_allocation(api::PreferredAllocationRequest {
            container_requests: vec![api::ContainerPreferredAllocationRequest {
                available_device_i_ds: vec!["eni-1".into(), "eni-2".into(), "eni-3".into()],
                must_include_device_i_ds: vec!["eni-3".into()],
                allocation_size: 2,
            }],
        })
        .await
        .expect("preferred")
        .into_inner();
    assert_eq!(pref.container_responses[0].device_i_ds, ["eni-3", "eni-1"]);

    let alloc = dp
        .allocate(api::AllocateRequest {
            container_requests: vec![api::ContainerAllocateRequest {
                devices_ids: vec!["eni-1".into(), "eni-2".into()],
            }],
        })
        .await
        .expect("allocate")
        .into_inner();
    let c = &alloc.container_responses[0];
    assert_eq!(c.envs.get("NODEENI_ENIS").map(String::as_str), Some("eni-1,eni-2"));
    assert_eq!(c.annotations.get("nodeeni.io/enis").map(String::as_str), Some("eni-1,eni-2"));
    assert!(c.mounts[0].read_only);
    assert_eq!((c.devices[0].host_path.as_str(), c.devices[0].permissions.as_str()), ("/dev/vfio/noiommu-7", "rw"));
    assert_eq!(c.cdi_devices[0].name, "nodeeni.io/eni=eni-1");

    dp.pre_start_container(api::PreStartContainerRequest { devices_ids: vec!["eni-1".into()] })
        .await
        .expect("prestart");
    let err = dp.pre_start_container(api::PreStartContainerRequest { devices_ids: vec![] }).await.expect_err("empty");
    assert_eq!(err.code(), tonic::Code::InvalidArgument);
}

#[tokio::test]
async fn bind_replaces_a_stale_socket_file() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("stale.sock");
    std::fs::write(&path, b"left over").expect("write");
    let _listener = uds::bind(&path).expect("rebinding over a stale file works");
    assert!(std::fs::metadata(&path).expect("exists").file_type().is_socket());
}
