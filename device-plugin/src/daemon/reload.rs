//! Configuration reload: the file's folder is watched (a Kubernetes ConfigMap swaps a `..data`
//! symlink, a rename, so the folder is watched, not the file), and SIGHUP asks for a reload too. A
//! valid new configuration is handed back; an invalid one is logged and counted, and the old one stays.

use std::path::{Path, PathBuf};
use std::time::Duration;

use nodeeni_conf::PoolConfig;
use nodeeni_conf::load::{ConfigError, LoadOptions};
use tokio::signal::unix::{Signal, SignalKind, signal};
use tokio::sync::mpsc;

use super::DaemonError;
use crate::folder_watch::{FolderEvent, watch_folder};
use crate::metrics::Metrics;

/// Editors and ConfigMap updates come as bursts of events: the burst settles this long first.
const SETTLE: Duration = Duration::from_millis(200);

pub(super) struct Reload {
    path: PathBuf,
    cluster_name: Option<String>,
    /// None once the watch ended (then only SIGHUP reloads).
    events: Option<mpsc::UnboundedReceiver<Result<FolderEvent, nix::Error>>>,
    hangup: Option<Signal>,
    /// The text last read, so a touch that changes nothing is not a reload.
    last_text: Option<String>,
    /// A change seen whose burst is still settling: kept across a dropped wait, so a wait cancelled
    /// by another branch of the daemon's loop never loses the change.
    pending: bool,
}

impl Reload {
    pub(super) fn watch(path: &Path, cluster_name: Option<String>) -> Result<Self, DaemonError> {
        let dir = path.parent().filter(|d| !d.as_os_str().is_empty()).unwrap_or(Path::new("."));
        Ok(Self {
            path: path.to_path_buf(),
            cluster_name,
            events: Some(watch_folder(dir)?),
            hangup: signal(SignalKind::hangup()).ok(),
            last_text: std::fs::read_to_string(path).ok(),
            pending: false,
        })
    }

    /// Waits for a valid configuration that differs from `current`. Cancel-safe: a change seen
    /// before the wait was dropped is read by the next wait.
    pub(super) async fn next(&mut self, current: &PoolConfig, metrics: &Metrics) -> PoolConfig {
        loop {
            self.wait_for_change().await;
            // Read once: what is compared is what is parsed (the file may change again meanwhile).
            let text = std::fs::read_to_string(&self.path);
            if let Ok(t) = &text
                && self.last_text.as_ref() == Some(t)
            {
                continue;
            }
            self.last_text = text.as_ref().ok().cloned();
            let parsed = text
                .map_err(|source| ConfigError::Read { path: self.path.clone(), source })
                .and_then(|t| PoolConfig::from_text(&t, &LoadOptions { cluster_name: self.cluster_name.clone() }));
            match parsed {
                Ok(new) if new.state_dir != current.state_dir => {
                    metrics.config_reload(false);
                    tracing::error!(
                        old = %current.state_dir.display(), new = %new.state_dir.display(),
                        "configuration reload refused: stateDir cannot change while running (restart the daemon); keeping the old configuration"
                    );
                }
                Ok(new) if new == *current => tracing::debug!("configuration file touched; nothing changed"),
                Ok(new) => {
                    // Labels are matched at every pass; the instance identity and the EC2 client are
                    // built once, at start.
                    if new.ec2 != current.ec2 || !new.node.same_instance(&current.node) {
                        tracing::warn!(
                            "the ec2 section and the node identity take effect at the next restart (labels at once)"
                        );
                    }
                    metrics.config_reload(true);
                    tracing::info!(pools = new.pools.len(), "configuration reloaded");
                    return new;
                }
                Err(e) => {
                    metrics.config_reload(false);
                    tracing::error!(error = %e, path = %self.path.display(), "configuration reload failed; keeping the old configuration");
                }
            }
        }
    }

    async fn wait_for_change(&mut self) {
        if !self.pending {
            self.wait_for_event().await;
        }
        if self.pending {
            tokio::time::sleep(SETTLE).await;
            if let Some(events) = self.events.as_mut() {
                while events.try_recv().is_ok() {}
            }
            self.pending = false;
        }
    }

    /// Waits for a folder event (then `pending` is set: the burst settles next) or SIGHUP.
    async fn wait_for_event(&mut self) {
        let folder = async {
            match self.events.as_mut() {
                Some(events) => events.recv().await,
                None => std::future::pending().await,
            }
        };
        let hangup = async {
            match self.hangup.as_mut() {
                Some(h) => h.recv().await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            event = folder => match event {
                Some(Ok(_)) => self.pending = true,
                ended => {
                    tracing::error!(reason = ?ended, "the configuration folder is not watched any more; SIGHUP still reloads");
                    self.events = None;
                }
            },
            Some(()) = hangup => {
                tracing::info!("SIGHUP: reloading the configuration");
                self.last_text = None;
            }
        }
    }
}
