//! The node daemon: runs the pool loop, serves each advertised resource to the kubelet, reloads its
//! configuration when the file changes, answers metrics and probes, and stops on SIGTERM without
//! touching EC2 — the ENIs stay attached, so a restart does not disturb pods.
//!
//! This file is the wiring: it builds the parts, starts them, and stops them. Each part is in its own
//! module: [`resources`] (one supervised task per advertised resource), `pool_task` (the pool loop
//! and what it reports), `reload` (the configuration file watched and re-read). Shutdown is one
//! cancellation-token tree: every task holds a child of the token `run` is given, so cancelling it
//! stops them all; `run` then waits for each, bounded, so a stuck EC2 call cannot hold a shutdown.

mod cluster;
mod pool_task;
mod reload;
pub mod resources;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use nodeeni_conf::PoolConfig;
use nodeeni_conf::load::{ConfigError, LoadOptions};
use nodeeni_ipam::ec2::AwsEc2;
use nodeeni_ipam::host::HostSide;
use nodeeni_ipam::identity::{self, IdentityError};
use nodeeni_state::node::NodeStore;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use crate::folder_watch::WatchError;
use crate::http::{Endpoints, Limits, LogLevel, METRICS_MAX_AGE, MetricsCache};
use crate::metrics::{Ec2Collector, Metrics, PoolSnapshot};
use crate::probes::Probes;

pub use cluster::ClusterSettings;
pub use nodeeni_ipam::reconcile::DRAIN_MARKER;

/// How long shutdown waits for a reconcile pass in flight before leaving it to the next start.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(20);
/// While cluster mode waits for its first lists: how often the wait is logged (and probes beat).
const WAITING_REMINDER: Duration = Duration::from_secs(30);

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
    /// Its entries' resource prefix (never nodeeni's own names).
    pub sriov_resource_prefix: String,
    /// How often device health is judged.
    pub health_interval: Duration,
    /// How long a hot-plugged ENI may take to appear as a netdev.
    pub netdev_wait: Duration,
    /// Cluster mode (the node's labels and the NodeENIs from the API); None: the file alone.
    pub cluster: Option<ClusterSettings>,
}

#[derive(Debug, thiserror::Error)]
pub enum DaemonError {
    #[error("{path}: {source}")]
    Config { path: PathBuf, source: ConfigError },
    #[error(transparent)]
    Identity(#[from] IdentityError),
    #[error("cannot serve metrics on {addr}: {source}")]
    Metrics { addr: SocketAddr, source: std::io::Error },
    #[error("the configuration folder: {0}")]
    Watch(#[from] WatchError),
    #[error(transparent)]
    Cluster(#[from] nodeeni_cluster::api::ApiError),
}

/// What the daemon's tasks share.
#[derive(Debug)]
pub struct Shared {
    pub metrics: Arc<Metrics>,
    /// The node state as the pool loop last read it, for the pool gauges (scrapes never read it).
    pub pool_snapshot: Arc<PoolSnapshot>,
    pub ec2: Arc<AwsEc2>,
    pub store: NodeStore,
    pub probes: Arc<Probes>,
}

/// Waits for cluster mode's views to change; never, outside cluster mode.
async fn cluster_changed(cluster: &mut Option<cluster::Cluster>) {
    match cluster.as_mut() {
        Some(c) => c.changed().await,
        None => std::future::pending().await,
    }
}

/// Loads and validates the configuration file.
pub fn load_config(path: &Path, cluster_name: Option<String>) -> Result<PoolConfig, DaemonError> {
    PoolConfig::from_file(path, &LoadOptions { cluster_name })
        .map_err(|source| DaemonError::Config { path: path.to_path_buf(), source })
}

/// Runs the daemon until `shutdown` is cancelled. `log_level`, when given, is served on
/// `/debug/loglevel` so the level can change at run time.
pub async fn run(
    settings: Settings,
    log_level: Option<Arc<dyn LogLevel>>,
    shutdown: CancellationToken,
) -> Result<(), DaemonError> {
    let mut file_config = load_config(&settings.config_path, settings.cluster_name.clone())?;
    tracing::info!(config = %settings.config_path.display(), cluster = file_config.cluster_name, pools = file_config.pools.len(), "configuration loaded");
    // Cluster mode starts its watches first: the Node may name the instance, so IMDS is not needed.
    let mut cluster = match &settings.cluster {
        Some(c) => Some(cluster::Cluster::start(c, &file_config.state_dir, shutdown.child_token()).await?),
        None => None,
    };
    let configured = match cluster.as_mut() {
        Some(c) => c.identity_hints(&file_config.node).await,
        None => file_config.node.clone(),
    };
    let identity = identity::resolve(&configured, settings.imds_endpoint.as_deref()).await?;
    tracing::info!(instance = %identity.instance_id, az = identity.availability_zone, instance_type = identity.instance_type, "node identity");
    let ec2 = Arc::new(AwsEc2::new(&file_config.ec2).await);
    let pool_snapshot = Arc::new(PoolSnapshot::default());
    let mut metrics = Metrics::new();
    metrics.collect(pool_snapshot.clone());
    metrics.collect(Ec2Collector(ec2.clone()));
    let answers = ec2.clone();
    let probes = Probes::new(Duration::from_secs(file_config.idle_interval_max_secs))
        .with_progress(Box::new(move || answers.resilience.last_answer()));
    let shared = Arc::new(Shared {
        metrics: Arc::new(metrics),
        pool_snapshot,
        ec2,
        store: NodeStore::new(&file_config.state_dir),
        probes: Arc::new(probes),
    });

    let http = match settings.metrics_addr {
        Some(addr) => {
            let listener =
                tokio::net::TcpListener::bind(addr).await.map_err(|source| DaemonError::Metrics { addr, source })?;
            tracing::info!(addr = %listener.local_addr().unwrap_or(addr), "serving /metrics, /healthz, /readyz");
            let metrics = shared.metrics.clone();
            let cache = MetricsCache::new(Arc::new(move || metrics.render()), METRICS_MAX_AGE);
            let endpoints = Endpoints { probes: shared.probes.clone(), metrics: Arc::new(cache), log_level };
            Some(tokio::spawn(crate::http::serve(listener, endpoints, Limits::default(), shutdown.child_token())))
        }
        None => None,
    };

    let mut resources = resources::Resources::new(settings.clone(), shared.clone(), shutdown.child_token());
    let mut reload = reload::Reload::watch(&settings.config_path, settings.cluster_name.clone())?;
    if let Some(c) = cluster.as_mut() {
        c.set_identity(identity.clone(), shared.store.clone());
        // Nothing to act on yet (no saved view, no list): the pool waits rather than run without
        // the NodeENIs, which would take theirs away. The file's resources are served meanwhile.
        if !c.ready() {
            resources.apply(&file_config, &file_config.node.labels);
            // Waiting is the daemon working as meant, so the liveness probe is kept beating; what
            // is awaited is logged now and then, with the API's last error.
            let mut remind = tokio::time::interval(WAITING_REMINDER);
            while let Some(missing) = c.waiting_for() {
                tokio::select! {
                    _ = shutdown.cancelled() => {
                        resources.wait_stopped().await;
                        return Ok(());
                    }
                    _ = remind.tick() => {
                        shared.probes.beat(Duration::from_secs(file_config.idle_interval_max_secs));
                        tracing::warn!(waiting_for = missing, "the pool waits for the Kubernetes API before it runs (no saved view on this node)");
                    }
                    () = c.changed() => {}
                    new = reload.next(&file_config, &shared.metrics) => file_config = new,
                }
            }
        }
    }
    let config = match cluster.as_mut() {
        Some(c) => c.compose(&file_config),
        None => file_config.clone(),
    };
    resources.apply(&config, &config.node.labels);

    let host = HostSide {
        sysfs_root: settings.sysfs_root.clone(),
        netns: settings.node_netns.clone(),
        netdev_wait: settings.netdev_wait,
    };
    let (config_tx, config_rx) = watch::channel(Arc::new(config.clone()));
    let (pass_tx, mut pass_rx) = watch::channel(None);
    let mut pool_loop = pool_task::spawn(
        shared.clone(),
        host,
        config,
        config_rx,
        identity.clone(),
        pool_task::PassOutputs {
            sriov_config: settings.sriov_config.clone().map(|path| (path, settings.sriov_resource_prefix.clone())),
            passes: cluster.is_some().then_some(pass_tx),
        },
        shutdown.child_token(),
    );

    loop {
        let recompose = tokio::select! {
            _ = shutdown.cancelled() => break,
            new = reload.next(&file_config, &shared.metrics) => {
                file_config = new;
                true
            }
            () = cluster_changed(&mut cluster) => true,
            Ok(()) = pass_rx.changed() => {
                let news = pass_rx.borrow_and_update().clone();
                if let (Some(c), Some(news)) = (cluster.as_mut(), news) {
                    c.pass_done(news);
                }
                false
            }
        };
        if !recompose {
            continue;
        }
        let new = match cluster.as_mut() {
            Some(c) => c.compose(&file_config),
            None => file_config.clone(),
        };
        if **config_tx.borrow() != new {
            resources.apply(&new, &new.node.labels);
            // The pool loop passes at once on a new configuration.
            let _ = config_tx.send(Arc::new(new));
        }
    }

    tracing::info!("shutting down: ENIs stay attached and the node state stays on disk, so pods keep their ENIs");
    resources.wait_stopped().await;
    if tokio::time::timeout(SHUTDOWN_GRACE, &mut pool_loop).await.is_err() {
        tracing::warn!("a reconcile pass was still running; leaving it to the next start (its intents are on disk)");
        pool_loop.abort();
    }
    if let Some(h) = http {
        let _ = tokio::time::timeout(Duration::from_secs(5), h).await;
    }
    tracing::info!("stopped");
    Ok(())
}
