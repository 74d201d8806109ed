//! A kubelet stand-in: the Registration service on `kubelet.sock` in a folder, recording every
//! registration, and a client for the plugin sockets it is told about — what the kubelet's device
//! manager does, without a kubelet.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use nodeeni_proto::deviceplugin::v1beta1 as api;
use nodeeni_proto::uds;
use tokio::sync::oneshot;

#[derive(Debug, Clone, Default)]
struct Registry {
    seen: Arc<Mutex<Vec<api::RegisterRequest>>>,
    /// Answer Register with UNAVAILABLE (a kubelet that is up but not taking plugins yet).
    refusing: Arc<std::sync::atomic::AtomicBool>,
}

#[tonic::async_trait]
impl api::registration_server::Registration for Registry {
    async fn register(
        &self,
        req: tonic::Request<api::RegisterRequest>,
    ) -> Result<tonic::Response<api::Empty>, tonic::Status> {
        let req = req.into_inner();
        if self.refusing.load(std::sync::atomic::Ordering::SeqCst) {
            return Err(tonic::Status::unavailable("the stand-in refuses registrations"));
        }
        if req.version != api::VERSION {
            return Err(tonic::Status::invalid_argument(format!("unsupported version {}", req.version)));
        }
        self.seen.lock().expect("lock").push(req);
        Ok(tonic::Response::new(api::Empty {}))
    }
}

#[derive(Debug)]
pub struct Kubelet {
    pub dir: PathBuf,
    registry: Registry,
    stop: Option<oneshot::Sender<()>>,
}

pub type PluginClient = api::device_plugin_client::DevicePluginClient<tonic::transport::Channel>;

impl Kubelet {
    /// Serves kubelet.sock in `dir` (on the current tokio runtime).
    pub fn start(dir: &Path) -> Self {
        let mut k = Self { dir: dir.to_path_buf(), registry: Registry::default(), stop: None };
        k.serve();
        k
    }

    fn serve(&mut self) {
        let incoming = uds::bind(&self.dir.join(api::KUBELET_SOCKET)).expect("bind kubelet.sock");
        let (stop, stopped) = oneshot::channel::<()>();
        tokio::spawn(
            tonic::transport::Server::builder()
                .add_service(api::registration_server::RegistrationServer::new(self.registry.clone()))
                .serve_with_incoming_shutdown(incoming, async {
                    let _ = stopped.await;
                }),
        );
        self.stop = Some(stop);
    }

    /// From now on refuse (or, with `false`, accept again) every registration.
    pub fn refuse_registrations(&self, refusing: bool) {
        self.registry.refusing.store(refusing, std::sync::atomic::Ordering::SeqCst);
    }

    /// Every registration so far.
    pub fn registrations(&self) -> Vec<api::RegisterRequest> {
        self.registry.seen.lock().expect("lock").clone()
    }

    /// Waits until `resource` has registered at least `count` times; its last registration.
    pub async fn wait_registered(&self, resource: &str, count: usize, timeout: Duration) -> api::RegisterRequest {
        let probe = async || {
            let mine: Vec<_> = self.registrations().into_iter().filter(|r| r.resource_name == resource).collect();
            if mine.len() >= count { mine.last().cloned() } else { None }
        };
        let what = format!("{resource} registered {count} time(s)");
        crate::poll::eventually(&what, timeout, probe, || format!("registrations: {:?}", self.registrations())).await
    }

    /// A client for the plugin socket `endpoint` (a file name in the folder), as the kubelet dials it.
    pub async fn client(&self, endpoint: &str) -> PluginClient {
        let channel = uds::connect(&self.dir.join(endpoint)).await.expect("dial plugin");
        api::device_plugin_client::DevicePluginClient::new(channel)
    }

    /// A kubelet restart: the registration service goes away, every socket in the folder is
    /// deleted, and a new kubelet.sock comes up.
    pub async fn restart(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
        for entry in std::fs::read_dir(&self.dir).expect("read dir").filter_map(|e| e.ok()) {
            if entry.file_name().to_string_lossy().ends_with(".sock") {
                let _ = std::fs::remove_file(entry.path());
            }
        }
        self.serve();
    }
}

impl Drop for Kubelet {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }
}
