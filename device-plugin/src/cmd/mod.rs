//! The command line: what each subcommand takes, and one file per subcommand.

mod drain;
mod install_cni;
mod run;
mod status;
mod validate;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::{Parser, Subcommand};

pub use drain::drain;
pub use install_cni::install_cni;
pub use run::run;
pub use status::status;
pub use validate::validate;

#[derive(Debug, Parser)]
#[command(name = "nodeeni-device-plugin", version, about = "nodeeni node daemon: ENI pools for pods")]
pub struct Cli {
    /// Log format on stderr.
    #[arg(long, global = true, value_enum, default_value_t = LogFormat::Text)]
    pub log_format: LogFormat,
    /// Log filter (tracing's EnvFilter syntax, e.g. `info` or `nodeeni_ipam=debug,info`); the
    /// NODEENI_LOG environment variable wins when set.
    #[arg(long, global = true, default_value = "info")]
    pub log_level: String,
    /// Send traces (a span per reconcile pass, slot, EC2 call and kubelet RPC) to this OTLP/HTTP
    /// collector, JSON-encoded: `http://host:4318` (OTLP's `/v1/traces` is added) or a full URL.
    /// Without it, OTEL_EXPORTER_OTLP_ENDPOINT is used when set (one that cannot be used only turns
    /// traces off); off when neither is.
    #[arg(long, global = true)]
    pub otlp_endpoint: Option<String>,
    #[command(subcommand)]
    pub command: Cmd,
}

#[derive(Debug, Clone, Copy, clap::ValueEnum)]
pub enum LogFormat {
    Text,
    Json,
}

#[derive(Debug, clap::Args)]
pub struct RunArgs {
    /// The pool configuration (YAML or JSON; PoolConfig and/or NodeENI documents). Reloaded when it
    /// changes (also on SIGHUP); an invalid new file keeps the old configuration.
    #[arg(long)]
    pub config: PathBuf,
    /// Cluster name for files that hold only NodeENI manifests.
    #[arg(long)]
    pub cluster_name: Option<String>,
    /// The kubelet's device-plugin folder (kubelet.sock and our sockets).
    #[arg(long, default_value = nodeeni_proto::deviceplugin::v1beta1::DEFAULT_DEVICE_PLUGIN_DIR)]
    pub device_plugin_dir: PathBuf,
    /// Address of /metrics, /healthz and /readyz (loopback by default).
    #[arg(long, default_value = "127.0.0.1:9464", conflicts_with = "no_metrics")]
    pub metrics_addr: SocketAddr,
    /// Serve no metrics or probes.
    #[arg(long)]
    pub no_metrics: bool,
    /// Root of sysfs (PCI devices, drivers).
    #[arg(long, default_value = "/sys")]
    pub sysfs_root: PathBuf,
    /// Root of the device nodes (vfio).
    #[arg(long, default_value = "/dev")]
    pub dev_root: PathBuf,
    /// Folder of the Network Plumbing WG device-info files.
    #[arg(long, default_value = nodeeni_device_plugin::allocate::DEFAULT_DEVINFO_DIR)]
    pub devinfo_dir: PathBuf,
    /// The node's network namespace, when the ENIs appear in another namespace than the daemon's
    /// (a path like /run/netns/NAME; used by the node-in-a-box tests and demo).
    #[arg(long)]
    pub node_netns: Option<PathBuf>,
    /// Instance metadata endpoint (default: the standard IMDSv2 address).
    #[arg(long)]
    pub imds_endpoint: Option<String>,
    /// Also write the SR-IOV network device plugin's config.json here (atomically, after each pass).
    #[arg(long)]
    pub sriov_config: Option<PathBuf>,
    /// The resource prefix of the SR-IOV config's entries (`<prefix>/<pool resource's name>`): never
    /// the names nodeeni registers itself, which are refused.
    #[arg(long, default_value = nodeeni_device_plugin::sriov::DEFAULT_SRIOV_PREFIX)]
    pub sriov_resource_prefix: String,
    /// How often device health is judged, in milliseconds.
    #[arg(long, default_value_t = 500)]
    pub health_interval_ms: u64,
    /// How long a hot-plugged ENI may take to appear as a netdev, in seconds.
    #[arg(long, default_value_t = 60)]
    pub netdev_wait_secs: u64,
    /// Cluster mode: this node's name (the DaemonSet passes NODE_NAME from the downward API). The
    /// daemon then reads its Node's labels and providerID and the NodeENI objects from the Kubernetes
    /// API, and publishes a NodeENIState. Without it, the configuration file is all there is.
    #[arg(long, env = "NODE_NAME")]
    pub node_name: Option<String>,
    /// The kubeconfig to reach the API with (default: the pod's service account, in-cluster).
    #[arg(long, requires = "node_name")]
    pub kubeconfig: Option<PathBuf>,
}

#[derive(Debug, Subcommand)]
pub enum Cmd {
    /// Run the node daemon: keep the pools, serve them to the kubelet, until SIGTERM (which leaves
    /// every ENI attached).
    Run(Box<RunArgs>),
    /// Empty this node: pause the daemon's pool (a marker in the state folder), detach and delete every
    /// pool ENI, waiting up to --timeout for pods to release theirs. Exits 2 if some are still held.
    Drain {
        /// The pool configuration the daemon runs with.
        #[arg(long)]
        config: PathBuf,
        /// Cluster name for files that hold only NodeENI manifests.
        #[arg(long)]
        cluster_name: Option<String>,
        /// How long to wait for pods to release their ENIs: `300`, `90s`, `5m`, `1h`.
        #[arg(long, default_value = "5m", value_parser = parse_duration)]
        timeout: Duration,
        /// Instance metadata endpoint (default: the standard IMDSv2 address).
        #[arg(long)]
        imds_endpoint: Option<String>,
        /// Undo a drain: remove the marker, so the daemon keeps the pools again at its next pass.
        #[arg(long)]
        resume: bool,
    },
    /// Install a binary (the `nodeeni` CNI plugin) into a folder atomically: copy under a temporary
    /// name, make executable, rename over the old one; first, the CNI's node file where there is none.
    /// The DaemonSet's init container runs this.
    InstallCni {
        /// The binary to install.
        #[arg(long, default_value = "/usr/local/bin/nodeeni")]
        from: PathBuf,
        /// The CNI binary folder.
        #[arg(long, default_value = "/opt/cni/bin")]
        to: PathBuf,
        /// The daemon's state folder (the pool config's stateDir), written into the CNI's node file
        /// where there is none; default /var/lib/nodeeni.
        #[arg(long)]
        state_dir: Option<PathBuf>,
    },
    /// Show the node's pool ENIs as the node state has them: a table, or JSON with --json.
    Status {
        /// The state folder (stateDir of the pool config).
        #[arg(long, default_value = nodeeni_conf::pool::DEFAULT_STATE_DIR)]
        state_dir: PathBuf,
        /// Print the node state as JSON.
        #[arg(long)]
        json: bool,
    },
    /// Print the CustomResourceDefinitions of NodeENI and NodeENIState (what deploy/crds.yaml holds).
    Crds,
    /// Check a pool configuration (YAML or JSON; PoolConfig and/or NodeENI documents). Prints every
    /// problem with its path and exits 1 if there is any. A file of NodeENI manifests alone needs no
    /// --cluster-name.
    ValidateConfig {
        /// The configuration file.
        file: PathBuf,
        /// Cluster name for files that hold only NodeENI manifests.
        #[arg(long)]
        cluster_name: Option<String>,
    },
}

/// `300` (seconds), `90s`, `5m`, `1h`, `250ms`.
fn parse_duration(text: &str) -> Result<Duration, String> {
    let text = text.trim();
    let split = text.find(|c: char| !c.is_ascii_digit()).unwrap_or(text.len());
    let (number, unit) = text.split_at(split);
    let n: u64 = number.parse().map_err(|_| format!("{text:?} is not a duration like 300, 90s, 5m or 1h"))?;
    match unit {
        "" | "s" => Ok(Duration::from_secs(n)),
        "ms" => Ok(Duration::from_millis(n)),
        "m" => Ok(Duration::from_secs(n * 60)),
        "h" => Ok(Duration::from_secs(n * 3600)),
        _ => Err(format!("{text:?}: unknown unit {unit:?} (use ms, s, m or h)")),
    }
}

/// Runs `work` on a runtime of two workers (plenty: the daemon waits on EC2, the kubelet and timers).
fn block_on(work: impl std::future::Future<Output = ExitCode>) -> ExitCode {
    match tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build() {
        Ok(rt) => rt.block_on(work),
        Err(e) => {
            eprintln!("cannot start the async runtime: {e}");
            ExitCode::FAILURE
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_take_the_usual_units() {
        assert_eq!(parse_duration("300"), Ok(Duration::from_secs(300)));
        assert_eq!(parse_duration("90s"), Ok(Duration::from_secs(90)));
        assert_eq!(parse_duration("5m"), Ok(Duration::from_secs(300)));
        assert_eq!(parse_duration("1h"), Ok(Duration::from_secs(3600)));
        assert_eq!(parse_duration("250ms"), Ok(Duration::from_millis(250)));
        assert!(parse_duration("5 minutes").is_err());
        assert!(parse_duration("m").is_err());
    }
}
