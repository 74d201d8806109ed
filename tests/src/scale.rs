//! A cluster's nodes against one account in virtual time: each node runs the real pool loop
//! (reconcile, resilience layer, node state in its own folder) with its own EC2 client, against one
//! [`FakeEc2`] account. `bench-scale` measures it at 100 to 5000 nodes; tests check its behaviour
//! on a small crowded account.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use nodeeni_conf::PoolConfig;
use nodeeni_conf::load::LoadOptions;
use nodeeni_ipam::ec2::InstanceLimits;
use nodeeni_ipam::identity::NodeIdentity;
use nodeeni_ipam::reconcile::{LoopSettings, PassObserver, PoolError, Reconciler, Report};
use nodeeni_ipam::store::{Lifecycle, NodeStore};
use tokio::sync::watch;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::fake_ec2::{AccountLimits, FakeEc2};
use crate::fake_host::NamedNetdevs;

pub const INSTANCE_TYPE: &str = "c5.4xlarge";
pub const AZ: &str = "us-east-1a";

/// A node's configuration: one pool of `enis` ENIs in `subnet`.
pub fn config(state_dir: &Path, subnet: &str, enis: u32) -> PoolConfig {
    let text = format!(
        "clusterName: scale\nstateDir: {}\npools:\n  - {{name: upf, mode: kernel, resourceName: nodeeni.io/upf, \
         subnetIds: [{subnet}], securityGroupNames: [enis], enisPerSubnet: {enis}, description: upf pool}}\n",
        state_dir.display()
    );
    PoolConfig::from_text(&text, &LoadOptions::default()).unwrap_or_else(|e| panic!("{e}\n{text}"))
}

/// An account with a subnet, a security group and the nodes' instance type; with `limits`, its
/// request buckets, latencies in the range EC2's answers take, and listings lagging new ENIs by 5 s.
pub fn account(limits: Option<AccountLimits>) -> (Arc<FakeEc2>, String) {
    let ec2 = Arc::new(FakeEc2::new(&Default::default()));
    ec2.add_instance_type(INSTANCE_TYPE, InstanceLimits::one_card(8, 30));
    let subnet = ec2.add_subnet("10.0.0.0/16", AZ, Some("user-plane")).to_string();
    ec2.add_security_group("enis");
    if let Some(limits) = limits {
        ec2.set_account_limits(limits);
        let ms = Duration::from_millis;
        for (op, low, high) in [
            ("CreateNetworkInterface", 300, 900),
            ("AttachNetworkInterface", 200, 600),
            ("ModifyNetworkInterfaceAttribute", 100, 300),
            ("DeleteNetworkInterface", 200, 600),
            ("DetachNetworkInterface", 200, 600),
            ("DescribeNetworkInterfaces", 50, 250),
            ("DescribeInstances", 50, 250),
            ("DescribeInstanceTypes", 50, 150),
            ("DescribeSubnets", 50, 150),
            ("DescribeSecurityGroups", 50, 150),
        ] {
            ec2.set_latency_range(op, ms(low), ms(high));
        }
        ec2.set_listing_lag(Duration::from_secs(5));
    }
    (ec2, subnet)
}

/// Tells when a node first has every ENI of its pool Ready, and counts failed passes.
struct Converged {
    store: NodeStore,
    enis: usize,
    done: Option<Instant>,
    failed_passes: u64,
    news: watch::Sender<usize>,
}

impl PassObserver for Converged {
    fn pass_done(&mut self, _config: &PoolConfig, result: &Result<Report, PoolError>, _took: Duration) {
        if result.is_err() {
            self.failed_passes += 1;
        }
        if self.done.is_some() || !result.as_ref().is_ok_and(|r| r.refused.is_empty()) {
            return;
        }
        let Ok(state) = self.store.load(Duration::from_secs(1)) else { return };
        if state.enis.len() == self.enis && state.enis.iter().all(|r| r.lifecycle == Lifecycle::Ready) {
            self.done = Some(Instant::now());
            self.news.send_modify(|n| *n += 1);
        }
    }
}

/// What to simulate.
#[derive(Debug, Clone)]
pub struct Cluster {
    pub nodes: usize,
    pub enis_per_node: u32,
    /// Nodes start evenly over this window, each a little early or late.
    pub boot_window: Duration,
    /// The account's buckets (None: unlimited, instant answers).
    pub limits: Option<AccountLimits>,
    /// After convergence: wait this long (the idle back-off reaching its ceiling), then count
    /// describes for the second duration.
    pub steady: Option<(Duration, Duration)>,
    /// Where the nodes' state folders go.
    pub scratch: PathBuf,
}

/// What a run measured.
#[derive(Debug, Clone)]
pub struct ClusterRun {
    /// From the start until every node had its ENIs.
    pub converged: Duration,
    /// Each node's wait from its boot until it had its ENIs, sorted.
    pub waits: Vec<Duration>,
    /// (op, calls, throttled) until convergence.
    pub by_op: Vec<(&'static str, u64, u64)>,
    /// Describes per second at steady state (0 without `steady`).
    pub steady_describes_per_second: f64,
    /// Passes that ended in an error, over all nodes.
    pub failed_passes: u64,
    /// The account, as the run left it.
    pub ec2: Arc<FakeEc2>,
}

impl ClusterRun {
    pub fn calls(&self) -> u64 {
        self.by_op.iter().map(|(_, n, _)| n).sum()
    }
    pub fn throttled(&self) -> u64 {
        self.by_op.iter().map(|(_, _, t)| t).sum()
    }
}

/// Runs `spec` on the current runtime (meant for a paused clock) until every node converged, then
/// stops every node's loop.
pub async fn run(spec: &Cluster) -> ClusterRun {
    let (ec2, subnet) = account(spec.limits.clone());
    let (news, mut converged_count) = watch::channel(0usize);
    let stop = CancellationToken::new();
    let start = Instant::now();
    let waits = Arc::new(Mutex::new(Vec::new()));
    let failed = Arc::new(Mutex::new(0u64));
    let mut tasks = Vec::new();
    for i in 0..spec.nodes {
        let instance = ec2.add_instance(INSTANCE_TYPE, AZ);
        let config = config(&spec.scratch.join(format!("node-{i}")), &subnet, spec.enis_per_node);
        let client = Arc::new(ec2.client(&config.ec2));
        let node =
            NodeIdentity { instance_id: instance, availability_zone: AZ.into(), instance_type: INSTANCE_TYPE.into() };
        let mut pool = Reconciler::new(client, NamedNetdevs, config.clone(), node);
        let mut observer = Converged {
            store: pool.store.clone(),
            enis: spec.enis_per_node as usize,
            done: None,
            failed_passes: 0,
            news: news.clone(),
        };
        let (stop, waits, failed) = (stop.clone(), waits.clone(), failed.clone());
        let boot = if spec.nodes > 1 {
            spec.boot_window.mul_f64((i as f64 + fastrand::f64()) / spec.nodes as f64)
        } else {
            Duration::ZERO
        };
        tasks.push(tokio::spawn(async move {
            tokio::time::sleep(boot).await;
            let booted = Instant::now();
            let (_tx, configs) = watch::channel(Arc::new(config));
            let settings = LoopSettings { leak_check_every: Duration::from_secs(3600) };
            pool.run(configs, &tokio::sync::Notify::new(), &stop, settings, &mut observer).await;
            if let Some(done) = observer.done {
                waits.lock().expect("waits").push(done - booted);
            }
            *failed.lock().expect("failed") += observer.failed_passes;
        }));
    }
    converged_count.wait_for(|n| *n >= spec.nodes).await.expect("nodes alive");
    let converged = start.elapsed();
    let (calls, throttled) = ec2.call_counts();
    let by_op = calls.iter().map(|(op, n)| (*op, *n, throttled.get(op).copied().unwrap_or(0))).collect();
    let mut steady_describes_per_second = 0.0;
    if let Some((settle, window)) = spec.steady {
        let limits = spec.limits.clone().unwrap_or_else(AccountLimits::published);
        tokio::time::sleep(settle).await;
        let describes = |c: &std::collections::BTreeMap<&'static str, u64>| -> u64 {
            c.iter().filter(|(op, _)| limits.bucket_of(op).is_some_and(|(b, _)| b == "describe")).map(|(_, n)| n).sum()
        };
        let before = describes(&ec2.call_counts().0);
        tokio::time::sleep(window).await;
        let after = describes(&ec2.call_counts().0);
        steady_describes_per_second = (after - before) as f64 / window.as_secs_f64();
    }
    stop.cancel();
    for t in tasks {
        t.await.expect("node task");
    }
    let mut waits = waits.lock().expect("waits").clone();
    waits.sort();
    let failed_passes = *failed.lock().expect("failed");
    ClusterRun { converged, waits, by_op, steady_describes_per_second, failed_passes, ec2 }
}
