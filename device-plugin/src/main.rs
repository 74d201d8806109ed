//! `nodeeni-device-plugin`, the node daemon's command line: `run` (the daemon), `drain`,
//! `validate-config`, `status`.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use clap::{Parser, Subcommand};
use nodeeni_conf::PoolConfig;
use nodeeni_conf::pool::{ConfigError, LoadOptions};
use nodeeni_device_plugin::daemon;
use tokio::sync::Notify;

#[derive(Debug, Parser)]
#[command(name = "nodeeni-device-plugin", version, about = "nodeeni node daemon: ENI pools for pods")]
struct Cli {
    /// Log format on stderr.
    #[arg(long, global = true, value_enum, default_value_t = LogFormat::Text)]
    log_format: LogFormat,
    /// Log filter (tracing's EnvFilter syntax, e.g. `info` or `nodeeni_ipam=debug,info`); the
    /// NODEENI_LOG environment variable wins when set.
    #[arg(long, global = true, default_value = "info")]
    log_level: String,
    #[command(subcommand)]
    command: Cmd,
}

#[derive(Debug, Clone, Copy, clap::ValueEnum)]
enum LogFormat {
    Text,
    Json,
}

#[derive(Debug, clap::Args)]
struct RunArgs {
    /// The pool configuration (YAML or JSON; PoolConfig and/or NodeENI documents). Reloaded when it
    /// changes (also on SIGHUP); an invalid new file keeps the old configuration.
    #[arg(long)]
    config: PathBuf,
    /// Cluster name for files that hold only NodeENI manifests.
    #[arg(long)]
    cluster_name: Option<String>,
    /// The kubelet's device-plugin folder (kubelet.sock and our sockets).
    #[arg(long, default_value = nodeeni_proto::deviceplugin::v1beta1::DEFAULT_DEVICE_PLUGIN_DIR)]
    device_plugin_dir: PathBuf,
    /// Address of /metrics, /healthz and /readyz (loopback by default).
    #[arg(long, default_value = "127.0.0.1:9464", conflicts_with = "no_metrics")]
    metrics_addr: SocketAddr,
    /// Serve no metrics or probes.
    #[arg(long)]
    no_metrics: bool,
    /// Root of sysfs (PCI devices, drivers).
    #[arg(long, default_value = "/sys")]
    sysfs_root: PathBuf,
    /// Root of the device nodes (vfio).
    #[arg(long, default_value = "/dev")]
    dev_root: PathBuf,
    /// Folder of the Network Plumbing WG device-info files.
    #[arg(long, default_value = nodeeni_device_plugin::allocate::DEFAULT_DEVINFO_DIR)]
    devinfo_dir: PathBuf,
    /// The node's network namespace, when the ENIs appear in another namespace than the daemon's
    /// (a path like /run/netns/NAME; used by the node-in-a-box tests and demo).
    #[arg(long)]
    node_netns: Option<PathBuf>,
    /// Instance metadata endpoint (default: the standard IMDSv2 address).
    #[arg(long)]
    imds_endpoint: Option<String>,
    /// Also write the SR-IOV network device plugin's config.json here (atomically, after each pass).
    #[arg(long)]
    sriov_config: Option<PathBuf>,
    /// How often device health is judged, in milliseconds.
    #[arg(long, default_value_t = 500)]
    health_interval_ms: u64,
    /// How long a hot-plugged ENI may take to appear as a netdev, in seconds.
    #[arg(long, default_value_t = 60)]
    netdev_wait_secs: u64,
}

#[derive(Debug, Subcommand)]
enum Cmd {
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
    /// name, make executable, rename over the old one. The DaemonSet's init container runs this.
    InstallCni {
        /// The binary to install.
        #[arg(long, default_value = "/usr/local/bin/nodeeni")]
        from: PathBuf,
        /// The CNI binary folder.
        #[arg(long, default_value = "/opt/cni/bin")]
        to: PathBuf,
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
    /// Check a pool configuration (YAML or JSON; PoolConfig and/or NodeENI documents). Prints every
    /// problem with its path and exits 1 if there is any.
    ValidateConfig {
        /// The configuration file.
        file: PathBuf,
        /// Cluster name for files that hold only NodeENI manifests.
        #[arg(long)]
        cluster_name: Option<String>,
    },
}

fn validate(file: &std::path::Path, cluster_name: Option<String>) -> ExitCode {
    match PoolConfig::from_file(file, &LoadOptions { cluster_name }) {
        Ok(config) => {
            println!("{}: valid; cluster {}, {} pool(s)", file.display(), config.cluster_name, config.pools.len());
            for p in &config.pools {
                let resource = p.resource_name.as_ref().map_or("(not advertised)".to_string(), |r| r.to_string());
                println!(
                    "  {:<20} {:<6} {:<28} {} ENI(s), device indexes {}..{}",
                    p.name,
                    p.mode.as_str(),
                    resource,
                    p.eni_count(),
                    p.device_indexes().start,
                    p.device_indexes().end
                );
            }
            ExitCode::SUCCESS
        }
        Err(ConfigError::Invalid(problems)) => {
            eprintln!("{}: {problems}", file.display());
            ExitCode::FAILURE
        }
        Err(e) => {
            eprintln!("{}: {e}", file.display());
            ExitCode::FAILURE
        }
    }
}

fn status(state_dir: &std::path::Path, as_json: bool) -> ExitCode {
    let store = nodeeni_state::node::NodeStore::new(state_dir);
    if !store.exists() {
        eprintln!("no node state at {} (has the daemon run on this node?)", store.path().display());
        return ExitCode::FAILURE;
    }
    let state = match store.load(std::time::Duration::from_secs(5)) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("{e}");
            return ExitCode::FAILURE;
        }
    };
    if as_json {
        match serde_json::to_string_pretty(&state) {
            Ok(text) => println!("{text}"),
            Err(e) => {
                eprintln!("{e}");
                return ExitCode::FAILURE;
            }
        }
        return ExitCode::SUCCESS;
    }
    let dash = |v: Option<String>| v.unwrap_or_else(|| "-".into());
    println!(
        "{:<24} {:<12} {:<7} {:<10} {:<5} {:<10} {:<13} {:<18} {:<16} HELD BY",
        "ENI", "POOL", "MODE", "STATE", "INDEX", "IFNAME", "PCI", "MAC", "ADDRESS"
    );
    for e in &state.enis {
        println!(
            "{:<24} {:<12} {:<7} {:<10} {:<5} {:<10} {:<13} {:<18} {:<16} {}",
            dash(e.eni_id.as_ref().map(ToString::to_string)),
            e.pool,
            e.mode.as_str(),
            format!("{:?}", e.lifecycle).to_lowercase(),
            dash(e.device_index.map(|i| i.to_string())),
            dash(e.host_ifname.clone()),
            dash(e.pci.map(|p| p.to_string())),
            dash(e.mac.map(|m| m.to_string())),
            dash(e.primary_ip.map(|ip| ip.to_string())),
            dash(e.allocation.as_ref().map(|a| format!("{}/{}", a.container_id, a.ifname))),
        );
    }
    ExitCode::SUCCESS
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

fn init_logging(format: LogFormat, level: &str) {
    let filter = tracing_subscriber::EnvFilter::try_from_env("NODEENI_LOG")
        .or_else(|_| tracing_subscriber::EnvFilter::try_new(level))
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr);
    match format {
        LogFormat::Json => builder.json().init(),
        LogFormat::Text => builder.with_ansi(false).init(),
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

fn run(args: RunArgs) -> ExitCode {
    let settings = daemon::Settings {
        config_path: args.config,
        cluster_name: args.cluster_name,
        device_plugin_dir: args.device_plugin_dir,
        metrics_addr: (!args.no_metrics).then_some(args.metrics_addr),
        sysfs_root: args.sysfs_root,
        dev_root: args.dev_root,
        devinfo_dir: args.devinfo_dir,
        node_netns: args.node_netns,
        imds_endpoint: args.imds_endpoint,
        sriov_config: args.sriov_config,
        health_interval: Duration::from_millis(args.health_interval_ms.max(50)),
        netdev_wait: Duration::from_secs(args.netdev_wait_secs),
    };
    block_on(async {
        let shutdown = Arc::new(Notify::new());
        {
            let shutdown = shutdown.clone();
            tokio::spawn(async move {
                use tokio::signal::unix::{SignalKind, signal};
                let (Ok(mut term), Ok(mut int)) = (signal(SignalKind::terminate()), signal(SignalKind::interrupt()))
                else {
                    tracing::error!("cannot listen for SIGTERM/SIGINT");
                    return;
                };
                tokio::select! {
                    _ = term.recv() => tracing::info!("SIGTERM"),
                    _ = int.recv() => tracing::info!("SIGINT"),
                }
                shutdown.notify_one();
            });
        }
        match daemon::run(settings, shutdown).await {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                tracing::error!(error = %e, "the daemon cannot run");
                ExitCode::FAILURE
            }
        }
    })
}

fn drain(
    config: PathBuf,
    cluster_name: Option<String>,
    timeout: Duration,
    imds: Option<String>,
    resume: bool,
) -> ExitCode {
    let config = match daemon::load_config(&config, cluster_name) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("{e}");
            return ExitCode::FAILURE;
        }
    };
    let marker = config.state_dir.join(daemon::DRAIN_MARKER);
    if resume {
        return match std::fs::remove_file(&marker) {
            Ok(()) => {
                println!("resumed: removed {}; the daemon keeps the pools again at its next pass", marker.display());
                ExitCode::SUCCESS
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                println!("the node was not drained ({} does not exist)", marker.display());
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("cannot remove {}: {e}", marker.display());
                ExitCode::FAILURE
            }
        };
    }
    if let Err(e) = std::fs::create_dir_all(&config.state_dir).and_then(|()| {
        nodeeni_state::atomic::write_atomic(&marker, b"drain requested by nodeeni-device-plugin drain\n")
    }) {
        eprintln!("cannot write the drain marker {}: {e}", marker.display());
        return ExitCode::FAILURE;
    }
    println!("pool paused ({}); draining with a timeout of {timeout:?}", marker.display());
    block_on(async {
        let identity = match nodeeni_ipam::identity::resolve(&config.node, imds.as_deref()).await {
            Ok(i) => i,
            Err(e) => {
                eprintln!("{e}");
                return ExitCode::FAILURE;
            }
        };
        let ec2 = nodeeni_ipam::ec2::AwsEc2::new(&config.ec2).await;
        let host = nodeeni_ipam::host::HostSide::new("/sys");
        let r = nodeeni_ipam::reconcile::Reconciler::new(ec2, host, config, identity);
        match r.drain(timeout).await {
            Ok(report) => {
                for id in &report.deleted {
                    println!("deleted {id}");
                }
                if report.remaining.is_empty() {
                    println!("drained: {} ENI(s) detached and deleted", report.deleted.len());
                    ExitCode::SUCCESS
                } else {
                    for id in &report.remaining {
                        println!("still held by a pod: {id}");
                    }
                    eprintln!(
                        "{} ENI(s) still held by pods after {timeout:?}; run drain again once they are gone",
                        report.remaining.len()
                    );
                    ExitCode::from(2)
                }
            }
            Err(e) => {
                eprintln!("drain failed: {e}");
                ExitCode::FAILURE
            }
        }
    })
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    init_logging(cli.log_format, &cli.log_level);
    match cli.command {
        Cmd::Run(args) => run(*args),
        Cmd::Drain { config, cluster_name, timeout, imds_endpoint, resume } => {
            drain(config, cluster_name, timeout, imds_endpoint, resume)
        }
        Cmd::ValidateConfig { file, cluster_name } => validate(&file, cluster_name),
        Cmd::InstallCni { from, to } => match nodeeni_device_plugin::install::install_binary(&from, &to) {
            Ok(path) => {
                println!("installed {}", path.display());
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("{e}");
                ExitCode::FAILURE
            }
        },
        Cmd::Status { state_dir, json } => status(&state_dir, json),
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
