//! The pool against the in-memory EC2 under tokio's paused clock: crashes after every mutation,
//! answers lost after EC2 acted, listings that lag, a pod claiming an ENI while the pool shrinks, a
//! stuck detach, long pool names, and the loop the daemon runs. Each runs in milliseconds.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

use nodeeni_conf::load::LoadOptions;
use nodeeni_conf::{InstanceId, PoolConfig, SubnetId};
use nodeeni_ipam::ec2::{Eni, tags};
use nodeeni_ipam::identity::NodeIdentity;
use nodeeni_ipam::reconcile::{DRAIN_MARKER, JITTER, LoopSettings, PassObserver, PoolError, Reconciler, Report};
use nodeeni_ipam::store::{Allocation, Lifecycle, NodeState, StoreError};
use nodeeni_tests::fake_ec2::{FakeEc2, Fault};
use nodeeni_tests::fake_host::NamedNetdevs;
use tokio::sync::watch;

const SECOND: Duration = Duration::from_secs(1);

struct Region {
    ec2: Arc<FakeEc2>,
    subnet_a: SubnetId,
    instance: InstanceId,
    state: tempfile::TempDir,
}

fn region() -> Region {
    let ec2 = Arc::new(FakeEc2::new(&Default::default()));
    let subnet_a = ec2.add_subnet("10.0.1.0/24", "us-east-1a", Some("user-plane-a"));
    ec2.add_security_group("enis");
    let instance = ec2.add_instance("c5.xlarge", "us-east-1a");
    Region { ec2, subnet_a, instance, state: tempfile::tempdir().expect("state") }
}

impl Region {
    fn config(&self, pools: &str) -> PoolConfig {
        let text = format!(
            "clusterName: test\nstateDir: {}\nreconcileIntervalSeconds: 60\nec2: {{retry: {{baseDelayMs: 10, maxDelayMs: 100}}}}\npools:\n{pools}",
            self.state.path().display()
        );
        PoolConfig::from_text(&text, &LoadOptions::default()).unwrap_or_else(|e| panic!("{e}\n{text}"))
    }

    fn pool(&self, name: &str, per_subnet: u32, first_index: u32) -> String {
        format!(
            "  - {{name: {name}, mode: kernel, resourceName: nodeeni.io/{name}, subnetIds: [{}], securityGroupNames: [enis], \
             enisPerSubnet: {per_subnet}, firstDeviceIndex: {first_index}, description: {name} pool}}\n",
            self.subnet_a
        )
    }

    fn reconciler(&self, config: PoolConfig) -> Reconciler<Arc<FakeEc2>, NamedNetdevs> {
        let node = NodeIdentity {
            instance_id: self.instance.clone(),
            availability_zone: "us-east-1a".into(),
            instance_type: "c5.xlarge".into(),
        };
        let mut r = Reconciler::new(self.ec2.clone(), NamedNetdevs, config, node);
        r.detach_timeout = 20 * SECOND;
        r
    }

    /// The ENIs EC2 has for this node, as a describe by ID shows them (no listing lag).
    fn node_enis(&self) -> Vec<Eni> {
        self.ec2
            .enis()
            .into_iter()
            .filter(|e| e.tags.get(tags::NODE).map(String::as_str) == Some(self.instance.as_str()))
            .collect()
    }

    fn state(&self, r: &Reconciler<Arc<FakeEc2>, NamedNetdevs>) -> NodeState {
        r.store.load(SECOND).expect("state")
    }

    /// The node is as declared: exactly `n` ENIs in EC2, all attached here, every record Ready and
    /// naming exactly EC2's ENIs.
    fn assert_converged(&self, r: &Reconciler<Arc<FakeEc2>, NamedNetdevs>, n: usize, context: &str) {
        let enis = self.node_enis();
        assert_eq!(enis.len(), n, "{context}: ENIs in EC2 {enis:#?}");
        assert!(
            enis.iter()
                .all(|e| e.attachment.as_ref().and_then(|a| a.instance_id.as_deref()) == Some(self.instance.as_str())),
            "{context}: all attached here"
        );
        let state = self.state(r);
        assert!(state.enis.iter().all(|e| e.lifecycle == Lifecycle::Ready), "{context}: {state:#?}");
        let ids: BTreeSet<_> = state.enis.iter().filter_map(|e| e.eni_id.clone()).collect();
        assert_eq!(state.enis.len(), ids.len(), "{context}: one record per ENI");
        assert_eq!(ids, enis.iter().map(|e| e.id.clone()).collect(), "{context}: the state names exactly EC2's ENIs");
    }
}

/// What a pod's CNI ADD records when it claims an ENI.
fn pod_1() -> Allocation {
    Allocation {
        container_id: "pod-1".parse().expect("container id"),
        ifname: "net1".into(),
        netns: None,
        since_unix: 0,
    }
}

#[tokio::test(start_paused = true)]
async fn warming_creates_attaches_and_costs_three_mutations_per_eni() {
    let w = region();
    let r = w.reconciler(w.config(&w.pool("fast", 2, 1)));
    let report = r.reconcile().await.expect("warm");
    assert_eq!(report.created.len(), 2, "{report:?}");
    w.assert_converged(&r, 2, "warm");
    let indexes: BTreeSet<u32> = w.node_enis().iter().filter_map(|e| e.attachment.as_ref()?.device_index).collect();
    assert_eq!(indexes, [1, 2].into());
    for op in ["CreateNetworkInterface", "AttachNetworkInterface", "ModifyNetworkInterfaceAttribute"] {
        assert_eq!(w.ec2.calls(op), 2, "{op}");
    }
    let again = r.reconcile().await.expect("again");
    assert!(!again.changed_anything(), "{again:?}");
    assert_eq!(w.ec2.calls("CreateNetworkInterface"), 2, "a converged pool creates nothing");
}

/// Runs a pass under `config` that crashes right after EC2 carried out the `skip+1`th call of `op`.
async fn crash_during_a_pass(w: &Region, config: PoolConfig, op: &'static str, skip: u64) {
    w.ec2.fail(op, skip, 1, Fault::CrashAfter);
    let crashing = w.reconciler(config);
    let crashes = w.ec2.crashes();
    tokio::select! {
        result = crashing.reconcile() => panic!("{op} #{}: the pass ended instead of crashing: {result:?}", skip + 1),
        () = w.ec2.crashed(crashes + 1) => {}
    }
}

/// Crashes a warm-up after `op`, then restarts: the node converges without a leak.
async fn crash_then_restart(op: &'static str, skip: u64) {
    let w = region();
    let config = w.config(&w.pool("fast", 2, 1));
    crash_during_a_pass(&w, config.clone(), op, skip).await;
    let r = w.reconciler(config);
    let report = r.reconcile().await.unwrap_or_else(|e| panic!("{op} #{}: restart: {e}", skip + 1));
    w.assert_converged(&r, 2, &format!("crash after {op} #{} then {report:?}", skip + 1));
}

#[tokio::test(start_paused = true)]
async fn a_crash_after_any_mutation_converges_without_a_leak() {
    for op in ["CreateNetworkInterface", "AttachNetworkInterface", "ModifyNetworkInterfaceAttribute"] {
        for skip in 0..2 {
            crash_then_restart(op, skip).await;
        }
    }
}

#[tokio::test(start_paused = true)]
async fn a_crash_while_shrinking_converges_without_a_leak() {
    for op in ["DetachNetworkInterface", "DeleteNetworkInterface"] {
        for skip in 0..2 {
            let w = region();
            w.reconciler(w.config(&w.pool("fast", 3, 1))).reconcile().await.expect("warm");
            let shrunk = w.config(&w.pool("fast", 1, 1));
            crash_during_a_pass(&w, shrunk.clone(), op, skip).await;
            let r = w.reconciler(shrunk);
            let report = r.reconcile().await.unwrap_or_else(|e| panic!("{op} #{}: restart: {e}", skip + 1));
            w.assert_converged(&r, 1, &format!("crash after {op} #{} then {report:?}", skip + 1));
        }
    }
}

#[tokio::test(start_paused = true)]
async fn answers_lost_after_ec2_acted_leave_no_duplicate() {
    let w = region();
    let r = w.reconciler(w.config(&w.pool("fast", 2, 1)));
    // The create's answer is lost: the retry with the same client token gets the same ENI back.
    w.ec2.fail("CreateNetworkInterface", 0, 1, Fault::LostAnswer);
    // The attach's answer is lost: the retry finds it attached (in use), and the slot fails this pass.
    w.ec2.fail("AttachNetworkInterface", 0, 1, Fault::LostAnswer);
    let first = r.reconcile().await;
    assert_eq!(w.node_enis().len(), 2, "no duplicate from the retried create: {first:?}");
    r.reconcile().await.expect("the next pass finishes it");
    w.assert_converged(&r, 2, "after lost answers");
}

#[tokio::test(start_paused = true)]
async fn an_eni_missing_from_a_lagging_listing_is_kept_not_made_again() {
    let w = region();
    let r = w.reconciler(w.config(&w.pool("fast", 2, 1)));
    r.reconcile().await.expect("warm");
    // New ENIs stay out of tag listings for a minute (EC2's listings are eventually consistent).
    w.ec2.set_listing_lag(60 * SECOND);
    let report = r.reconcile().await.expect("pass while the listing lags");
    assert!(report.created.is_empty() && report.repaired.is_empty(), "{report:?}");
    w.assert_converged(&r, 2, "listing lags");
}

#[tokio::test(start_paused = true)]
async fn creates_after_a_lagging_listing_are_adopted_not_duplicated() {
    let w = region();
    w.ec2.set_listing_lag(30 * SECOND);
    let config = w.config(&w.pool("fast", 1, 1));
    crash_during_a_pass(&w, config.clone(), "CreateNetworkInterface", 0).await;
    // The restart does not see the ENI the crash made (the listing lags): it makes another.
    let r = w.reconciler(config);
    let _ = r.reconcile().await;
    tokio::time::sleep(31 * SECOND).await;
    // Once both are listed, the one serving the slot stays and the extra goes.
    r.reconcile().await.expect("after the lag");
    w.assert_converged(&r, 1, "duplicate removed");
}

#[tokio::test(start_paused = true)]
async fn a_pod_claiming_an_eni_after_the_passs_snapshot_keeps_it() {
    let w = region();
    let r = w.reconciler(w.config(&w.pool("fast", 3, 1)));
    r.reconcile().await.expect("warm");
    let subnet_lookups = w.ec2.calls("DescribeSubnets");
    // The pass reads the node state, then resolves its pools in EC2: a pod (another process) claims
    // the ENI at device index 3 in between, while it is still Ready.
    w.ec2.set_latency("DescribeSecurityGroups", SECOND);
    let r = w.reconciler(w.config(&w.pool("fast", 1, 1)));
    let store = r.store.clone();
    let claimer = async {
        while w.ec2.calls("DescribeSubnets") == subnet_lookups {
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        store
            .update(SECOND, |s: &mut NodeState| {
                let e = s.enis.iter_mut().find(|e| e.device_index == Some(3) && e.is_free()).expect("free");
                e.allocation = Some(pod_1());
                Ok::<_, StoreError>(e.eni_id.clone().expect("id"))
            })
            .expect("claim")
    };
    let (report, claimed) = tokio::join!(r.reconcile(), claimer);
    let report = report.expect("shrink");
    assert_eq!(report.deleted.len(), 1, "{report:?}");
    assert!(!report.deleted.contains(&claimed), "the claimed ENI was taken from its pod: {report:?}");
    assert_eq!(report.draining, std::slice::from_ref(&claimed), "it drains instead");
    let held = w.node_enis().into_iter().find(|e| e.id == claimed).expect("the pod's ENI still exists");
    assert!(held.attachment.is_some(), "and is still attached");
    let state = w.state(&r);
    let rec = state.eni(&claimed).expect("its record");
    assert_eq!((rec.lifecycle, rec.allocation.is_some()), (Lifecycle::Draining, true));
}

#[tokio::test(start_paused = true)]
async fn a_pod_claiming_while_the_first_detach_waits_keeps_its_eni() {
    // The pool shrinks from 4 to 2; while the first detach waits, a pod claims whatever ENI is free
    // (the one nearest the removals, adversarially). None of the ENIs being removed may be claimable.
    let w = region();
    let r = w.reconciler(w.config(&w.pool("fast", 3, 1)));
    r.reconcile().await.expect("warm");
    w.ec2.set_detach_time(Some(5 * SECOND));
    let r = w.reconciler(w.config(&w.pool("fast", 1, 1)));
    let store = r.store.clone();
    let claimer = async {
        while w.ec2.calls("DetachNetworkInterface") == 0 {
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        store
            .update(SECOND, |s: &mut NodeState| {
                let e = s.enis.iter_mut().filter(|e| e.is_free()).max_by_key(|e| e.device_index);
                Ok::<_, StoreError>(e.map(|e| {
                    e.allocation = Some(pod_1());
                    e.eni_id.clone().expect("id")
                }))
            })
            .expect("claim")
    };
    let (report, claimed) = tokio::join!(r.reconcile(), claimer);
    let report = report.expect("shrink");
    let claimed = claimed.expect("the ENI that stays is free");
    assert!(!report.deleted.contains(&claimed), "the claimed ENI was taken from its pod: {report:?}");
    let rec = w.state(&r).eni(&claimed).cloned().expect("its record");
    assert_eq!(rec.device_index, Some(1), "only the ENI that stays was claimable: {rec:?}");
    assert_eq!(report.deleted.len(), 2, "{report:?}");
}

#[tokio::test(start_paused = true)]
async fn a_record_drained_by_someone_else_during_a_pass_stays_drained() {
    let w = region();
    let r = w.reconciler(w.config(&w.pool("fast", 1, 1)));
    r.reconcile().await.expect("warm");
    // The next pass looks its pools up again (as after a lookup's time to live), slowly.
    r.lookups.forget();
    let lookups = w.ec2.calls("DescribeSubnets");
    w.ec2.set_latency("DescribeSecurityGroups", SECOND);
    // `drain` (another process) starts removing the ENI while the pass resolves its pools.
    let store = r.store.clone();
    let drain = async {
        while w.ec2.calls("DescribeSubnets") == lookups {
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        store
            .update(SECOND, |s: &mut NodeState| {
                s.enis[0].lifecycle = Lifecycle::Detaching;
                Ok::<_, StoreError>(())
            })
            .expect("drain marks it")
    };
    let (report, ()) = tokio::join!(r.reconcile(), drain);
    report.expect("pass");
    assert_eq!(w.state(&r).enis[0].lifecycle, Lifecycle::Detaching, "the pass must not make it claimable again");
}

#[tokio::test(start_paused = true)]
async fn a_drain_waits_for_the_pass_in_flight_and_no_pass_runs_during_it() {
    let w = region();
    let config = w.config(&w.pool("fast", 1, 1));
    w.reconciler(config).reconcile().await.expect("warm one");
    // The loop's next pass (the pool grown to two) is slow to resolve its pools; `drain` starts
    // meanwhile, as the command does: marker first, then the drain.
    let grown = w.config(&w.pool("fast", 2, 1));
    let mut r = w.reconciler(grown.clone());
    let (_configs_tx, configs) = watch::channel(Arc::new(grown.clone()));
    let (count, mut counted) = watch::channel((0u64, 0u64));
    let mut observer = Passes { count, last: None };
    let (now, stop) = (tokio::sync::Notify::new(), tokio_util::sync::CancellationToken::new());
    w.ec2.set_latency("DescribeSecurityGroups", 5 * SECOND);
    let lookups = w.ec2.calls("DescribeSubnets");
    let drainer = w.reconciler(grown);
    let drain = async {
        while w.ec2.calls("DescribeSubnets") == lookups {
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        std::fs::write(w.state.path().join(DRAIN_MARKER), b"drain").expect("marker");
        let report = drainer.drain(120 * SECOND).await.expect("drain");
        assert_eq!(counted.borrow().0, 1, "the pass in flight finished before the drain began");
        // In EC2's own order: the pass's create and attach came before the drain's first detach.
        let log = w.ec2.call_log();
        let last_attach = log.iter().rposition(|op| *op == "AttachNetworkInterface").expect("an attach");
        let first_detach = log.iter().position(|op| *op == "DetachNetworkInterface").expect("a detach");
        assert!(last_attach < first_detach, "the drain interleaved with the pass: {log:?}");
        assert_eq!(report.deleted.len(), 2, "both ENIs, the one the pass made included: {report:?}");
        now.notify_one();
        counted.wait_for(|(_, paused)| *paused >= 1).await.expect("loop alive");
        stop.cancel();
    };
    tokio::join!(r.run(configs, &now, &stop, LoopSettings::default(), &mut observer), drain);
    assert!(w.node_enis().is_empty(), "nothing re-created: {:#?}", w.node_enis());
}

/// While a pass waits for the node-state lock (the CNI holds it), the runtime's other tasks — health,
/// Allocate, metrics in the daemon — go on, even with one worker.
#[tokio::test(flavor = "multi_thread", worker_threads = 1)]
async fn a_pass_waiting_for_the_node_state_lock_does_not_stall_other_tasks() {
    let w = region();
    let r = Arc::new(w.reconciler(w.config(&w.pool("fast", 1, 1))));
    r.reconcile().await.expect("warm");
    // Another process (the CNI) holds the node-state lock for a while.
    let lock = w.state.path().join("node-state.lock");
    let (held_tx, held_rx) = std::sync::mpsc::channel();
    let holder = std::thread::spawn(move || {
        let _guard = nodeeni_state::lock::acquire(&lock, "node state", true, false, SECOND).expect("lock");
        held_tx.send(()).expect("tell");
        std::thread::sleep(Duration::from_millis(800));
    });
    held_rx.recv().expect("held");
    let ticks = Arc::new(std::sync::atomic::AtomicU32::new(0));
    let ticker = {
        let ticks = ticks.clone();
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(Duration::from_millis(10)).await;
                ticks.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            }
        })
    };
    // The pass runs on the runtime's one worker, as the daemon's pool task does.
    let pass = tokio::spawn({
        let r = r.clone();
        async move { r.reconcile().await.map(|_| ()).map_err(|e| e.to_string()) }
    });
    pass.await.expect("joined").expect("a pass once the lock is free");
    ticker.abort();
    holder.join().expect("holder");
    let n = ticks.load(std::sync::atomic::Ordering::SeqCst);
    assert!(n >= 20, "the other task ran only {n} times while the pass waited ~800 ms for the lock");
}

#[tokio::test(start_paused = true)]
async fn a_pool_lock_that_cannot_be_taken_is_a_failed_pass_not_a_pause() {
    let w = region();
    let config = w.config(&w.pool("fast", 1, 1));
    // Something is wrong with the state folder: the lock's path is a folder.
    std::fs::create_dir_all(w.state.path().join(nodeeni_ipam::reconcile::POOL_LOCK)).expect("mkdir");
    let mut r = w.reconciler(config.clone());
    let (_configs_tx, configs) = watch::channel(Arc::new(config));
    let (count, mut counted) = watch::channel((0u64, 0u64));
    let mut observer = Passes { count, last: None };
    let (now, stop) = (tokio::sync::Notify::new(), tokio_util::sync::CancellationToken::new());
    let driver = async {
        counted.wait_for(|(passes, _)| *passes >= 1).await.expect("loop alive");
        stop.cancel();
    };
    tokio::join!(r.run(configs, &now, &stop, LoopSettings::default(), &mut observer), driver);
    assert_eq!(counted.borrow().1, 0, "not reported as a drained node");
    assert!(observer.last.expect("a pass reported").is_err(), "reported as a failed pass");
    assert!(w.node_enis().is_empty(), "and no pass ran");
}

#[tokio::test(start_paused = true)]
async fn a_stuck_detach_does_not_stop_other_pools_converging() {
    let w = region();
    let r = w.reconciler(w.config(&format!("{}{}", w.pool("old", 1, 1), w.pool("grow", 1, 2))));
    r.reconcile().await.expect("warm");
    w.ec2.set_detach_time(None);
    let r = w.reconciler(w.config(&w.pool("grow", 2, 2)));
    let result = r.reconcile().await;
    assert!(matches!(&result, Err(PoolError::Refused { msg, .. }) if msg.contains("did not detach")), "{result:?}");
    let grown =
        w.node_enis().into_iter().filter(|e| e.tags.get(tags::POOL).map(String::as_str) == Some("grow")).count();
    assert_eq!(grown, 2, "the other pool still grew");
}

#[tokio::test(start_paused = true)]
async fn a_long_pool_name_still_creates() {
    let w = region();
    let name = "user-plane-for-the-east-coast-packet-core-with-a-long-name";
    let r = w.reconciler(w.config(&w.pool(name, 1, 1)));
    r.reconcile().await.expect("EC2 refuses a client token over 64 characters");
    w.assert_converged(&r, 1, "long name");
}

/// Counts the loop's turns and passes, so a test waits for the event rather than for time.
#[derive(Debug)]
struct Passes {
    count: watch::Sender<(u64, u64)>,
    last: Option<Result<Report, String>>,
}

impl PassObserver for Passes {
    fn pass_done(&mut self, _config: &PoolConfig, result: &Result<Report, PoolError>, _took: Duration) {
        self.last = Some(result.as_ref().cloned().map_err(|e| e.to_string()));
        self.count.send_modify(|(passes, _)| *passes += 1);
    }
    fn paused(&mut self, _marker: &std::path::Path) {
        self.count.send_modify(|(_, paused)| *paused += 1);
    }
}

#[tokio::test(start_paused = true)]
async fn the_loop_passes_on_its_interval_on_demand_on_new_config_and_pauses_when_drained() {
    let w = region();
    let config = w.config(&w.pool("fast", 1, 1));
    let mut r = w.reconciler(config.clone());
    let (config_tx, config_rx) = watch::channel(Arc::new(config.clone()));
    let (count, mut counted) = watch::channel((0u64, 0u64));
    let mut observer = Passes { count, last: None };
    let now = tokio::sync::Notify::new();
    let stop = tokio_util::sync::CancellationToken::new();
    let started = tokio::time::Instant::now();
    let driver = async {
        let mut wait_passes = async |n: u64| {
            counted.wait_for(|(p, _)| *p >= n).await.expect("loop alive");
        };
        wait_passes(1).await;
        assert_eq!(w.node_enis().len(), 1, "the first pass warms");
        // Periodic: drift made now is repaired by the next pass, a reconcile interval later.
        let eni = w.node_enis().remove(0).id;
        w.ec2.edit(&eni, |e| e.description = Some("edited by hand".into()));
        wait_passes(2).await;
        assert!(started.elapsed() >= (60 * SECOND).mul_f64(1.0 - JITTER), "the second pass waited for the interval");
        assert_eq!(w.ec2.enis()[0].description.as_deref(), Some("fast pool"));
        // On demand: at once.
        let before = tokio::time::Instant::now();
        w.ec2.edit(&eni, |e| e.description = Some("edited again".into()));
        now.notify_one();
        wait_passes(3).await;
        assert!(before.elapsed() < 60 * SECOND, "asked for, not waited for");
        assert_eq!(w.ec2.enis()[0].description.as_deref(), Some("fast pool"));
        // A new configuration: at once, and under it.
        let before = tokio::time::Instant::now();
        config_tx.send(Arc::new(w.config(&w.pool("fast", 2, 1)))).expect("send");
        wait_passes(4).await;
        assert!(before.elapsed() < 60 * SECOND, "a new configuration is not waited for");
        assert_eq!(w.node_enis().len(), 2, "grown by the new configuration");
        // Drained: the loop turns but leaves the pool alone.
        std::fs::write(w.state.path().join(DRAIN_MARKER), b"drain").expect("marker");
        now.notify_one();
        counted.wait_for(|(_, paused)| *paused >= 1).await.expect("loop alive");
        stop.cancel();
    };
    tokio::join!(r.run(config_rx, &now, &stop, LoopSettings::default(), &mut observer), driver);
    assert_eq!(counted.borrow().0, 4, "no pass while drained");
    assert!(observer.last.expect("a pass").is_ok());
}

#[tokio::test(start_paused = true)]
async fn a_label_change_in_the_configuration_warms_and_drains_selected_pools_at_once() {
    let w = region();
    let selected = |name: &str, index: u32, role: &str| {
        w.pool(name, 1, index).replace("description:", &format!("nodeSelector: {{role: {role}}}, description:"))
    };
    let mut config = w.config(&(selected("upf", 1, "upf") + &selected("smf", 2, "smf")));
    config.node.labels = [("role".to_string(), "upf".to_string())].into();
    let mut r = w.reconciler(config.clone());
    r.reconcile().await.expect("warm");
    let pools = |r: &Reconciler<Arc<FakeEc2>, NamedNetdevs>| -> BTreeSet<String> {
        w.state(r).enis.iter().filter(|e| e.lifecycle == Lifecycle::Ready).map(|e| e.pool.clone()).collect()
    };
    assert_eq!(pools(&r), ["upf".to_string()].into(), "only the pool the labels select");

    // A pod holds the upf ENI; the node is relabelled: smf warms, upf drains but stays with its pod.
    let held = r
        .store
        .update(SECOND, |s: &mut NodeState| {
            let e = s.enis.iter_mut().find(|e| e.pool == "upf").expect("upf ENI");
            e.allocation = Some(pod_1());
            Ok::<_, StoreError>(e.eni_id.clone().expect("id"))
        })
        .expect("claim");
    config.node.labels = [("role".to_string(), "smf".to_string())].into();
    r.config = config;
    let report = r.reconcile().await.expect("relabelled");
    assert_eq!(report.created.len(), 1, "{report:?}");
    assert_eq!(report.draining, std::slice::from_ref(&held), "{report:?}");
    assert_eq!(pools(&r), ["smf".to_string()].into());
    let state = w.state(&r);
    let rec = state.eni(&held).expect("the held ENI's record");
    assert_eq!((rec.lifecycle, rec.allocation.is_some()), (Lifecycle::Draining, true));
    assert!(w.node_enis().iter().any(|e| e.id == held), "the pod keeps its ENI until it lets go");
}

/// When each pass ended and whether it changed anything.
struct Timeline {
    passes: watch::Sender<Vec<(tokio::time::Instant, bool)>>,
}

impl PassObserver for Timeline {
    fn pass_done(&mut self, _config: &PoolConfig, result: &Result<Report, PoolError>, _took: Duration) {
        let changed = result.as_ref().map_or(true, |r| r.changed_anything());
        self.passes.send_modify(|p| p.push((tokio::time::Instant::now(), changed)));
    }
}

/// While nothing changes the wait between passes doubles up to `idleIntervalMaxSeconds` (each
/// jittered), an idle pass asks EC2 one thing — the listing of the node's ENIs — and a pass that
/// repairs drift brings the interval back.
#[tokio::test(start_paused = true)]
async fn an_idle_pool_backs_off_to_its_ceiling_and_lists_only_its_enis() {
    let w = region();
    let text = w.config(&w.pool("fast", 2, 1));
    let config = PoolConfig { idle_interval_max_secs: 600, ..text };
    let mut r = w.reconciler(config.clone());
    let (_config_tx, config_rx) = watch::channel(Arc::new(config));
    let (passes, mut seen) = watch::channel(Vec::new());
    let mut observer = Timeline { passes };
    let (now, stop) = (tokio::sync::Notify::new(), tokio_util::sync::CancellationToken::new());
    let lookups = ["DescribeSubnets", "DescribeSecurityGroups", "DescribeInstanceTypes", "DescribeInstances"];
    let driver = async {
        seen.wait_for(|p| p.len() >= 2).await.expect("loop alive");
        let before: Vec<u64> = lookups.iter().map(|op| w.ec2.calls(op)).collect();
        let listings = w.ec2.calls("DescribeNetworkInterfaces");
        // Passes 2..=8 are idle: the waits after them double from 60 s to the 600 s ceiling.
        seen.wait_for(|p| p.len() >= 8).await.expect("loop alive");
        let after: Vec<u64> = lookups.iter().map(|op| w.ec2.calls(op)).collect();
        assert_eq!(before, after, "idle passes look nothing up again ({lookups:?})");
        assert_eq!(w.ec2.calls("DescribeNetworkInterfaces") - listings, 6, "one listing per idle pass");
        // Drift: the next pass (at most the ceiling later) repairs it, and the wait is short again.
        let eni = w.node_enis().remove(0).id;
        w.ec2.edit(&eni, |e| e.description = Some("edited by hand".into()));
        seen.wait_for(|p| p.len() >= 10).await.expect("loop alive");
        stop.cancel();
    };
    // Leak checks list too: none in this test's span of time.
    let settings = LoopSettings { leak_check_every: Duration::from_secs(86_400) };
    tokio::join!(r.run(config_rx, &now, &stop, settings, &mut observer), driver);
    let timeline = seen.borrow().clone();
    let gaps: Vec<f64> = timeline.windows(2).map(|p| (p[1].0 - p[0].0).as_secs_f64()).collect();
    let changed: Vec<bool> = timeline.iter().map(|(_, c)| *c).collect();
    assert_eq!(changed[..9], [true, false, false, false, false, false, false, false, true], "{changed:?}");
    // After the warm-up pass (it changed things) the interval; then a doubling per idle pass.
    let expected = [60.0, 120.0, 240.0, 480.0, 600.0, 600.0, 600.0];
    for (i, (gap, want)) in gaps.iter().zip(expected).enumerate() {
        assert!((gap - want).abs() <= want * JITTER + 1.0, "wait {i}: {gap:.1} s, expected {want} s ±10%: {gaps:?}");
    }
    assert!((gaps[8] - 60.0).abs() <= 60.0 * JITTER + 1.0, "after the repair the interval is back: {gaps:?}");
}

/// The instance's device indexes are kept between passes but described again before any attach:
/// an index another tool took since is refused, not attached into.
#[tokio::test(start_paused = true)]
async fn the_instance_is_described_again_before_an_attach() {
    let w = region();
    let mut r = w.reconciler(w.config(&w.pool("fast", 1, 1)));
    r.reconcile().await.expect("warm");
    r.reconcile().await.expect("idle");
    let described = w.ec2.calls("DescribeInstances");
    r.reconcile().await.expect("idle");
    assert_eq!(w.ec2.calls("DescribeInstances"), described, "an idle pass plans from the kept instance");
    // Another tool attaches at index 2; the pool then grows to index 2.
    let theirs = w.ec2.create_outside(&w.subnet_a, Default::default());
    w.ec2.attach_outside(&theirs, &w.instance, 2);
    r.config = w.config(&w.pool("fast", 2, 1));
    let report = r.reconcile().await.expect("pass");
    assert_eq!(w.ec2.calls("DescribeInstances"), described + 1, "described again for the attach");
    assert_eq!(w.ec2.calls("AttachNetworkInterface"), 1, "no attach into the taken index");
    assert!(report.refused.iter().any(|m| m.contains("device index 2 is taken")), "{report:?}");
}

/// A pass that fails the same way every time (here a create EC2 refuses as a bad parameter, as it
/// would at the account's ENI quota) backs off like an idle one, and a pass that works again brings
/// the interval back.
#[tokio::test(start_paused = true)]
async fn a_pass_failing_the_same_way_backs_off() {
    let w = region();
    let config = PoolConfig { idle_interval_max_secs: 600, ..w.config(&w.pool("fast", 1, 1)) };
    let refused = nodeeni_ipam::ec2::Ec2Error {
        code: Some("NetworkInterfaceLimitExceeded".into()),
        message: "quota".into(),
        status: Some(400),
        no_response: false,
    };
    w.ec2.fail("CreateNetworkInterface", 0, 5, Fault::Error(refused));
    let mut r = w.reconciler(config.clone());
    let (_config_tx, config_rx) = watch::channel(Arc::new(config));
    let (passes, mut seen) = watch::channel(Vec::new());
    let mut observer = Timeline { passes };
    let (now, stop) = (tokio::sync::Notify::new(), tokio_util::sync::CancellationToken::new());
    let settings = LoopSettings { leak_check_every: Duration::from_secs(86_400) };
    let driver = async {
        // Five failing passes, then the sixth creates the ENI, then one idle pass.
        seen.wait_for(|p| p.len() >= 7).await.expect("loop alive");
        stop.cancel();
    };
    tokio::join!(r.run(config_rx, &now, &stop, settings, &mut observer), driver);
    let timeline = seen.borrow().clone();
    let gaps: Vec<f64> = timeline.windows(2).map(|p| (p[1].0 - p[0].0).as_secs_f64()).collect();
    // After the first failure the interval; each repeat of it doubles the wait; the pass that
    // worked (it changed things) brings the interval back.
    let expected = [60.0, 120.0, 240.0, 480.0, 600.0, 60.0];
    for (i, (gap, want)) in gaps.iter().zip(expected).enumerate() {
        assert!((gap - want).abs() <= want * JITTER + 1.0, "wait {i}: {gap:.1} s, expected {want} s: {gaps:?}");
    }
    assert_eq!(w.node_enis().len(), 1, "the sixth pass created it");
}

#[tokio::test(start_paused = true)]
async fn source_dest_check_costs_one_call_at_create_and_one_per_drift() {
    let w = region();
    let routing = w.pool("upf", 2, 1).replace("description: upf pool", "description: upf pool, sourceDestCheck: false");
    let r = w.reconciler(w.config(&routing));
    let warm = r.reconcile().await.expect("warm");
    assert!(warm.repaired.is_empty(), "set at create, not drift: {warm:?}");
    w.assert_converged(&r, 2, "warm");
    assert!(w.node_enis().iter().all(|e| e.source_dest_check == Some(false)), "{:#?}", w.node_enis());
    // DeleteOnTermination and the check: two modifies per new ENI.
    assert_eq!(w.ec2.calls("ModifyNetworkInterfaceAttribute"), 4);
    let again = r.reconcile().await.expect("again");
    assert!(!again.changed_anything(), "{again:?}");
    assert_eq!(w.ec2.calls("ModifyNetworkInterfaceAttribute"), 4, "kept: no further call");
    let eni = w.node_enis()[0].id.clone();
    w.ec2.edit(&eni, |e| e.source_dest_check = Some(true));
    let repaired = r.reconcile().await.expect("repair");
    assert_eq!(repaired.repaired, [format!("{eni}: source/destination check reset")], "{repaired:?}");
    assert_eq!(w.ec2.calls("ModifyNetworkInterfaceAttribute"), 5);
    let state = w.state(&r);
    assert!(state.enis.iter().all(|e| e.source_dest_check == Some(false)), "{state:#?}");
}

#[tokio::test(start_paused = true)]
async fn a_source_dest_check_ec2_already_has_costs_no_call() {
    let w = region();
    let on = w.pool("plain", 2, 1).replace("description: plain pool", "description: plain pool, sourceDestCheck: true");
    let r = w.reconciler(w.config(&on));
    let warm = r.reconcile().await.expect("warm");
    w.assert_converged(&r, 2, "warm");
    assert!(warm.repaired.is_empty(), "{warm:?}");
    assert_eq!(w.ec2.calls("ModifyNetworkInterfaceAttribute"), 2, "DeleteOnTermination only: new ENIs have it on");
}

#[tokio::test(start_paused = true)]
async fn a_pool_that_starts_asking_for_the_check_off_is_changed_not_reported_as_drift() {
    let w = region();
    let plain = w.pool("upf", 2, 1);
    let r = w.reconciler(w.config(&plain));
    r.reconcile().await.expect("warm");
    assert!(w.node_enis().iter().all(|e| e.source_dest_check == Some(true)), "EC2's default");
    let before = w.ec2.calls("ModifyNetworkInterfaceAttribute");
    let routing = plain.replace("description: upf pool", "description: upf pool, sourceDestCheck: false");
    let r = w.reconciler(w.config(&routing));
    let changed = r.reconcile().await.expect("config change");
    assert!(changed.repaired.is_empty(), "a new setting, not drift: {changed:?}");
    assert!(w.node_enis().iter().all(|e| e.source_dest_check == Some(false)), "{:#?}", w.node_enis());
    assert_eq!(w.ec2.calls("ModifyNetworkInterfaceAttribute") - before, 2, "one call per ENI");
}
