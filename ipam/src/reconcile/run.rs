//! The pool loop — the one the daemon runs and the tests test: a pass every
//! `reconcileIntervalSeconds`, at once when asked or when the configuration changes, nothing while the
//! drain marker is present, leak collection now and then, until stopped. What each turn did goes to a
//! [`PassObserver`] (the daemon's metrics, probes and SR-IOV config; a test's counters).

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use nodeeni_conf::{EniId, PoolConfig};
use tokio::sync::{Notify, watch};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use nodeeni_state::lock::LockError;
use nodeeni_state::node::StoreError;

use super::drain::DRAIN_MARKER;
use super::{PoolError, Reconciler, Report};
use crate::ec2::Ec2;
use crate::host::HostPrep;

/// Told what each turn of the loop did. Every method does nothing unless implemented.
pub trait PassObserver: Send {
    /// A pass ended, well or not, after `took`, with the configuration it ran under.
    fn pass_done(&mut self, _config: &PoolConfig, _result: &Result<Report, PoolError>, _took: Duration) {}
    /// No pass: the node is drained (the marker at `marker` exists).
    fn paused(&mut self, _marker: &Path) {}
    fn leaks_collected(&mut self, _result: &Result<Vec<EniId>, PoolError>) {}
    /// The loop turned, with a pass or without one: it is alive.
    fn turned(&mut self, _config: &PoolConfig) {}
}

impl PassObserver for () {}

/// How the loop paces its side work.
#[derive(Debug, Clone, Copy)]
pub struct LoopSettings {
    /// How often ENIs of dead nodes are looked for.
    pub leak_check_every: Duration,
}

impl Default for LoopSettings {
    fn default() -> Self {
        Self { leak_check_every: Duration::from_secs(600) }
    }
}

impl<E: Ec2, H: HostPrep> Reconciler<E, H> {
    /// Runs passes until `stop` is cancelled (checked between passes: a pass in flight is the
    /// caller's to bound). Each pass takes the newest configuration from `configs`.
    pub async fn run(
        &mut self,
        mut configs: watch::Receiver<Arc<PoolConfig>>,
        now: &Notify,
        stop: &CancellationToken,
        settings: LoopSettings,
        observer: &mut impl PassObserver,
    ) {
        let mut last_leak_check: Option<Instant> = None;
        let mut told_drained = false;
        let mut configs_open = true;
        loop {
            let config = configs.borrow_and_update().clone();
            if *config != self.config {
                self.config = (*config).clone();
            }
            let marker = config.state_dir.join(DRAIN_MARKER);
            // Under the pool lock, so a drain starting now waits for this pass, and a drain under way
            // (it holds the lock) is seen as what it is.
            let pool_lock = match self.lock_pool(Duration::ZERO).await {
                Ok(guard) => Some(guard),
                // A drain holds it: this turn is a paused one.
                Err(PoolError::Store(StoreError::Lock(LockError::Busy { .. }))) => None,
                // Anything else (permissions, a full disk) is a failed pass, never a quiet pause.
                Err(e) => {
                    tracing::error!(error = %e, "cannot take the pool lock; no pass this turn");
                    observer.pass_done(&config, &Err(e), Duration::ZERO);
                    observer.turned(&config);
                    if self.wait_for_next_turn(&config, &mut configs, &mut configs_open, now, stop).await {
                        return;
                    }
                    continue;
                }
            };
            if pool_lock.is_none() || marker.exists() {
                if pool_lock.is_none() {
                    tracing::info!("the pool is locked (a drain runs): no pass this turn");
                } else if !told_drained {
                    tracing::warn!(marker = %marker.display(), "the node is drained: the pool is paused until `nodeeni-device-plugin drain --resume`");
                    told_drained = true;
                }
                observer.paused(&marker);
            } else {
                told_drained = false;
                let started = Instant::now();
                let result = self.reconcile().await;
                let took = started.elapsed();
                match &result {
                    Ok(r) if r.changed_anything() => tracing::info!(?took, report = ?r, "reconciled"),
                    Ok(_) => tracing::debug!(?took, "reconciled; nothing to do"),
                    Err(e) => tracing::error!(error = %e, ?took, "reconcile failed; retrying at the next pass"),
                }
                if let Ok(r) = &result {
                    for refused in &r.refused {
                        tracing::error!(refused, "part of the pool cannot be served");
                    }
                }
                observer.pass_done(&config, &result, took);
                if last_leak_check.is_none_or(|t| t.elapsed() >= settings.leak_check_every) {
                    last_leak_check = Some(Instant::now());
                    let leaks = self.collect_leaks().await;
                    if let Err(e) = &leaks {
                        tracing::warn!(error = %e, "leak collection failed; trying again later");
                    }
                    observer.leaks_collected(&leaks);
                }
            }
            drop(pool_lock);
            observer.turned(&config);
            if self.wait_for_next_turn(&config, &mut configs, &mut configs_open, now, stop).await {
                return;
            }
        }
    }

    /// Waits for the interval, a request, or a new configuration; true when `stop` came instead.
    async fn wait_for_next_turn(
        &self,
        config: &PoolConfig,
        configs: &mut watch::Receiver<Arc<PoolConfig>>,
        configs_open: &mut bool,
        now: &Notify,
        stop: &CancellationToken,
    ) -> bool {
        let interval = Duration::from_secs(config.reconcile_interval_secs);
        tokio::select! {
            biased;
            _ = stop.cancelled() => return true,
            _ = tokio::time::sleep(interval) => {}
            _ = now.notified() => tracing::debug!("reconcile requested"),
            changed = configs.changed(), if *configs_open => match changed {
                Ok(()) => tracing::debug!("configuration changed: reconciling"),
                // The sender is gone: the configuration is final.
                Err(_) => *configs_open = false,
            },
        }
        false
    }
}
