//! The pool task: the pool loop of nodeeni-ipam (the one its tests test), and what each turn tells the
//! rest of the daemon — metrics (the node-state snapshot behind the pool gauges included), the probes,
//! the SR-IOV device plugin's config file.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use nodeeni_conf::{EniId, PoolConfig};
use nodeeni_ipam::host::HostSide;
use nodeeni_ipam::identity::NodeIdentity;
use nodeeni_ipam::reconcile::{LoopSettings, PassObserver, PoolError, Reconciler, Report};
use nodeeni_state::node::NodeStore;
use tokio::sync::{Notify, watch};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use super::Shared;
use super::cluster::PassNews;
use nodeeni_cluster::report::PassOutcome;

/// How often ENIs of dead nodes are looked for (jittered by the loop): hourly, so 5000 nodes list the
/// cluster's detached ENIs 1.4 times a second between them; any one node's check finds a leak.
const LEAK_CHECK_EVERY: Duration = Duration::from_secs(3600);

/// How long a turn's read of the node state may wait for the lock (a CNI call holds it briefly).
const STATE_READ_WAIT: Duration = Duration::from_secs(5);

/// Where each pass's outcome goes besides metrics and the probes.
pub(super) struct PassOutputs {
    /// Where the SR-IOV config goes, and its resource prefix.
    pub sriov_config: Option<(PathBuf, String)>,
    /// Cluster mode hears of every pass (the NodeENIState, Events, the saved view).
    pub passes: Option<watch::Sender<Option<PassNews>>>,
}

/// Starts the pool loop under `config`, following `configs`, until `stop`.
pub(super) fn spawn(
    shared: Arc<Shared>,
    host: HostSide,
    config: PoolConfig,
    configs: watch::Receiver<Arc<PoolConfig>>,
    identity: NodeIdentity,
    outputs: PassOutputs,
    stop: CancellationToken,
) -> JoinHandle<()> {
    let mut pool = Reconciler::new(shared.ec2.clone(), host, config, identity);
    let PassOutputs { sriov_config, passes } = outputs;
    let mut observer =
        DaemonObserver { shared, store: pool.store.clone(), sriov_config, passes, turn: 0, read: Arc::default() };
    // The pool gauges show the node as it is from the start, not only after the first pass.
    observer.read_state(None);
    let settings = LoopSettings { leak_check_every: LEAK_CHECK_EVERY };
    // Nothing in the daemon asks for a pass out of turn (the loop's `now`, which tests use, stays
    // quiet here): a new configuration does, through `configs`.
    tokio::spawn(async move { pool.run(configs, &Notify::new(), &stop, settings, &mut observer).await })
}

/// What the pool loop tells the rest of the daemon.
struct DaemonObserver {
    shared: Arc<Shared>,
    store: NodeStore,
    /// Where the SR-IOV config goes, and its resource prefix.
    sriov_config: Option<(PathBuf, String)>,
    /// Cluster mode hears of every pass (the NodeENIState, Events, the saved view).
    passes: Option<watch::Sender<Option<PassNews>>>,
    /// Turns whose node state has been asked for, and the last one read.
    turn: u64,
    read: Arc<Mutex<u64>>,
}

impl DaemonObserver {
    /// Reads the node state after a turn, off the async workers (the read waits for the lock):
    /// the pool gauges' snapshot from it, and with `sriov`, the SR-IOV device plugin's config. Reads
    /// run one at a time, and one that a later turn's read overtook is dropped.
    fn read_state(&mut self, sriov: Option<(PathBuf, String, PoolConfig)>) {
        self.turn += 1;
        let (turn, read, store, snapshot) =
            (self.turn, self.read.clone(), self.store.clone(), self.shared.pool_snapshot.clone());
        tokio::task::spawn_blocking(move || {
            let mut last = read.lock().unwrap_or_else(PoisonError::into_inner);
            if *last > turn {
                return;
            }
            *last = turn;
            let state = match store.load(STATE_READ_WAIT) {
                Ok(state) => state,
                Err(e) => {
                    tracing::warn!(error = %e, "cannot read the node state for the pool gauges and the SR-IOV config");
                    return;
                }
            };
            let quarantined = nodeeni_state::attachment::AttachmentStore::new(store.as_ref()).quarantined();
            snapshot.refresh(&state, quarantined);
            if let Some((path, prefix, config)) = sriov
                && let Err(e) = crate::sriov::write_config(&path, &config, &state, &prefix)
            {
                tracing::warn!(path = %path.display(), error = %e, "cannot write the SR-IOV device plugin config");
            }
        });
    }
}

impl PassObserver for DaemonObserver {
    fn pass_done(&mut self, config: &PoolConfig, result: &Result<Report, PoolError>, took: Duration) {
        // Declared whatever the pass's outcome: a pool EC2 cannot fill is what the alerts are for.
        self.shared.pool_snapshot.declare(config);
        match result {
            Ok(_) => {
                self.shared.metrics.reconciled(true, None, took);
                self.shared.probes.pass_succeeded();
            }
            Err(e) => self.shared.metrics.reconciled(false, Some(e.kind()), took),
        }
        let sriov =
            self.sriov_config.clone().filter(|_| result.is_ok()).map(|(path, prefix)| (path, prefix, config.clone()));
        self.read_state(sriov);
        if let Some(passes) = &self.passes {
            let (outcome, repaired) = match result {
                Ok(report) => (PassOutcome::Done { refused: report.refused.clone() }, report.repaired.clone()),
                Err(e) => (PassOutcome::Failed { why: e.to_string() }, Vec::new()),
            };
            let _ = passes.send(Some(PassNews { config: Arc::new(config.clone()), outcome, repaired }));
        }
    }

    fn paused(&mut self, _marker: &Path) {
        self.shared.metrics.paused_turn();
        self.shared.pool_snapshot.declare_none();
        // `drain` empties the node meanwhile: the gauges follow.
        self.read_state(None);
        // A drained node is as it should be: ready, with nothing to advertise.
        self.shared.probes.pass_succeeded();
    }

    fn leaks_collected(&mut self, result: &Result<Vec<EniId>, PoolError>) {
        if let Ok(deleted) = result {
            self.shared.metrics.leaks_deleted(deleted.len());
        }
    }

    fn turned(&mut self, config: &PoolConfig) {
        // The loop may wait up to the idle ceiling between turns.
        self.shared.probes.beat(Duration::from_secs(config.idle_interval_max_secs));
    }
}
