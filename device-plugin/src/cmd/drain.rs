//! `drain`: empty this node (or `--resume` after one).

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use nodeeni_device_plugin::daemon;

use super::block_on;

/// `drain`: pause the daemon's pool, detach and delete every pool ENI, wait for pods to let go.
pub fn drain(
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
