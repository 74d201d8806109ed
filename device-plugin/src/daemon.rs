//! The node daemon: runs the pool's reconcile loop, serves each advertised resource to the kubelet,
//! reloads its configuration when the file changes, answers metrics and health probes, and stops on
//! SIGTERM without touching EC2 — the ENIs stay attached, so a restart does not disturb pods.
//!
//! Tasks and how they stop: the reconcile loop, one task per resource (health watch, gRPC server and
//! registration, device-info upkeep) and the HTTP server each get their own stop signal; the main task
//! waits for them after signalling, bounded, so a stuck EC2 call cannot hold a shutdown forever.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use nodeeni_conf::EniId;
use nodeeni_conf::pool::{ConfigError, LoadOptions};
use nodeeni_conf::{Mode, PoolConfig, ResourceName};
use nodeeni_ipam::ec2::AwsEc2;
use nodeeni_ipam::host::HostSide;
use nodeeni_ipam::identity::{self, IdentityError};
use nodeeni_ipam::reconcile::{LoopSettings, PassObserver, PoolError, Reconciler, Report};
use nodeeni_state::node::NodeStore;
use tokio::sync::{Notify, mpsc, watch};
use tokio::task::JoinHandle;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::allocate::AllocateSettings;
use crate::health::{self, HealthSource};
use crate::metrics::Metrics;
use crate::registration::{Endpoint, serve_and_register_reporting};
use crate::service::PluginService;

pub use nodeeni_ipam::reconcile::DRAIN_MARKER;
/// How often ENIs of dead nodes are looked for.
const LEAK_CHECK_EVERY: Duration = Duration::from_secs(600);
/// How long shutdown waits for a reconcile pass in flight before leaving it to the next start.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(20);

/// How the daemon runs on this node (command-line flags; the pools come from the config file).
#[derive(Debug, Clone)]
pub struct Settings {
    pub config_path: PathBuf,
    pub cluster_name: Option<String>,
    /// The kubelet's device-plugin folder.
    pub device_plugin_dir: PathBuf,
    /// Where /metrics, /healthz and /readyz are served; None: not at all.
    pub metrics_addr: Option<SocketAddr>,
    pub sysfs_root: PathBuf,
    pub dev_root: PathBuf,
    pub devinfo_dir: PathBuf,
    /// The node's network namespace when it is not the daemon's own (the node-in-a-box tests).
    pub node_netns: Option<PathBuf>,
    /// The instance metadata endpoint (default: the standard IMDSv2 address).
    pub imds_endpoint: Option<String>,
    /// Write the SR-IOV network device plugin's config.json here after each pass.
    pub sriov_config: Option<PathBuf>,
    /// How often device health is judged.
    pub health_interval: Duration,
    /// How long a hot-plugged ENI may take to appear as a netdev.
    pub netdev_wait: Duration,
}

#[derive(Debug, thiserror::Error)]
pub enum DaemonError {
    #[error("{path}: {source}")]
    Config { path: PathBuf, source: ConfigError },
    #[error(transparent)]
    Identity(#[from] IdentityError),
    #[error("cannot serve metrics on {addr}: {source}")]
    Metrics { addr: SocketAddr, source: std::io::Error },
    #[error("cannot watch the configuration folder {path}: {source}")]
    Watch { path: PathBuf, source: nix::Error },
}

/// What /healthz and /readyz answer from.
#[derive(Debug)]
pub struct Probes {
    /// The reconcile loop's last turn.
    heartbeat: Mutex<Instant>,
    /// The longest a healthy loop may go without a turn.
    max_quiet: Mutex<Duration>,
    first_pass_ok: std::sync::atomic::AtomicBool,
    /// Advertised resources and whether the kubelet has registered each.
    registered: Mutex<BTreeMap<String, bool>>,
}

impl Probes {
    fn new(interval: Duration) -> Self {
        Self {
            heartbeat: Mutex::new(Instant::now()),
            max_quiet: Mutex::new(Self::quiet_for(interval)),
            first_pass_ok: Default::default(),
            registered: Default::default(),
        }
    }

    /// A pass may take a while when EC2 is slow (timeouts and retries); three intervals plus two
    /// minutes without a turn means the loop is stuck.
    fn quiet_for(interval: Duration) -> Duration {
        interval * 3 + Duration::from_secs(120)
    }

    fn beat(&self) {
        *self.heartbeat.lock().unwrap_or_else(|p| p.into_inner()) = Instant::now();
    }

    /// Live: the reconcile loop turns.
    pub fn live(&self) -> Result<(), String> {
        let quiet = self.heartbeat.lock().unwrap_or_else(|p| p.into_inner()).elapsed();
        let max = *self.max_quiet.lock().unwrap_or_else(|p| p.into_inner());
        if quiet > max {
            Err(format!("the reconcile loop has not turned for {quiet:?} (limit {max:?})"))
        } else {
            Ok(())
        }
    }

    /// Ready: a reconcile pass has succeeded and the kubelet knows every advertised resource.
    pub fn ready(&self) -> Result<(), String> {
        let mut why = Vec::new();
        if !self.first_pass_ok.load(std::sync::atomic::Ordering::SeqCst) {
            why.push("no reconcile pass has succeeded yet".to_string());
        }
        for (resource, done) in self.registered.lock().unwrap_or_else(|p| p.into_inner()).iter() {
            if !done {
                why.push(format!("{resource} is not registered with the kubelet yet"));
            }
        }
        if why.is_empty() { Ok(()) } else { Err(why.join("; ")) }
    }
}

/// What the daemon's tasks share.
#[derive(Debug)]
pub struct Shared {
    pub metrics: Arc<Metrics>,
    pub ec2: Arc<AwsEc2>,
    pub store: NodeStore,
    pub probes: Probes,
}

/// Loads and validates the configuration file.
pub fn load_config(path: &Path, cluster_name: Option<String>) -> Result<PoolConfig, DaemonError> {
    PoolConfig::from_file(path, &LoadOptions { cluster_name })
        .map_err(|source| DaemonError::Config { path: path.to_path_buf(), source })
}

/// The resources this node advertises: resource → (mode, pools).
fn advertised(config: &PoolConfig, labels: &BTreeMap<String, String>) -> BTreeMap<ResourceName, (Mode, Vec<String>)> {
    let mut out: BTreeMap<ResourceName, (Mode, Vec<String>)> = BTreeMap::new();
    for pool in config.pools_for(labels) {
        if pool.mode == Mode::Host {
            continue;
        }
        if let Some(resource) = &pool.resource_name {
            out.entry(resource.clone()).or_insert_with(|| (pool.mode, Vec::new())).1.push(pool.name.clone());
        }
    }
    out
}

/// One advertised resource's task.
#[derive(Debug)]
struct ResourceTask {
    mode: Mode,
    pools: Vec<String>,
    stop: watch::Sender<bool>,
    handle: JoinHandle<()>,
}

/// Starts, stops and restarts the per-resource tasks as the configuration changes.
#[derive(Debug)]
struct Resources {
    settings: Settings,
    shared: Arc<Shared>,
    running: BTreeMap<ResourceName, ResourceTask>,
}

impl Resources {
    fn apply(&mut self, config: &PoolConfig, labels: &BTreeMap<String, String>) {
        let want = advertised(config, labels);
        let stale: Vec<ResourceName> = self
            .running
            .iter()
            .filter(|(r, t)| want.get(*r).is_none_or(|(mode, pools)| *mode != t.mode || *pools != t.pools))
            .map(|(r, _)| r.clone())
            .collect();
        for resource in stale {
            if let Some(task) = self.running.remove(&resource) {
                tracing::info!(%resource, "resource no longer advertised as it was; stopping it");
                let _ = task.stop.send(true);
                self.shared.probes.registered.lock().unwrap_or_else(|p| p.into_inner()).remove(resource.as_str());
                self.shared.metrics.forget_resource(resource.as_str());
            }
        }
        for (resource, (mode, pools)) in want {
            if self.running.contains_key(&resource) {
                continue;
            }
            tracing::info!(%resource, mode = mode.as_str(), ?pools, "advertising resource");
            self.shared.probes.registered.lock().unwrap_or_else(|p| p.into_inner()).insert(resource.to_string(), false);
            let (stop, stop_rx) = watch::channel(false);
            let handle = tokio::spawn(serve_resource(
                resource.clone(),
                mode,
                pools.clone(),
                self.settings.clone(),
                self.shared.clone(),
                stop_rx,
            ));
            self.running.insert(resource, ResourceTask { mode, pools, stop, handle });
        }
    }

    async fn stop_all(&mut self) {
        for (_, task) in std::mem::take(&mut self.running) {
            let _ = task.stop.send(true);
            let _ = tokio::time::timeout(Duration::from_secs(5), task.handle).await;
        }
    }
}

/// Health watch, gRPC service and registration, and device-info upkeep for one resource, until `stop`.
async fn serve_resource(
    resource: ResourceName,
    mode: Mode,
    pools: Vec<String>,
    settings: Settings,
    shared: Arc<Shared>,
    mut stop: watch::Receiver<bool>,
) {
    let source = HealthSource {
        store: shared.store.clone(),
        sysfs_root: settings.sysfs_root.clone(),
        netns: settings.node_netns.clone(),
        pools,
    };
    // The first list is judged before serving, so the kubelet's first ListAndWatch answer is real.
    let first = {
        let s = source.clone();
        tokio::task::spawn_blocking(move || s.devices()).await.ok().and_then(Result::ok).unwrap_or_default()
    };
    let (tx, rx) = watch::channel(first);
    let allocate = AllocateSettings {
        resource: resource.clone(),
        mode,
        dev_root: settings.dev_root.clone(),
        devinfo_dir: settings.devinfo_dir.clone(),
    };

    let health_stop = Arc::new(Notify::new());
    let health = {
        let stop = health_stop.clone();
        let interval = settings.health_interval;
        tokio::spawn(async move { health::watch(source, tx, interval, &stop).await })
    };

    let service = PluginService::new(allocate, rx.clone()).with_metrics(shared.metrics.clone());

    // Device-info files of devices that left, and the device gauges, follow the list.
    let upkeep = {
        let (mut rx, files, metrics) = (rx, service.devinfo_files(), shared.metrics.clone());
        let resource = resource.clone();
        tokio::spawn(async move {
            loop {
                let (healthy, all) = {
                    let devices = rx.borrow_and_update();
                    (devices.iter().filter(|d| d.healthy).count(), devices.len())
                };
                metrics.devices(resource.as_str(), healthy, all - healthy);
                match files.tidy() {
                    Ok(removed) if !removed.is_empty() => {
                        tracing::info!(?removed, "removed device-info files of departed devices")
                    }
                    Ok(_) => {}
                    Err(e) => tracing::warn!(error = %e, "cannot tidy device-info files"),
                }
                if rx.changed().await.is_err() {
                    return;
                }
            }
        })
    };

    let serve_stop = Arc::new(Notify::new());
    let serve = {
        let ep = Endpoint::for_resource(&settings.device_plugin_dir, resource.clone());
        let (stop, shared, resource) = (serve_stop.clone(), shared.clone(), resource.clone());
        tokio::spawn(async move {
            loop {
                let registered = || {
                    shared.metrics.registered(resource.as_str());
                    shared
                        .probes
                        .registered
                        .lock()
                        .unwrap_or_else(|p| p.into_inner())
                        .insert(resource.to_string(), true);
                };
                match serve_and_register_reporting(service.clone(), ep.clone(), &stop, registered).await {
                    Ok(()) => return,
                    Err(e) => {
                        tracing::error!(%resource, error = %e, "cannot serve the resource; trying again in 5 s");
                        tokio::select! {
                            _ = tokio::time::sleep(Duration::from_secs(5)) => {}
                            _ = stop.notified() => return,
                        }
                    }
                }
            }
        })
    };

    let _ = stop.wait_for(|s| *s).await;
    health_stop.notify_one();
    serve_stop.notify_one();
    let _ = serve.await;
    let _ = health.await;
    upkeep.abort();
    tracing::info!(%resource, "stopped serving resource");
}

/// What the pool loop tells the rest of the daemon: metrics, probes, the SR-IOV config file.
struct DaemonObserver {
    shared: Arc<Shared>,
    store: NodeStore,
    sriov_config: Option<PathBuf>,
}

impl PassObserver for DaemonObserver {
    fn pass_done(&mut self, config: &PoolConfig, result: &Result<Report, PoolError>, took: Duration) {
        match result {
            Ok(_) => {
                self.shared.metrics.reconciled(true, None, took);
                self.shared.probes.first_pass_ok.store(true, std::sync::atomic::Ordering::SeqCst);
            }
            Err(e) => self.shared.metrics.reconciled(false, Some(e.kind()), took),
        }
        if result.is_ok()
            && let Some(path) = &self.sriov_config
        {
            match self.store.load(Duration::from_secs(5)) {
                Ok(state) => {
                    if let Err(e) = crate::sriov::write_config(path, config, &state) {
                        tracing::warn!(path = %path.display(), error = %e, "cannot write the SR-IOV device plugin config");
                    }
                }
                Err(e) => tracing::warn!(error = %e, "cannot read the node state for the SR-IOV config"),
            }
        }
    }

    fn paused(&mut self, _marker: &Path) {
        self.shared.metrics.paused_turn();
        // A drained node is as it should be: ready, with nothing to advertise.
        self.shared.probes.first_pass_ok.store(true, std::sync::atomic::Ordering::SeqCst);
    }

    fn leaks_collected(&mut self, result: &Result<Vec<EniId>, PoolError>) {
        if let Ok(deleted) = result {
            self.shared.metrics.leaks_deleted(deleted.len());
        }
    }

    fn turned(&mut self, config: &PoolConfig) {
        *self.shared.probes.max_quiet.lock().unwrap_or_else(|p| p.into_inner()) =
            Probes::quiet_for(Duration::from_secs(config.reconcile_interval_secs));
        self.shared.probes.beat();
    }
}

/// Reports, from a blocking thread, any change in the configuration file's folder. A Kubernetes
/// ConfigMap volume swaps a `..data` symlink (a rename), so the folder is watched, not the file.
fn watch_config_folder(path: &Path) -> Result<mpsc::UnboundedReceiver<()>, DaemonError> {
    use nix::sys::inotify::{AddWatchFlags, InitFlags, Inotify};
    let dir = path.parent().filter(|d| !d.as_os_str().is_empty()).unwrap_or(Path::new(".")).to_path_buf();
    let watch_error = |source| DaemonError::Watch { path: dir.clone(), source };
    let inotify = Inotify::init(InitFlags::IN_CLOEXEC).map_err(watch_error)?;
    inotify
        .add_watch(
            &dir,
            AddWatchFlags::IN_CLOSE_WRITE
                | AddWatchFlags::IN_MOVED_TO
                | AddWatchFlags::IN_CREATE
                | AddWatchFlags::IN_DELETE
                | AddWatchFlags::IN_ATTRIB,
        )
        .map_err(watch_error)?;
    let (tx, rx) = mpsc::unbounded_channel();
    std::thread::spawn(move || {
        while inotify.read_events().is_ok() {
            if tx.send(()).is_err() {
                return;
            }
        }
    });
    Ok(rx)
}

/// Runs the daemon until `shutdown` is notified.
pub async fn run(settings: Settings, shutdown: Arc<Notify>) -> Result<(), DaemonError> {
    let config = load_config(&settings.config_path, settings.cluster_name.clone())?;
    tracing::info!(config = %settings.config_path.display(), cluster = config.cluster_name, pools = config.pools.len(), "configuration loaded");
    let identity = identity::resolve(&config.node, settings.imds_endpoint.as_deref()).await?;
    tracing::info!(instance = %identity.instance_id, az = identity.availability_zone, instance_type = identity.instance_type, "node identity");
    let ec2 = Arc::new(AwsEc2::new(&config.ec2).await);
    let shared = Arc::new(Shared {
        metrics: Arc::new(Metrics::default()),
        ec2,
        store: NodeStore::new(&config.state_dir),
        probes: Probes::new(Duration::from_secs(config.reconcile_interval_secs)),
    });

    let http_stop = Arc::new(Notify::new());
    let http = match settings.metrics_addr {
        Some(addr) => {
            let listener =
                tokio::net::TcpListener::bind(addr).await.map_err(|source| DaemonError::Metrics { addr, source })?;
            tracing::info!(addr = %listener.local_addr().unwrap_or(addr), "serving /metrics, /healthz, /readyz");
            let (shared, stop) = (shared.clone(), http_stop.clone());
            Some(tokio::spawn(async move { crate::http::serve(listener, shared, stop).await }))
        }
        None => None,
    };

    let mut resources = Resources { settings: settings.clone(), shared: shared.clone(), running: BTreeMap::new() };
    resources.apply(&config, &identity.labels);

    let host = HostSide {
        sysfs_root: settings.sysfs_root.clone(),
        netns: settings.node_netns.clone(),
        netdev_wait: settings.netdev_wait,
    };
    let (config_tx, config_rx) = watch::channel(Arc::new(config.clone()));
    let loop_stop = CancellationToken::new();
    let mut pool_loop = {
        let mut pool = Reconciler::new(shared.ec2.clone(), host, config, identity.clone());
        let mut observer = DaemonObserver {
            shared: shared.clone(),
            store: pool.store.clone(),
            sriov_config: settings.sriov_config.clone(),
        };
        let stop = loop_stop.clone();
        let settings = LoopSettings { leak_check_every: LEAK_CHECK_EVERY };
        // Nothing asks for a pass out of turn: a new configuration does, through `config_rx`.
        tokio::spawn(async move { pool.run(config_rx, &Notify::new(), &stop, settings, &mut observer).await })
    };

    let mut changes = watch_config_folder(&settings.config_path)?;
    let mut hangup = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup()).ok();
    let mut last_text = std::fs::read_to_string(&settings.config_path).ok();
    loop {
        tokio::select! {
            _ = shutdown.notified() => break,
            Some(()) = changes.recv() => {
                // Editors and ConfigMap updates come as bursts of events: let the burst settle.
                tokio::time::sleep(Duration::from_millis(200)).await;
                while changes.try_recv().is_ok() {}
            }
            Some(()) = async { match hangup.as_mut() { Some(h) => h.recv().await, None => std::future::pending().await } } => {
                tracing::info!("SIGHUP: reloading the configuration");
                last_text = None;
            }
        }
        // Read once: what is compared is what is parsed (the file may change again meanwhile).
        let text = std::fs::read_to_string(&settings.config_path);
        if let Ok(t) = &text
            && last_text.as_ref() == Some(t)
        {
            continue;
        }
        last_text = text.as_ref().ok().cloned();
        let current = config_tx.borrow().clone();
        let parsed = text
            .map_err(|source| ConfigError::Read { path: settings.config_path.clone(), source })
            .and_then(|t| PoolConfig::from_text(&t, &LoadOptions { cluster_name: settings.cluster_name.clone() }))
            .map_err(|source| DaemonError::Config { path: settings.config_path.clone(), source });
        match parsed {
            Ok(new) if new.state_dir != current.state_dir => {
                shared.metrics.config_reload(false);
                tracing::error!(
                    old = %current.state_dir.display(), new = %new.state_dir.display(),
                    "configuration reload refused: stateDir cannot change while running (restart the daemon); keeping the old configuration"
                );
            }
            Ok(new) if new == *current => tracing::debug!("configuration file touched; nothing changed"),
            Ok(new) => {
                if new.ec2 != current.ec2 || new.node != current.node {
                    tracing::warn!("the ec2 and node sections take effect at the next restart");
                }
                shared.metrics.config_reload(true);
                tracing::info!(pools = new.pools.len(), "configuration reloaded");
                resources.apply(&new, &identity.labels);
                // The pool loop passes at once on a new configuration.
                let _ = config_tx.send(Arc::new(new));
            }
            Err(e) => {
                shared.metrics.config_reload(false);
                tracing::error!(error = %e, "configuration reload failed; keeping the old configuration");
            }
        }
    }

    tracing::info!("shutting down: ENIs stay attached and the node state stays on disk, so pods keep their ENIs");
    resources.stop_all().await;
    loop_stop.cancel();
    if tokio::time::timeout(SHUTDOWN_GRACE, &mut pool_loop).await.is_err() {
        tracing::warn!("a reconcile pass was still running; leaving it to the next start (its intents are on disk)");
        pool_loop.abort();
    }
    http_stop.notify_one();
    if let Some(h) = http {
        let _ = tokio::time::timeout(Duration::from_secs(5), h).await;
    }
    tracing::info!("stopped");
    Ok(())
}
