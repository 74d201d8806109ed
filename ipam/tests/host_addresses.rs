//! Addresses kept on host ENIs for `nodeeni-ipam` (warmIpTarget, maxIpsPerEni, the cool-down),
//! against the in-memory EC2: what the node state records is what EC2 has, held addresses are never
//! returned, intents survive a crash, and an ENI whose addresses pods hold drains.

use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use nodeeni_conf::load::LoadOptions;
use nodeeni_conf::{InstanceId, PoolConfig, SubnetId};
use nodeeni_ipam::ec2::{Eni, tags};
use nodeeni_ipam::identity::NodeIdentity;
use nodeeni_ipam::reconcile::Reconciler;
use nodeeni_ipam::store::{EniRecord, IpHold, Lifecycle, NodeState, StoreError, now_unix};
use nodeeni_tests::fake_ec2::{FakeEc2, Fault};
use nodeeni_tests::fake_host::NamedNetdevs;

const SECOND: Duration = Duration::from_secs(1);

struct Region {
    ec2: Arc<FakeEc2>,
    subnet: SubnetId,
    instance: InstanceId,
    state: tempfile::TempDir,
}

fn region() -> Region {
    let ec2 = Arc::new(FakeEc2::new(&Default::default()));
    let subnet = ec2.add_subnet("10.0.2.0/24", "us-east-1a", Some("masters-a"));
    let instance = ec2.add_instance("c5.xlarge", "us-east-1a");
    Region { ec2, subnet, instance, state: tempfile::tempdir().expect("state") }
}

type Pool = Reconciler<Arc<FakeEc2>, NamedNetdevs>;

impl Region {
    fn reconciler(&self, pools: &str) -> Pool {
        let text = format!(
            "clusterName: test\nstateDir: {}\nec2: {{retry: {{baseDelayMs: 10, maxDelayMs: 100}}}}\npools:\n{pools}",
            self.state.path().display()
        );
        let config = PoolConfig::from_text(&text, &LoadOptions::default()).unwrap_or_else(|e| panic!("{e}\n{text}"));
        let node = NodeIdentity {
            instance_id: self.instance.clone(),
            availability_zone: "us-east-1a".into(),
            instance_type: "c5.xlarge".into(),
        };
        Reconciler::new(self.ec2.clone(), NamedNetdevs, config, node)
    }

    fn masters(&self, keep: &str) -> String {
        format!("  - {{name: masters, mode: host, subnetIds: [{}], firstDeviceIndex: 1, {keep}}}\n", self.subnet)
    }

    fn eni(&self) -> Eni {
        let mine: Vec<Eni> = self
            .ec2
            .enis()
            .into_iter()
            .filter(|e| e.tags.get(tags::NODE).map(String::as_str) == Some(self.instance.as_str()))
            .collect();
        assert_eq!(mine.len(), 1, "{mine:?}");
        mine.into_iter().next().expect("one ENI")
    }
}

fn record(r: &Pool) -> EniRecord {
    let state: NodeState = r.store.load(SECOND).expect("state");
    state.enis.into_iter().next().expect("a record")
}

/// As nodeeni-ipam does on ADD: `n` free addresses taken, under the node-state lock.
fn hold(r: &Pool, n: usize, who: &str) -> Vec<IpAddr> {
    hold_from(r, n, who, false)
}

/// The same, taking the last free ones (those a return would pick first).
fn hold_from(r: &Pool, n: usize, who: &str, last: bool) -> Vec<IpAddr> {
    r.store
        .update(SECOND, |s| {
            let rec = &mut s.enis[0];
            let mut free = rec.free_ipv4();
            if last {
                free.reverse();
            }
            let taken: Vec<IpAddr> = free.into_iter().take(n).collect();
            assert_eq!(taken.len(), n, "{n} free to take");
            for (i, ip) in taken.iter().enumerate() {
                rec.ip_holds.push(IpHold {
                    ip: *ip,
                    container_id: format!("{who}-{i}").parse().expect("container"),
                    ifname: "net1".into(),
                    since_unix: now_unix(),
                });
            }
            Ok::<_, StoreError>(taken)
        })
        .expect("hold")
}

fn release_all(r: &Pool) {
    r.store
        .update(SECOND, |s| {
            s.enis[0].ip_holds.clear();
            Ok::<_, StoreError>(())
        })
        .expect("release");
}

/// The record's addresses are EC2's, in any order.
fn assert_recorded_as_ec2_has(region: &Region, r: &Pool, context: &str) {
    let mut ec2: Vec<IpAddr> = region.eni().secondary_ips;
    let mut recorded = record(r).secondary_ips;
    ec2.sort();
    recorded.sort();
    assert_eq!(recorded, ec2, "{context}: the node state records what EC2 has");
}

#[tokio::test]
async fn a_host_pool_keeps_its_warm_addresses_and_returns_extras_after_the_cool_down() {
    let region = region();
    let r = region.reconciler(&region.masters("warmIpTarget: 3, maxIpsPerEni: 5, ipCooldownSeconds: 60"));
    let report = r.reconcile().await.expect("warm up");
    assert_eq!(report.created.len(), 1);
    assert_eq!(region.eni().secondary_ips.len(), 3, "the warm addresses come with the create");
    assert_eq!(region.ec2.calls("AssignPrivateIpAddresses"), 0);
    assert_recorded_as_ec2_has(&region, &r, "after the create");
    assert!(!r.addresses_wanted().expect("look").0, "three free: nothing wanted");

    // Pods take two: one free is below the target; two more come (the cap is 5).
    hold(&r, 2, "a");
    assert!(r.addresses_wanted().expect("look").0, "below the target, room for more");
    let report = r.reconcile().await.expect("refill");
    assert_eq!(report.ips_assigned.len(), 1, "{report:?}");
    assert_eq!(region.eni().secondary_ips.len(), 5);
    assert_recorded_as_ec2_has(&region, &r, "after the refill");

    // All five held: at the cap nothing more is asked, and nothing is wanted (no pass is forced).
    hold(&r, 3, "b");
    let calls = region.ec2.calls("AssignPrivateIpAddresses");
    let report = r.reconcile().await.expect("at the cap");
    assert!(report.ips_assigned.is_empty(), "{report:?}");
    assert_eq!(region.ec2.calls("AssignPrivateIpAddresses"), calls);
    assert!(!r.addresses_wanted().expect("look").0, "maxIpsPerEni reached");

    // The pods go: five free, two above the target. Kept through the cool-down, returned after it.
    release_all(&r);
    let report = r.reconcile().await.expect("surplus seen");
    assert!(report.ips_released.is_empty(), "within the cool-down: {report:?}");
    assert!(record(&r).ip_surplus_since.is_some());
    r.store
        .update(SECOND, |s| {
            s.enis[0].ip_surplus_since = Some(now_unix() - 61);
            Ok::<_, StoreError>(())
        })
        .expect("a minute on");
    // A pod takes one just before the pass (the one a return would pick first): it stays.
    let held = hold_from(&r, 1, "c", true);
    let report = r.reconcile().await.expect("return");
    assert_eq!(report.ips_released.len(), 1, "{report:?}");
    let left = region.eni().secondary_ips;
    assert_eq!(left.len(), 4, "one held + three free: {left:?}");
    assert!(left.contains(&held[0]), "a held address stays on the ENI");
    assert_recorded_as_ec2_has(&region, &r, "after the return");
    assert!(record(&r).ips_releasing.is_empty() && record(&r).ip_surplus_since.is_none());
}

#[tokio::test]
async fn an_interrupted_return_is_finished_after_a_restart() {
    let region = region();
    let pools = region.masters("warmIpTarget: 2, ipCooldownSeconds: 0");
    let r = region.reconciler(&pools);
    r.reconcile().await.expect("warm up");
    hold(&r, 2, "a");
    r.reconcile().await.expect("refill");
    release_all(&r);
    // The daemon marked two for return and died before (or after) the call.
    let before = region.eni().secondary_ips;
    let (marked_only, unassigned_too) = (before[2], before[3]);
    r.store
        .update(SECOND, |s| {
            s.enis[0].ips_releasing = vec![marked_only, unassigned_too];
            Ok::<_, StoreError>(())
        })
        .expect("intent");
    region.ec2.unassign_outside(&region.eni().id, &[unassigned_too]);
    let restarted = region.reconciler(&pools);
    let calls = region.ec2.calls("UnassignPrivateIpAddresses");
    let report = restarted.reconcile().await.expect("after the restart");
    assert_eq!(region.ec2.calls("UnassignPrivateIpAddresses"), calls + 1, "{report:?}");
    let after = region.eni().secondary_ips;
    assert!(!after.contains(&marked_only) && !after.contains(&unassigned_too), "{after:?}");
    assert_recorded_as_ec2_has(&region, &restarted, "after finishing the return");
    assert!(record(&restarted).ips_releasing.is_empty());
}

#[tokio::test]
async fn an_assign_whose_answer_was_lost_is_recorded_from_ec2s_listing() {
    let region = region();
    let pools = region.masters("warmIpTarget: 2, ipCooldownSeconds: 0");
    let r = region.reconciler(&pools);
    r.reconcile().await.expect("warm up");
    hold(&r, 2, "a");
    // EC2 assigns; the answer never comes back, and the retry assigns again.
    region.ec2.fail("AssignPrivateIpAddresses", 0, 1, Fault::LostAnswer);
    let _ = r.reconcile().await;
    let on_ec2 = region.eni().secondary_ips.len();
    assert!(on_ec2 >= 4, "EC2 has the lost call's addresses too: {on_ec2}");
    // The next pass records what EC2 has (none of it unrecorded), and hands extras back.
    r.reconcile().await.expect("next pass");
    r.reconcile().await.expect("extras back");
    assert_recorded_as_ec2_has(&region, &r, "after the lost answer");
    assert_eq!(record(&r).free_ipv4().len(), 2, "the target, no more");
    assert!(record(&r).ips_assigning_since.is_none());
}

#[tokio::test]
async fn a_host_eni_whose_addresses_pods_hold_drains_instead_of_going() {
    let region = region();
    let r = region.reconciler(&region.masters("warmIpTarget: 2"));
    r.reconcile().await.expect("warm up");
    hold(&r, 1, "a");
    let gone = region.reconciler("  []\n");
    let report = gone.reconcile().await.expect("pool removed");
    assert!(report.deleted.is_empty(), "{report:?}");
    assert_eq!(record(&gone).lifecycle, Lifecycle::Draining, "a pod has one of its addresses");
    release_all(&gone);
    let report = gone.reconcile().await.expect("let go");
    assert_eq!(report.deleted.len(), 1, "{report:?}");
}
