//! The pool loop — the one the daemon runs and the tests test: a pass every
//! `reconcileIntervalSeconds`, at once when asked or when the configuration changes, nothing while the
//! drain marker is present, leak collection now and then, until stopped. While passes find nothing
//! to do the wait doubles up to `idleIntervalMaxSeconds`; every wait is jittered by ±10%, so nodes
//! that booted together do not keep listing together. What each turn did goes to a
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

/// How often the loop looks at the node state for host ENIs whose free addresses pods used up.
pub const ADDRESS_LOOK_EVERY: Duration = Duration::from_secs(2);

/// Every wait is this share longer or shorter, at random.
pub const JITTER: f64 = 0.1;

/// The wait after `idle_passes` passes in a row that found nothing to do: the interval, doubled for
/// each, at most `max`, jittered by ±[`JITTER`].
pub fn next_wait(interval: Duration, max: Duration, idle_passes: u32) -> Duration {
    let max = max.max(interval);
    let doubled = interval.saturating_mul(1u32 << idle_passes.min(20)).min(max);
    // Jittered, never beyond the ceiling the configuration names.
    jittered(doubled).min(max)
}

/// `d` moved by a random ±[`JITTER`], so nodes started together drift apart.
fn jittered(d: Duration) -> Duration {
    d.mul_f64(1.0 + JITTER * (2.0 * fastrand::f64() - 1.0))
}

/// Whether a pass changed nothing and found nothing new: the pool as declared, refused for the same
/// reasons as the pass before, or failed with the same error.
fn idle(result: &Result<Report, PoolError>, before: &Result<Vec<String>, String>) -> bool {
    match (result, before) {
        (Ok(r), Ok(refused)) => !r.changed_anything() && &r.refused == refused && r.draining.is_empty(),
        (Err(e), Err(was)) => e.to_string() == *was,
        _ => false,
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
        // The first leak check at a random point of the first interval, so a cluster's nodes booting
        // or restarting together (a rollout) do not all list its ENIs at once.
        let mut next_leak_check = Instant::now() + settings.leak_check_every.mul_f64(fastrand::f64());
        let mut idle_passes = 0u32;
        // A refusal or an error that repeats pass after pass (a pool the instance cannot hold, the
        // account's ENI quota reached) is idle too: it backs off like one, instead of asking EC2 again
        // every interval.
        let mut last_outcome: Result<Vec<String>, String> = Ok(Vec::new());
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
                    idle_passes = 0;
                    if self.wait_for_next_turn(&config, 0, &mut configs, &mut configs_open, now, stop).await {
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
                idle_passes = 0;
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
                let outcome = match &result {
                    Ok(r) => Ok(r.refused.clone()),
                    Err(e) => Err(e.to_string()),
                };
                idle_passes = if idle(&result, &last_outcome) { idle_passes.saturating_add(1) } else { 0 };
                last_outcome = outcome;
                if Instant::now() >= next_leak_check {
                    next_leak_check = Instant::now() + jittered(settings.leak_check_every);
                    let leaks = self.collect_leaks().await;
                    if let Err(e) = &leaks {
                        tracing::warn!(error = %e, "leak collection failed; trying again later");
                    }
                    observer.leaks_collected(&leaks);
                }
            }
            drop(pool_lock);
            observer.turned(&config);
            if self.wait_for_next_turn(&config, idle_passes, &mut configs, &mut configs_open, now, stop).await {
                return;
            }
        }
    }

    /// Returns once pods have taken addresses (the tally moved from `after_pass`) and a host ENI is
    /// below its pool's warm target; looks at the node state every [`ADDRESS_LOOK_EVERY`].
    async fn addresses_taken(&self, after_pass: Option<(usize, usize)>) {
        loop {
            tokio::time::sleep(ADDRESS_LOOK_EVERY).await;
            if let Ok((true, tally)) = self.addresses_wanted()
                && Some(tally) != after_pass
            {
                return;
            }
        }
    }

    /// Waits for the interval (backed off after `idle_passes` idle passes), a request, new addresses
    /// wanted, or a new configuration; true when `stop` came instead.
    async fn wait_for_next_turn(
        &self,
        config: &PoolConfig,
        idle_passes: u32,
        configs: &mut watch::Receiver<Arc<PoolConfig>>,
        configs_open: &mut bool,
        now: &Notify,
        stop: &CancellationToken,
    ) -> bool {
        let interval = next_wait(
            Duration::from_secs(config.reconcile_interval_secs),
            Duration::from_secs(config.idle_interval_max_secs),
            idle_passes,
        );
        let keeps_addresses = config.pools.iter().any(super::addresses::managed);
        let tally_after_pass = if keeps_addresses { self.addresses_wanted().ok().map(|(_, t)| t) } else { None };
        if idle_passes > 0 {
            tracing::debug!(?interval, idle_passes, "nothing to do: the next pass waits longer");
        }
        tokio::select! {
            biased;
            _ = stop.cancelled() => return true,
            _ = tokio::time::sleep(interval) => {}
            _ = now.notified() => tracing::debug!("reconcile requested"),
            () = self.addresses_taken(tally_after_pass), if keeps_addresses => {
                tracing::info!("pods took host ENI addresses below the warm target: reconciling");
            }
            changed = configs.changed(), if *configs_open => match changed {
                Ok(()) => tracing::debug!("configuration changed: reconciling"),
                // The sender is gone: the configuration is final.
                Err(_) => *configs_open = false,
            },
        }
        false
    }
}
