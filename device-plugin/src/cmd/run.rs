//! `run`: the node daemon, until SIGTERM (which leaves every ENI attached) or SIGINT.

use std::sync::Arc;
use std::time::Duration;

use nodeeni_device_plugin::daemon;
use nodeeni_device_plugin::http::LogLevel;
use std::process::ExitCode;
use tokio_util::sync::CancellationToken;

use super::{RunArgs, block_on};

/// `run`: the daemon until SIGTERM or SIGINT.
pub fn run(args: RunArgs, log_level: Option<Arc<dyn LogLevel>>) -> ExitCode {
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
        sriov_resource_prefix: args.sriov_resource_prefix,
        health_interval: Duration::from_millis(args.health_interval_ms.max(50)),
        netdev_wait: Duration::from_secs(args.netdev_wait_secs),
        cluster: args.node_name.map(|node_name| daemon::ClusterSettings { node_name, kubeconfig: args.kubeconfig }),
    };
    block_on(async {
        let shutdown = CancellationToken::new();
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
                shutdown.cancel();
            });
        }
        match daemon::run(settings, log_level, shutdown).await {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                tracing::error!(error = %e, "the daemon cannot run");
                ExitCode::FAILURE
            }
        }
    })
}
