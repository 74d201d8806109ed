//! Serving a resource to the kubelet: serve on our socket first, then register with kubelet.sock.
//! When the kubelet restarts it deletes every plugin socket and makes a new kubelet.sock; we watch the
//! folder with inotify (a push, not a poll), and on either event serve again and register again.

use std::ffi::OsStr;
use std::os::unix::fs::PermissionsExt;
use std::path::PathBuf;
use std::time::Duration;

use nodeeni_conf::ResourceName;
use nodeeni_proto::deviceplugin::v1beta1 as api;
use nodeeni_proto::uds;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::folder_watch::{Change, FolderEvent, WatchError, watch_folder};
use crate::service::PluginService;

#[derive(Debug, thiserror::Error)]
pub enum RegisterError {
    #[error("cannot reach the kubelet at {path}: {source}")]
    Dial { path: PathBuf, source: tonic::transport::Error },
    #[error("the kubelet refused to register {resource}: {status}")]
    Refused { resource: String, status: tonic::Status },
    #[error("cannot serve on {path}: {source}")]
    Serve { path: PathBuf, source: std::io::Error },
    #[error(transparent)]
    Watch(#[from] WatchError),
    #[error("stopped watching {path} for kubelet restarts: {reason}")]
    WatchEnded { path: PathBuf, reason: String },
}

/// Where one resource is served.
#[derive(Debug, Clone)]
pub struct Endpoint {
    /// The kubelet's device-plugin folder (`/var/lib/kubelet/device-plugins`).
    pub dir: PathBuf,
    /// Our socket's file name in it, e.g. `nodeeni-nodeeni.io_dpdk.sock`.
    pub socket: String,
    pub resource: ResourceName,
}

impl Endpoint {
    pub fn for_resource(dir: impl Into<PathBuf>, resource: ResourceName) -> Self {
        // The domain too, and `_` between (no domain holds one): `a.io/fast` and `b.io/fast` are
        // two resources, so two sockets.
        let (domain, name) = resource.as_str().split_once('/').unwrap_or(("", resource.as_str()));
        let socket = format!("nodeeni-{domain}_{name}.sock");
        Self { dir: dir.into(), socket, resource }
    }
}

/// Registers `ep` with the kubelet (version v1beta1, our options).
#[tracing::instrument(name = "rpc", skip_all, fields(method = "Register", resource = %ep.resource))]
pub async fn register(ep: &Endpoint) -> Result<(), RegisterError> {
    let path = ep.dir.join(api::KUBELET_SOCKET);
    let channel = uds::connect(&path).await.map_err(|source| RegisterError::Dial { path: path.clone(), source })?;
    let mut client = api::registration_client::RegistrationClient::new(channel);
    client
        .register(api::RegisterRequest {
            version: api::VERSION.into(),
            endpoint: ep.socket.clone(),
            resource_name: ep.resource.to_string(),
            options: Some(PluginService::options()),
        })
        .await
        .map_err(|status| RegisterError::Refused { resource: ep.resource.to_string(), status })?;
    tracing::info!(resource = %ep.resource, socket = ep.socket, "registered with the kubelet");
    Ok(())
}

/// The folder events that mean the kubelet restarted: our socket deleted, kubelet.sock created.
type Events = mpsc::UnboundedReceiver<Result<FolderEvent, nix::Error>>;

fn means_restart(e: &FolderEvent, socket: &str) -> bool {
    match e.change {
        Change::Deleted => e.name.as_deref() == Some(OsStr::new(socket)),
        Change::Created => e.name.as_deref() == Some(OsStr::new(api::KUBELET_SOCKET)),
        _ => false,
    }
}

/// Serves `service` at `ep` and keeps it registered across kubelet restarts, until `stop` fires.
pub async fn serve_and_register(
    service: PluginService,
    ep: Endpoint,
    stop: &CancellationToken,
) -> Result<(), RegisterError> {
    serve_and_register_reporting(service, ep, stop, |_| {}).await
}

/// [`serve_and_register`], reporting whether the kubelet holds our registration: `true` after each
/// successful registration, `false` whenever it is lost (the kubelet restarted) until the next.
pub async fn serve_and_register_reporting(
    service: PluginService,
    ep: Endpoint,
    stop: &CancellationToken,
    report: impl Fn(bool),
) -> Result<(), RegisterError> {
    let mut events = watch_folder(&ep.dir)?;
    let path = ep.dir.join(&ep.socket);
    loop {
        // Serve first: the kubelet calls back as soon as we register.
        let incoming = uds::bind(&path).map_err(|source| RegisterError::Serve { path: path.clone(), source })?;
        let ours = uds::SocketFile::at(&path).map_err(|source| RegisterError::Serve { path: path.clone(), source })?;
        // Only root (the kubelet) may talk to it: a pod's process with a host mount must not Allocate.
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600))
            .map_err(|source| RegisterError::Serve { path: path.clone(), source })?;
        // This socket's server: a child of the resource's token, ended on its own when the socket is
        // served anew (a kubelet restart), and with the whole tree on a stop.
        let quit = stop.child_token();
        let server = tokio::spawn(
            tonic::transport::Server::builder()
                .add_service(api::device_plugin_server::DevicePluginServer::new(service.clone()))
                .serve_with_incoming_shutdown(incoming, quit.clone().cancelled_owned()),
        );
        let next = keep_registered(&ep, &mut events, stop, &report).await;
        // Whatever ends serving on this socket but a stop (a restart to serve anew, a failure) leaves
        // the kubelet without our registration until the next one.
        if !matches!(next, Next::Stop) {
            report(false);
        }
        quit.cancel();
        let _ = server.await;
        match next {
            Next::Serve => {}
            Next::Stop => {
                // Only our own: a restarted task for this resource may serve a new socket here already.
                if let Err(e) = ours.remove_if_ours(&path) {
                    tracing::warn!(path = %path.display(), error = %e, "could not remove the plugin socket");
                }
                return Ok(());
            }
            Next::Fail(e) => return Err(e),
        }
    }
}

/// The first wait before registering again after a failure, and the longest.
const REGISTER_RETRY_FIRST: Duration = Duration::from_millis(20);
const REGISTER_RETRY_MAX: Duration = Duration::from_secs(2);

/// What ends serving on one socket.
enum Next {
    /// Our socket was removed (a kubelet restart): serve on a new one.
    Serve,
    Stop,
    Fail(RegisterError),
}

/// Registers `ep`, and again whenever the kubelet comes back, while the server on our socket runs.
async fn keep_registered(ep: &Endpoint, events: &mut Events, stop: &CancellationToken, report: &impl Fn(bool)) -> Next {
    loop {
        // Not registered until the kubelet answers: at the start, and again after each restart seen.
        report(false);
        // The kubelet may not be up yet (or is restarting): try again when its socket appears, or
        // a little later (a socket can exist before anything listens on it), backing off to
        // REGISTER_RETRY_MAX while it stays away, and saying so now and then rather than every time.
        let mut retry = REGISTER_RETRY_FIRST;
        let mut failures = 0u32;
        while let Err(e) = register(ep).await {
            failures += 1;
            if failures == 1 || failures % 10 == 0 {
                tracing::warn!(error = %e, failures, "registration failed; retrying");
            } else {
                tracing::debug!(error = %e, failures, "registration failed; retrying");
            }
            if let Some(next) = wait(ep, events, stop, Some(retry)).await {
                return next;
            }
            retry = (retry * 2).min(REGISTER_RETRY_MAX);
        }
        report(true);
        // What happened until now (our own rebind's delete, the kubelet coming up) this registration
        // already answers; only what comes after it means another restart.
        while events.try_recv().is_ok() {}
        if let Some(next) = wait(ep, events, stop, None).await {
            return next;
        }
        if !ep.dir.join(&ep.socket).exists() {
            tracing::info!(resource = %ep.resource, "our socket was removed (kubelet restart); serving and registering again");
            return Next::Serve;
        }
        tracing::info!(resource = %ep.resource, "the kubelet came back; registering again");
    }
}

/// Waits for a kubelet restart in the folder, `stop`, or `retry` to pass; `None` means go on.
async fn wait(ep: &Endpoint, events: &mut Events, stop: &CancellationToken, retry: Option<Duration>) -> Option<Next> {
    let deadline = retry.map(|d| tokio::time::Instant::now() + d);
    let ended = |reason: String| Some(Next::Fail(RegisterError::WatchEnded { path: ep.dir.clone(), reason }));
    loop {
        let timer = async {
            match deadline {
                Some(t) => tokio::time::sleep_until(t).await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            _ = timer => return None,
            event = events.recv() => match event {
                Some(Ok(e)) if means_restart(&e, &ep.socket) => return None,
                // Anything else in the folder (another plugin's socket, say): keep waiting.
                Some(Ok(_)) => continue,
                // Without the watch a kubelet restart would go unnoticed: end, and let the caller start over.
                Some(Err(e)) => return ended(e.to_string()),
                None => return ended("the watching thread ended".into()),
            },
            _ = stop.cancelled() => return Some(Next::Stop),
        }
    }
}
