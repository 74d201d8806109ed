//! Kernel-mode ADD (from resolving the device on) and DEL against the recording fake
//! (`link_ops::fake`): every step of ADD, and of DEL, is made to fail in turn; the rollback must put the
//! host back exactly, with the right calls, a claim made is released, and a DEL that failed keeps its
//! record so that the next one finishes the job.
//! IPAM is a delegate script in a temp CNI_PATH that logs each command, so IPAM DEL is checked too.

use std::collections::HashMap;
use std::os::unix::fs::PermissionsExt;
use std::path::PathBuf;
use std::sync::Mutex;

use std::time::Duration;

use nodeeni_conf::cni::{CniEnv, CniResult, HandOver, NetConf, NodeSettings};
use nodeeni_conf::net::IpNet;
use nodeeni_conf::pool::DpdkDriver;
use nodeeni_conf::{MacAddr, PciAddress};
use nodeeni_host::netns::NetNs;
use nodeeni_host::pci::PciBus;
use nodeeni_state::attachment::{AttachmentError, AttachmentRecord, DriverBefore, HostLinkState, Phase};
use nodeeni_state::node::Lifecycle;
use nodeeni_tests::sysfs::FakeSysfs;
use serde_json::json;

use super::{Keep, add_in, add_kernel, del, may_collect, network_config, undo_record};
use crate::context::Ctx;
use crate::device::Target;
use crate::error::{PluginError, UndoError};
use crate::link_ops::LinkOps;
use crate::link_ops::fake::{Call, Fake, FakeLink, FakeRoute, Op, Side};

/// The ENI's index; it keeps it across namespaces.
const ETH1: u32 = 7;
const CONTAINER: &str = "c1";
const POD_UID: &str = "uid-1";

/// The steps of a kernel ADD, by their number in [`add_calls`] (from 1).
const CAPTURE: usize = 3;
const DOWN: usize = 4;
const MOVE: usize = 6;
const RENAME: usize = 8;
const MTU: usize = 9;

/// One test at a time: each writes an IPAM script and runs it, and a script being written while
/// another test forks would make its exec fail (ETXTBSY).
static SERIAL: Mutex<()> = Mutex::new(());

fn mac() -> MacAddr {
    "0a:00:00:00:00:11".parse().expect("mac")
}

fn net(s: &str) -> IpNet {
    s.parse().expect("cidr")
}

fn host(op: Op) -> Call {
    Call { side: Side::Host, op }
}

fn pod(op: Op) -> Call {
    Call { side: Side::Pod, op }
}

/// The node before ADD: the ENI up on the host with an address, MTU 1450, no alias.
fn original() -> Vec<FakeLink> {
    let mut lo = FakeLink::new(Side::Host, 1, "lo", None, 65536, true);
    lo.addresses = vec![net("127.0.0.1/8")];
    let mut eth1 = FakeLink::new(Side::Host, ETH1, "eth1", Some(mac()), 1450, true);
    eth1.addresses = vec![net("192.0.2.5/24")];
    vec![lo, eth1, FakeLink::new(Side::Pod, 1, "lo", None, 65536, false)]
}

/// What the delegate IPAM plugin hands out: two addresses and a route through the subnet's gateway.
const IPAM_RESULT: &str = r#"{"cniVersion":"1.0.0","ips":[{"address":"10.0.1.20/24","gateway":"10.0.1.1"},{"address":"10.0.1.21/24"}],"routes":[{"dst":"10.99.0.0/16","gw":"10.0.1.1"}]}"#;

/// Every call of a kernel ADD that succeeds, in order.
fn add_calls() -> Vec<Call> {
    vec![
        pod(Op::LinkByName("net1".into())),
        host(Op::LinksByMac(mac())),
        host(Op::Addresses(ETH1)), // CAPTURE; the record is written after it, then IPAM ADD runs
        host(Op::SetUp(ETH1, false)), // DOWN
        host(Op::SetAlias(ETH1, "eth1".into())),
        host(Op::MoveToNetns(ETH1, Some(Side::Pod))), // MOVE
        pod(Op::LinksByMac(mac())),
        pod(Op::SetName(ETH1, "net1".into())), // RENAME
        pod(Op::SetMtu(ETH1, 1400)),           // MTU
        pod(Op::SetUp(ETH1, true)),
        pod(Op::AddAddress(ETH1, net("10.0.1.20/24"))),
        pod(Op::AddAddress(ETH1, net("10.0.1.21/24"))),
        pod(Op::AddRoute(ETH1, net("10.99.0.0/16"), Some("10.0.1.1".parse().expect("ip")), None)),
        pod(Op::LinkByIndex(ETH1)),
    ]
}

/// The calls that undo an ADD which failed at `step`: find the link by MAC in the pod (only there if
/// the move happened) and bring it home, then restore on the host whatever differs from the record.
fn expected_rollback(step: usize) -> Vec<Call> {
    if step <= CAPTURE {
        return Vec::new(); // nothing changed and nothing recorded yet
    }
    let moved = step > MOVE;
    let mut want = vec![pod(Op::LinksByMac(mac()))];
    if moved {
        want.push(pod(Op::SetUp(ETH1, false)));
        if step > RENAME {
            want.push(pod(Op::SetName(ETH1, "eth1".into())));
        }
        want.push(pod(Op::MoveToNetns(ETH1, Some(Side::Host))));
    }
    want.push(host(Op::LinksByMac(mac())));
    if step > MTU {
        want.push(host(Op::SetMtu(ETH1, 1450)));
    }
    want.push(host(Op::Addresses(ETH1)));
    if moved {
        // The move dropped the host's address.
        want.push(host(Op::AddAddress(ETH1, net("192.0.2.5/24"))));
    }
    want.push(host(Op::SetAlias(ETH1, String::new())));
    if step > DOWN {
        want.push(host(Op::SetUp(ETH1, true)));
    }
    want
}

/// A node, a pod and a state folder, with a fake for both namespaces and a logging IPAM delegate.
struct Bed {
    fake: Fake,
    host_ns: NetNs,
    pod_ns: NetNs,
    bin: PathBuf,
    env: CniEnv,
    conf: NetConf,
    settings: NodeSettings,
    _dir: tempfile::TempDir,
}

impl Bed {
    fn new(links: Vec<FakeLink>) -> Self {
        Self::with(links, json!({}))
    }

    /// A bed whose netconf also has (or has instead) the keys of `extra`.
    fn with(links: Vec<FakeLink>, extra: serde_json::Value) -> Self {
        let dir = tempfile::tempdir().expect("tempdir");
        let bin = dir.path().join("bin");
        std::fs::create_dir(&bin).expect("bin");
        let script = bin.join("fake-ipam");
        std::fs::write(
            &script,
            format!(
                "#!/bin/sh\ncat >/dev/null\ndir=$(dirname \"$0\")\necho \"$CNI_COMMAND\" >> \"$dir/calls\"\n\
                 if [ \"$CNI_COMMAND\" = DEL ] && [ -e \"$dir/fail-del\" ]; then\n\
                 echo '{{\"cniVersion\":\"1.0.0\",\"code\":11,\"msg\":\"lease store busy\"}}'; exit 1\nfi\n\
                 if [ \"$CNI_COMMAND\" = ADD ]; then echo '{IPAM_RESULT}'; fi\n"
            ),
        )
        .expect("script");
        std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o755)).expect("chmod");
        let vars: HashMap<&str, String> = HashMap::from([
            ("CNI_COMMAND", "ADD".to_string()),
            ("CNI_CONTAINERID", CONTAINER.to_string()),
            ("CNI_NETNS", "/proc/self/ns/net".to_string()),
            ("CNI_IFNAME", "net1".to_string()),
            ("CNI_PATH", bin.display().to_string()),
            ("CNI_ARGS", format!("IgnoreUnknown=1;K8S_POD_UID={POD_UID}")),
        ]);
        let env = CniEnv::from_vars(|k| vars.get(k).cloned()).expect("env");
        let mut conf = json!({
            "cniVersion": "1.0.0", "name": "enis", "type": "nodeeni", "device": "eth1", "mtu": 1400,
            "stateDir": dir.path().join("state"), "ipam": {"type": "fake-ipam"},
        });
        if let (Some(conf), Some(extra)) = (conf.as_object_mut(), extra.as_object()) {
            conf.extend(extra.clone());
            // A null in `extra` takes the key out.
            conf.retain(|_, v| !v.is_null());
        }
        let conf = NetConf::parse(conf.to_string().as_bytes()).expect("conf");
        let settings = NodeSettings::resolve(None, &conf).expect("standalone settings");
        // Two handles the fake tells apart by descriptor; the namespace itself is never entered.
        let (host_ns, pod_ns) = (NetNs::current().expect("host ns"), NetNs::current().expect("pod ns"));
        let fake = Fake::new(links);
        fake.name_namespace(Side::Host, &host_ns);
        fake.name_namespace(Side::Pod, &pod_ns);
        Self { fake, host_ns, pod_ns, bin, env, conf, settings, _dir: dir }
    }

    fn ctx(&self) -> Ctx<'_> {
        Ctx::new(&self.env, &self.conf, &self.settings)
    }

    fn add(&self) -> crate::error::Result<CniResult> {
        let target = Target {
            mode: HandOver::Kernel,
            mac: Some(mac()),
            pci: None,
            eni_id: None,
            record: None,
            claimed: false,
            dpdk_driver: DpdkDriver::default(),
        };
        let (mut host, mut pod) = (self.fake.side(Side::Host), self.fake.side(Side::Pod));
        add_kernel(&self.ctx(), &target, &mut host, &mut pod, &self.host_ns, &self.pod_ns)
    }

    /// DEL of the record ADD left, as `del` runs it (undo, release, forget; the record kept when the
    /// undo fails), through the fake. The undo's errors when it fails.
    fn del(&self) -> Result<(), crate::error::UndoErrors> {
        let record = self.record().expect("a record to undo");
        let sides = |_: &AttachmentRecord| {
            let host_ns = NetNs::current().expect("host ns");
            self.fake.name_namespace(Side::Host, &host_ns);
            Ok((host_ns, self.fake.side(Side::Host), Some(self.fake.side(Side::Pod))))
        };
        match super::undo_locked_in(&self.ctx(), &record, sides) {
            Ok(()) => {
                assert_eq!(self.record(), None, "an undone attachment is forgotten");
                Ok(())
            }
            Err(PluginError::Cleanup(undo)) => {
                assert_eq!(self.record(), Some(record), "a failed undo keeps the record for the next DEL");
                Err(undo)
            }
            Err(e) => panic!("DEL failed outside the undo: {e}"),
        }
    }

    fn record(&self) -> Option<AttachmentRecord> {
        let ctx = self.ctx();
        let (container, ifname) = ctx.attachment_key().expect("key");
        ctx.attachments.load(container, ifname).expect("readable record")
    }

    fn ipam_calls(&self) -> Vec<String> {
        std::fs::read_to_string(self.bin.join("calls")).unwrap_or_default().lines().map(str::to_string).collect()
    }

    fn fail_ipam_del(&self, fail: bool) {
        let marker = self.bin.join("fail-del");
        if fail {
            std::fs::write(marker, b"").expect("marker");
        } else {
            std::fs::remove_file(marker).expect("marker");
        }
    }
}

#[test]
fn a_kernel_add_moves_the_link_in_and_del_puts_it_back_exactly() {
    let _one = SERIAL.lock().unwrap_or_else(|p| p.into_inner());
    let bed = Bed::new(original());
    let result = bed.add().expect("ADD");
    assert_eq!(bed.fake.calls(), add_calls());
    assert_eq!(result.interfaces[0].name, "net1");
    assert_eq!(result.interfaces[0].mac.as_deref(), Some("0a:00:00:00:00:11"));
    assert_eq!(result.interfaces[0].sandbox, Some(bed.pod_ns.path().display().to_string()));
    assert_eq!(result.ips.len(), 2);

    let mut in_pod = FakeLink::new(Side::Pod, ETH1, "net1", Some(mac()), 1400, true);
    in_pod.alias = Some("eth1".into());
    in_pod.addresses = vec![net("10.0.1.20/24"), net("10.0.1.21/24")];
    in_pod.routes = vec![FakeRoute { dst: net("10.99.0.0/16"), gw: Some("10.0.1.1".parse().expect("ip")), mtu: None }];
    let mut after = original();
    after.remove(1);
    after.push(in_pod);
    assert_eq!(bed.fake.links(), after);

    let record = bed.record().expect("record");
    assert_eq!(record.phase, Phase::Added);
    let captured = record.host.clone().expect("host state");
    assert!(captured.ifindex.is_some(), "the ENI's ifindex is recorded, to tell it from look-alikes at DEL");
    assert_eq!(
        HostLinkState { ifindex: None, ..captured },
        HostLinkState {
            name: "eth1".into(),
            mtu: 1450,
            up: true,
            addresses: vec![net("192.0.2.5/24")],
            alias: None,
            ifindex: None,
        }
    );

    let before_del = bed.fake.calls().len();
    bed.del().expect("DEL");
    assert_eq!(
        bed.fake.calls()[before_del..],
        [
            pod(Op::LinksByMac(mac())),
            pod(Op::SetUp(ETH1, false)),
            pod(Op::SetName(ETH1, "eth1".into())),
            pod(Op::MoveToNetns(ETH1, Some(Side::Host))),
            host(Op::LinksByMac(mac())),
            host(Op::SetMtu(ETH1, 1450)),
            host(Op::Addresses(ETH1)),
            host(Op::AddAddress(ETH1, net("192.0.2.5/24"))),
            host(Op::SetAlias(ETH1, String::new())),
            host(Op::SetUp(ETH1, true)),
        ]
    );
    assert_eq!(bed.fake.links(), original(), "name, MTU, up, alias, addresses and namespace restored");
    assert_eq!(bed.ipam_calls(), ["ADD", "DEL"]);
}

#[test]
fn check_finds_what_add_left_and_reports_what_changed_since() {
    let _one = SERIAL.lock().unwrap_or_else(|p| p.into_inner());
    let bed = Bed::new(original());
    let result = bed.add().expect("ADD");
    let mut pod_side = bed.fake.side(Side::Pod);
    crate::kernel::verify(&mut pod_side, "net1", &result).expect("as ADD left it");
    // Down drops its routes (the kernel's rule, kept by the fake); up again, the route stays missing.
    pod_side.set_up(ETH1, false).expect("down");
    let down = crate::kernel::verify(&mut pod_side, "net1", &result).expect_err("down");
    assert!(down.to_string().contains("net1: is down"), "{down}");
    pod_side.set_up(ETH1, true).expect("up");
    let no_route = crate::kernel::verify(&mut pod_side, "net1", &result).expect_err("route gone");
    assert!(no_route.to_string().contains("route to 10.99.0.0/16 is missing"), "{no_route}");
    let gone = crate::kernel::verify(&mut pod_side, "net2", &result).expect_err("no such interface");
    assert!(gone.to_string().contains("missing from the pod"), "{gone}");
}

#[test]
fn every_step_of_a_kernel_add_that_fails_is_rolled_back_exactly() {
    let _one = SERIAL.lock().unwrap_or_else(|p| p.into_inner());
    let all = add_calls();
    for step in 1..=all.len() {
        let bed = Bed::new(original());
        bed.fake.fail_call(step);
        let failing = &all[step - 1];
        let err = bed.add().expect_err("the step fails");
        assert!(matches!(err, PluginError::Netlink(_)), "step {step} {failing:?}: rolled back cleanly, got {err}");
        assert_eq!(err.to_cni().code, 102, "step {step}");
        assert!(err.to_string().contains("injected failure"), "step {step}: {err}");

        let calls = bed.fake.calls();
        assert_eq!(calls[..step], all[..step], "step {step}: ADD stopped at the failing step");
        assert_eq!(calls[step..], expected_rollback(step)[..], "step {step} {failing:?}: the rollback's calls");
        assert_eq!(bed.fake.links(), original(), "step {step} {failing:?}: the node as it was");
        assert_eq!(bed.record(), None, "step {step}: the record is forgotten once undone");
        let ipam: &[&str] = if step <= CAPTURE { &[] } else { &["ADD", "DEL"] };
        assert_eq!(bed.ipam_calls(), ipam, "step {step}: IPAM released whenever it was asked");
    }
}

#[test]
fn every_step_rolls_back_a_link_that_was_down_with_an_alias() {
    let _one = SERIAL.lock().unwrap_or_else(|p| p.into_inner());
    let mut links = original();
    links[1].up = false;
    links[1].alias = Some("uplink".into());
    links[1].addresses.clear();
    let steps = {
        let bed = Bed::new(links.clone());
        bed.add().expect("ADD");
        assert!(!bed.fake.calls().contains(&host(Op::SetUp(ETH1, false))), "a down link is not taken down");
        bed.del().expect("DEL");
        assert_eq!(bed.fake.links(), links);
        add_calls().len() - 1
    };
    for step in 1..=steps {
        let bed = Bed::new(links.clone());
        bed.fake.fail_call(step);
        bed.add().expect_err("the step fails");
        assert_eq!(bed.fake.links(), links, "step {step}: down, alias uplink, no address, on the host");
        assert_eq!(bed.record(), None, "step {step}");
    }
}

#[test]
fn a_rollback_that_fails_keeps_going_and_reports_every_failed_step() {
    let _one = SERIAL.lock().unwrap_or_else(|p| p.into_inner());
    let bed = Bed::new(original());
    let route = add_calls().len() - 1;
    bed.fake.fail_call(route);
    // The rollback's move home fails: pod LinksByMac, SetUp, SetName, then MoveToNetns.
    bed.fake.fail_call(route + 4);
    bed.fail_ipam_del(true);
    let err = bed.add().expect_err("ADD fails");
    let PluginError::UndoFailed { error, undo } = &err else { panic!("expected UndoFailed, got {err}") };
    assert!(matches!(**error, PluginError::Netlink(_)), "{error}");
    let steps: Vec<&UndoError> = undo.iter().collect();
    assert!(matches!(steps[..], [UndoError::MoveOut(_), UndoError::IpamDel(_)]), "{undo}");
    let cni = err.to_cni();
    assert_eq!(cni.code, 102, "the failed step's code");
    assert!(
        cni.msg.contains("undoing it also failed: moving it out of the pod: ")
            && cni.msg.contains("; releasing its addresses: IPAM plugin fake-ipam: lease store busy"),
        "{}",
        cni.msg
    );
    // Restoring on the host was tried too: the link was not there (still in the pod).
    assert!(bed.fake.calls()[route + 4..].contains(&host(Op::LinksByMac(mac()))));
    let record = bed.record().expect("the record stays for DEL to retry");
    assert_eq!(record.phase, Phase::Adding);

    bed.fail_ipam_del(false);
    bed.del().expect("DEL retried");
    assert_eq!(bed.fake.links(), original());
}

#[test]
fn a_del_whose_restore_fails_is_a_cleanup_error_and_can_be_retried() {
    let _one = SERIAL.lock().unwrap_or_else(|p| p.into_inner());
    let bed = Bed::new(original());
    bed.add().expect("ADD");
    // DEL: pod LinksByMac, SetUp, SetName, MoveToNetns, host LinksByMac, SetMtu <- fails.
    bed.fake.fail_call(add_calls().len() + 6);
    let undo = bed.del().expect_err("restore fails");
    assert!(matches!(undo.iter().collect::<Vec<_>>()[..], [UndoError::RestoreOnHost(_)]), "{undo}");
    let cni = PluginError::Cleanup(undo).to_cni();
    assert_eq!(cni.code, 108);
    assert!(cni.msg.starts_with("cleanup failed: restoring it on the host: SetMtu(7, 1450)"), "{}", cni.msg);
    assert_eq!(bed.ipam_calls(), ["ADD", "DEL"], "IPAM released all the same");
    assert!(bed.fake.links().iter().any(|l| l.side == Side::Host && l.name == "eth1"), "home, not yet restored");

    bed.del().expect("DEL retried");
    assert_eq!(bed.fake.links(), original());
}

#[test]
fn every_step_of_a_del_that_fails_is_reported_and_a_retried_del_restores_the_node() {
    let _one = SERIAL.lock().unwrap_or_else(|p| p.into_inner());
    let added = add_calls().len();
    let del_steps = {
        let bed = Bed::new(original());
        bed.add().expect("ADD");
        bed.del().expect("DEL");
        bed.fake.calls().len() - added
    };
    assert_eq!(del_steps, 10, "pod LinksByMac, SetUp, SetName, MoveToNetns, then six host steps");
    for step in 1..=del_steps {
        let bed = Bed::new(original());
        bed.add().expect("ADD");
        bed.fake.fail_call(added + step);
        let failing = bed.fake.calls().len();
        let undo = bed.del().expect_err("the step fails");
        let failing_op = &bed.fake.calls()[failing];
        let steps: Vec<&UndoError> = undo.iter().collect();
        if step <= 4 {
            // Still in the pod: moving it out failed, and the host has nothing to restore yet.
            assert!(matches!(steps[..], [UndoError::MoveOut(_)]), "step {step} {failing_op:?}: {undo}");
        } else {
            assert!(matches!(steps[..], [UndoError::RestoreOnHost(_)]), "step {step} {failing_op:?}: {undo}");
        }
        assert_eq!(bed.ipam_calls(), ["ADD", "DEL"], "step {step}: IPAM released even so");
        assert_ne!(bed.fake.links(), original(), "step {step} {failing_op:?}: the node not yet as it was");

        bed.del().expect("DEL retried");
        assert_eq!(bed.fake.links(), original(), "step {step} {failing_op:?}: a retried DEL restores the node");
    }
}

#[test]
fn every_call_on_one_device_shares_a_lock_whichever_mode_or_identity_it_knows() {
    let pci: PciAddress = PCI.parse().expect("pci");
    let eni: nodeeni_conf::EniId = ENI.parse().expect("id");
    // Kernel ADD (MAC and PCI known), DPDK ADD of the same device by PCI address (no netdev, no MAC),
    // and a kernel DEL whose record kept only the MAC (the kernel did not vouch for the PCI device).
    let kernel_add = crate::device::lock_keys(Some(mac()), Some(pci), Some(&eni));
    let dpdk_add = crate::device::lock_keys(None, Some(pci), Some(&eni));
    let kernel_del = crate::device::lock_keys(Some(mac()), None, None);
    let shares = |a: &[String], b: &[String]| a.iter().any(|k| b.contains(k));
    assert!(shares(&kernel_add, &dpdk_add), "{kernel_add:?} / {dpdk_add:?}");
    assert!(shares(&kernel_add, &kernel_del), "{kernel_add:?} / {kernel_del:?}");
    let mut sorted = kernel_add.clone();
    sorted.sort();
    assert_eq!(kernel_add, sorted, "one order for everyone: no two callers wait on each other");
    assert_eq!(crate::device::lock_keys(None, None, Some(&eni)), [ENI], "the ENI ID when nothing else is known");
}

const ENI: &str = "eni-0123456789abcdef0";

/// A bed whose config names ENI `ENI` by `runtimeConfig.deviceID`, the node state holding it in a
/// kernel pool (free, at device index 1), and the kubelet's checkpoint allocating it to `POD_UID`.
fn claiming_bed(links: Vec<FakeLink>) -> Bed {
    let mut bed = Bed::with(links, json!({"device": null, "runtimeConfig": {"deviceID": ENI}}));
    let dir = bed._dir.path();
    bed.settings.sysfs_root = dir.join("sys");
    bed.settings.kubelet_checkpoint = dir.join("kubelet_internal_checkpoint");
    std::fs::write(
        &bed.settings.kubelet_checkpoint,
        json!({"Data": {"PodDeviceEntries": [
            {"PodUID": POD_UID, "ContainerName": "app", "ResourceName": "nodeeni.io/fast", "DeviceIDs": {"-1": [ENI]}}
        ]}})
        .to_string(),
    )
    .expect("checkpoint");
    bed.ctx()
        .node
        .update(Duration::from_secs(5), |state| {
            state.enis.push(nodeeni_state::node::EniRecord {
                eni_id: Some(ENI.parse().expect("id")),
                mac: Some(mac()),
                device_index: Some(1),
                ..nodeeni_state::node::EniRecord::new("fast", nodeeni_conf::Mode::Kernel, Lifecycle::Ready)
            });
            Ok::<_, nodeeni_state::node::StoreError>(())
        })
        .expect("node state");
    bed
}

impl Bed {
    /// The whole ADD after its start (resolve, claim, lock, the kernel steps), through the fake.
    fn add_resolving(&self) -> crate::error::Result<CniResult> {
        let mut host = self.fake.side(Side::Host);
        add_in(&self.ctx(), &mut host, || Ok(self.fake.side(Side::Pod)), &self.host_ns, &self.pod_ns)
    }

    fn allocation(&self) -> Option<nodeeni_state::node::Allocation> {
        let state = self.ctx().node.load(Duration::from_secs(5)).expect("node state");
        state.enis.into_iter().find_map(|e| e.allocation)
    }
}

#[test]
fn a_kernel_add_that_claimed_a_pool_eni_releases_the_claim_when_a_step_fails() {
    let _one = SERIAL.lock().unwrap_or_else(|p| p.into_inner());
    let move_step = {
        let bed = claiming_bed(original());
        bed.add_resolving().expect("ADD");
        let a = bed.allocation().expect("claimed for the pod");
        assert_eq!((a.container_id.as_str(), a.ifname.as_str()), (CONTAINER, "net1"));
        let calls = bed.fake.calls();
        assert_eq!(
            calls[..2],
            [host(Op::LinksByMac(mac())), host(Op::DefaultRouteLinks)],
            "the node's own refused first"
        );
        1 + calls.iter().position(|c| c.op == Op::MoveToNetns(ETH1, Some(Side::Pod))).expect("a move")
    };
    let bed = claiming_bed(original());
    bed.fake.fail_call(move_step);
    let err = bed.add_resolving().expect_err("the move fails");
    assert!(matches!(err, PluginError::Netlink(_)), "rolled back cleanly: {err}");
    assert_eq!(bed.fake.links(), original(), "the node as it was");
    assert_eq!(bed.allocation(), None, "the claim released: the ENI is free for the kubelet's next pod");
    assert_eq!(bed.record(), None);
}

#[test]
fn a_claimed_eni_that_carries_a_default_route_is_refused_and_released() {
    let _one = SERIAL.lock().unwrap_or_else(|p| p.into_inner());
    let mut links = original();
    links[1].routes.push(FakeRoute { dst: net("0.0.0.0/0"), gw: Some("192.0.2.1".parse().expect("ip")), mtu: None });
    let bed = claiming_bed(links.clone());
    let err = bed.add_resolving().expect_err("refused");
    assert!(matches!(&err, PluginError::Refused(m) if m.contains("default route")), "{err}");
    assert_eq!(bed.allocation(), None, "the claim released");
    assert_eq!(bed.fake.links(), links, "nothing touched");
    assert!(
        bed.fake.calls().iter().all(|c| c.side == Side::Host && !matches!(c.op, Op::SetUp(..) | Op::MoveToNetns(..)))
    );
}

const PCI: &str = "0000:00:06.0";

/// A DPDK attachment as ADD leaves it: the ENA device `PCI` bound to vfio-pci, its record saying it
/// was on `ena` with netdev eth1, and IPAM asked for addresses.
fn dpdk_bed() -> (Bed, FakeSysfs, AttachmentRecord) {
    let sys = FakeSysfs::new();
    sys.add_device(PCI, Some("ena"), "eth1", 7, 0);
    let bed = Bed::with(Vec::new(), json!({"mode": "dpdk", "deviceID": PCI, "sysfsRoot": sys.root()}));
    let pci: PciAddress = PCI.parse().expect("pci");
    let before =
        PciBus::new(sys.root()).bind(pci, &DpdkDriver::VfioPci.driver_name(), Duration::from_secs(5)).expect("bind");
    let ctx = bed.ctx();
    let (container, ifname) = ctx.attachment_key().expect("key");
    let record = AttachmentRecord {
        container_id: container.clone(),
        ifname: ifname.to_string(),
        netns: None,
        network: "enis".into(),
        mode: HandOver::Dpdk,
        phase: Phase::Added,
        eni_id: None,
        mac: None,
        pci: Some(pci),
        host: None,
        dpdk_driver: Some(DpdkDriver::VfioPci),
        driver_before: DriverBefore::from(before.driver),
        netdevs_before: before.netdevs,
        ipam_type: Some("fake-ipam".into()),
        claimed_from_pool: false,
        result: None,
        created_unix: 1,
        network_config: None,
    };
    ctx.attachments.save(&record).expect("record");
    assert_eq!(sys.driver_of(PCI).as_deref(), Some("vfio-pci"));
    (bed, sys, record)
}

#[test]
fn a_dpdk_del_whose_driver_restore_fails_still_releases_ipam_and_reports_every_step() {
    let _one = SERIAL.lock().unwrap_or_else(|p| p.into_inner());
    let (bed, sys, record) = dpdk_bed();
    sys.break_bind_file("ena");
    bed.fail_ipam_del(true);
    let err = undo_record(&bed.ctx(), &record).expect_err("both steps fail");
    let PluginError::Cleanup(undo) = &err else { panic!("expected Cleanup, got {err}") };
    let steps: Vec<&UndoError> = undo.iter().collect();
    assert!(matches!(steps[..], [UndoError::RestoreDriver { .. }, UndoError::IpamDel(_)]), "{undo}");
    assert_eq!(bed.ipam_calls(), ["DEL"], "IPAM DEL is tried although the driver could not be restored");
    let cni = err.to_cni();
    assert_eq!(cni.code, 108);
    assert!(
        cni.msg.starts_with(&format!("cleanup failed: restoring the driver of {PCI}: cannot write"))
            && cni.msg.contains("ena/bind")
            && cni.msg.contains("; releasing its addresses: IPAM plugin fake-ipam: lease store busy"),
        "{}",
        cni.msg
    );
    assert_eq!(bed.record(), Some(record.clone()), "the record stays for DEL to retry");

    // Only the driver fails now: still IPAM DEL, and only the driver's step is reported.
    bed.fail_ipam_del(false);
    let err = undo_record(&bed.ctx(), &record).expect_err("the driver still fails");
    let PluginError::Cleanup(undo) = &err else { panic!("expected Cleanup, got {err}") };
    assert!(matches!(undo.iter().collect::<Vec<_>>()[..], [UndoError::RestoreDriver { .. }]), "{undo}");
    assert_eq!(bed.ipam_calls(), ["DEL", "DEL"]);

    // The driver's bind file is back: the retried DEL finishes and forgets the record.
    std::fs::write(sys.root().join("bus/pci/drivers/ena/bind"), b"").expect("bind file");
    undo_record(&bed.ctx(), &record).expect("DEL retried");
    assert_eq!(sys.driver_of(PCI).as_deref(), Some("ena"));
    assert_eq!(sys.netdevs_of(PCI), ["eth1"]);
    assert_eq!(bed.ipam_calls(), ["DEL", "DEL", "DEL"]);
    assert_eq!(bed.record(), None);
}

#[test]
fn a_record_naming_a_driver_outside_the_known_set_is_not_rebound_and_ipam_is_released() {
    let _one = SERIAL.lock().unwrap_or_else(|p| p.into_inner());
    let (bed, sys, mut record) = dpdk_bed();
    // A safe name, but no driver an ENI had: a forged record must not move the device (or, through
    // the same path, the node's NVMe disk) onto it.
    record.driver_before = DriverBefore::Bound("nvme".parse().expect("name"));
    bed.ctx().attachments.save(&record).expect("record");
    let err = undo_record(&bed.ctx(), &record).expect_err("refused");
    let PluginError::Cleanup(undo) = &err else { panic!("expected Cleanup, got {err}") };
    assert!(matches!(undo.iter().collect::<Vec<_>>()[..], [UndoError::UnknownDriver { .. }]), "{undo}");
    assert!(err.to_cni().msg.contains("\"nvme\", which is neither ena nor a DPDK driver"), "{}", err.to_cni().msg);
    assert_eq!(sys.driver_of(PCI).as_deref(), Some("vfio-pci"), "nothing unbound or bound");
    assert_eq!(sys.driver_override_of(PCI).trim(), "vfio-pci", "nothing written");
    assert_eq!(bed.ipam_calls(), ["DEL"], "the addresses released all the same");
    assert_eq!(bed.record(), Some(record), "kept for an operator to look at");
}

#[test]
fn gc_leaves_a_record_that_changed_or_went_after_it_was_listed() {
    let _one = SERIAL.lock().unwrap_or_else(|p| p.into_inner());
    let (bed, sys, listed) = dpdk_bed();
    let ctx = bed.ctx();
    // A DEL undid it after GC listed it; another pod's ADD then took the device (still vfio-pci).
    ctx.attachments.remove(&listed.container_id, &listed.ifname).expect("DEL");
    assert!(!super::collect_record(&ctx, &listed).expect("judged"), "gone: left alone");
    // A new ADD of the same container and ifname wrote another record.
    let newer = AttachmentRecord { created_unix: 2, ..listed.clone() };
    ctx.attachments.save(&newer).expect("record");
    assert!(!super::collect_record(&ctx, &listed).expect("judged"), "changed: left alone");
    assert_eq!(sys.driver_of(PCI).as_deref(), Some("vfio-pci"), "the new pod keeps its device");
    assert_eq!(bed.ipam_calls(), Vec::<String>::new(), "no IPAM DEL for the new pod's addresses");
    // Unchanged since it was listed: collected.
    assert!(super::collect_record(&ctx, &newer).expect("collected"));
    assert_eq!(sys.driver_of(PCI).as_deref(), Some("ena"));
    assert_eq!(bed.record(), None);
}

#[test]
fn a_record_naming_a_driver_outside_the_drivers_folder_is_refused_and_nothing_is_written() {
    let _one = SERIAL.lock().unwrap_or_else(|p| p.into_inner());
    let (bed, sys, record) = dpdk_bed();
    // `bus/pci/drivers/../../x/bind` is `bus/x/bind`: plant it, as a file DEL must never write.
    let outside = sys.root().join("bus/x/bind");
    std::fs::create_dir_all(outside.parent().expect("parent")).expect("mkdir");
    std::fs::write(&outside, b"").expect("plant");
    let ctx = bed.ctx();
    let path = ctx.attachments.path(&record.container_id, &record.ifname);
    let mut raw: serde_json::Value = serde_json::from_slice(&std::fs::read(&path).expect("read")).expect("json");
    raw["driverBefore"] = json!("../../x");
    std::fs::write(&path, raw.to_string()).expect("tampered record");

    let err = del(&ctx).expect_err("refused");
    assert!(matches!(err, PluginError::Attachment(AttachmentError::Corrupt { .. })), "{err}");
    assert!(err.to_string().contains("driver name"), "{err}");
    assert_eq!(std::fs::read(&outside).expect("planted"), b"", "nothing written outside the drivers folder");
    assert_eq!(sys.driver_of(PCI).as_deref(), Some("vfio-pci"), "the device is left alone");
    assert_eq!(sys.driver_override_of(PCI), "vfio-pci");
    assert!(bed.ipam_calls().is_empty(), "nothing undone from a record that does not read");
    assert!(path.exists(), "the record is kept for a person to look at");
}

/// GC's rule, without root: a record that the runtime did not list goes only when it carries this
/// very configuration (less what runtimes and Multus set per call) and its pod's namespace is gone.
#[test]
fn gc_takes_only_records_of_this_configuration_whose_pod_is_gone() {
    let nad = json!({"cniVersion": "1.1.0", "name": "fast", "type": "nodeeni", "mtu": 9000});
    let mut at_add = nad.clone();
    at_add["cniVersion"] = json!("1.0.0");
    at_add["deviceID"] = json!("eni-00000001");
    at_add["runtimeConfig"] = json!({"deviceID": "eni-00000001"});
    at_add["args"] = json!({"cni": {"ips": ["10.0.1.5"]}});
    let mut at_gc = nad.clone();
    at_gc["cni.dev/valid-attachments"] = json!([{"containerID": "c9", "ifname": "net1"}]);
    let ours = network_config(&at_gc);
    assert_eq!(network_config(&at_add), ours, "what is set per call makes no other network");

    let dir = tempfile::tempdir().expect("tempdir");
    let no_namespace = dir.path().join("left-behind");
    std::fs::write(&no_namespace, b"").expect("file");
    let gone = dir.path().join("no-such-netns").display().to_string();
    let record = |config: Option<serde_json::Value>, netns: Option<String>| AttachmentRecord {
        container_id: CONTAINER.parse().expect("container"),
        ifname: "net1".into(),
        netns,
        network: "fast".into(),
        mode: HandOver::Kernel,
        phase: Phase::Added,
        eni_id: None,
        mac: Some(mac()),
        pci: None,
        host: None,
        dpdk_driver: None,
        driver_before: DriverBefore::NotCaptured,
        netdevs_before: Vec::new(),
        ipam_type: None,
        claimed_from_pool: true,
        result: None,
        created_unix: 1,
        network_config: config,
    };
    // This network's, pod gone (the path is gone, or names no namespace any more): collected.
    assert_eq!(may_collect(&record(Some(ours.clone()), Some(gone.clone())), &ours), Ok(()));
    assert_eq!(may_collect(&record(Some(ours.clone()), Some(no_namespace.display().to_string())), &ours), Ok(()));
    // The same name configured otherwise (another namespace's NetworkAttachmentDefinition): not ours.
    let mut other = nad.clone();
    other["mtu"] = json!(1500);
    assert_eq!(may_collect(&record(Some(network_config(&other)), Some(gone.clone())), &ours), Err(Keep::OtherConfig));
    // A record from before configurations were kept proves nothing.
    assert_eq!(may_collect(&record(None, Some(gone)), &ours), Err(Keep::Unproven));
    // A pod whose namespace still exists may be live (an identical twin's, or an ADD in flight).
    let alive = may_collect(&record(Some(ours.clone()), Some("/proc/self/ns/net".into())), &ours);
    assert!(matches!(&alive, Err(Keep::PodAlive(why)) if why.contains("still exists")), "{alive:?}");
    assert!(matches!(may_collect(&record(Some(ours.clone()), None), &ours), Err(Keep::PodAlive(_))));
}
