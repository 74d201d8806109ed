//! Kernel mode, for real, as root: ENI stand-ins (veths) move into pod namespaces and back.

mod common;

use common::{GATEWAY, NodeBox};
use nodeeni_tests::root::require_root;
use nodeeni_tests::vpc::Vpc;
use serde_json::{Value, json};

const MAC: &str = "0a:00:00:00:00:11";

fn static_ipam(addr: &str) -> Value {
    json!({"type": "static", "addresses": [{"address": addr, "gateway": GATEWAY}]})
}

#[test]
fn add_check_del_for_every_version_with_vpc_addresses() {
    if !require_root("add_check_del_for_every_version_with_vpc_addresses") {
        return;
    }
    let b = NodeBox::new("kver");
    b.eni("eth1", MAC);
    b.node_state("fast", &[("eni-0000000000000abc1", MAC, "10.0.1.50")]);
    b.write_node_file(json!({}));
    b.write_checkpoint(&[("uid-p", "nodeeni.io/fast", &["eni-0000000000000abc1"])]);
    for version in ["0.3.0", "0.3.1", "0.4.0", "1.0.0", "1.1.0"] {
        let pod = b.pod("kver");
        let conf = b.conf(version, json!({"runtimeConfig": {"deviceID": "eni-0000000000000abc1"}, "mtu": 1400}));
        let result = b.cni_args("ADD", &conf, "c1", Some(&pod.path()), "net1", "K8S_POD_UID=uid-p").expect_ok();
        assert_eq!(result["cniVersion"], version);
        assert_eq!(result["interfaces"][0]["name"], "net1");
        assert_eq!(result["interfaces"][0]["mac"], MAC);
        assert_eq!(result["ips"][0]["address"], "10.0.1.50/24", "{version}: VPC address from the node state");
        assert_eq!(result["ips"][0]["gateway"], GATEWAY);
        if version == "1.1.0" {
            assert_eq!(result["interfaces"][0]["mtu"], 1400);
        } else {
            assert!(result["interfaces"][0].get("mtu").is_none());
        }
        if version.starts_with("0.") {
            assert_eq!(result["ips"][0]["version"], "4");
        }
        assert!(!b.node.has_link("eth1"), "{version}: moved off the host");
        assert_eq!(pod.mtu_and_up("net1"), (1400, true));
        assert_eq!(pod.addresses("net1"), ["10.0.1.50/24"]);
        assert!(Vpc::ping_from(&pod, GATEWAY), "{version}: pod reaches its gateway");
        let state = b.node_state_json();
        assert_eq!(state["enis"][0]["allocation"]["containerId"], "c1", "{version}: claimed in the node state");

        let check = b.cni("CHECK", &conf, "c1", Some(&pod.path()), "net1");
        if version == "0.3.0" || version == "0.3.1" {
            check.expect_code(1, "CHECK needs cniVersion 0.4.0");
        } else {
            check.expect_ok();
        }
        b.cni("DEL", &conf, "c1", Some(&pod.path()), "net1").expect_ok();
        assert!(b.node.has_link("eth1"), "{version}: back on the host under its own name");
        assert_eq!(b.node.mtu_and_up("eth1"), (1500, false), "{version}: MTU and state restored");
        assert!(!pod.has_link("net1"));
        assert!(b.node_state_json()["enis"][0].get("allocation").is_none(), "{version}: released");
        b.cni("DEL", &conf, "c1", Some(&pod.path()), "net1").expect_ok();
        assert!(b.records().is_empty() && b.lock_files() == 0, "{version}: no record or lock left");
    }
}

/// A dual-stack ENI (a pool with `ipv6AddressCount`): the built-in IPAM hands the pod its IPv6
/// addresses with the subnet's IPv6 prefix beside the IPv4 one, IPv4 with the VPC router as gateway
/// and IPv6 without one (the router's link-local address comes from its advertisements).
#[test]
fn a_dual_stack_eni_brings_its_ipv6_addresses_into_the_pod() {
    if !require_root("a_dual_stack_eni_brings_its_ipv6_addresses_into_the_pod") {
        return;
    }
    let b = NodeBox::new("kdual");
    b.eni("eth1", MAC);
    b.node_state("fast", &[("eni-0000000000000abc6", MAC, "10.0.1.56")]);
    let mut state = b.node_state_json();
    state["enis"][0]["ipv6Addresses"] = json!(["2600:1f18:ab:cd00::56", "2600:1f18:ab:cd00::57"]);
    state["enis"][0]["subnetIpv6Cidr"] = json!("2600:1f18:ab:cd00::/64");
    b.write_node_state(&state);
    b.write_node_file(json!({}));
    b.write_checkpoint(&[("uid-d", "nodeeni.io/fast", &["eni-0000000000000abc6"])]);
    let pod = b.pod("kdual");
    for version in ["0.4.0", "1.0.0"] {
        let conf = b.conf(version, json!({"runtimeConfig": {"deviceID": "eni-0000000000000abc6"}}));
        let result = b.cni_args("ADD", &conf, "c1", Some(&pod.path()), "net1", "K8S_POD_UID=uid-d").expect_ok();
        let ips: Vec<(Value, Value)> = result["ips"]
            .as_array()
            .expect("ips")
            .iter()
            .map(|ip| (ip["address"].clone(), ip.get("gateway").cloned().unwrap_or(Value::Null)))
            .collect();
        assert_eq!(
            ips,
            [
                (json!("10.0.1.56/24"), json!(GATEWAY)),
                (json!("2600:1f18:ab:cd00::56/64"), Value::Null),
                (json!("2600:1f18:ab:cd00::57/64"), Value::Null),
            ],
            "{version}: {result}"
        );
        if version == "0.4.0" {
            assert_eq!(result["ips"][1]["version"], "6");
        }
        let mut have = pod.addresses("net1");
        have.sort();
        assert_eq!(have, ["10.0.1.56/24", "2600:1f18:ab:cd00::56/64", "2600:1f18:ab:cd00::57/64"], "{version}");
        b.cni("CHECK", &conf, "c1", Some(&pod.path()), "net1").expect_ok();
        b.cni("DEL", &conf, "c1", Some(&pod.path()), "net1").expect_ok();
        assert!(b.node.has_link("eth1") && !pod.has_link("net1"), "{version}: back on the host");
        assert!(b.node.addresses("eth1").is_empty(), "{version}: no address of the pod's stays on the host");
    }
}

#[test]
fn standalone_device_with_static_ipam_pings_the_gateway() {
    if !require_root("standalone_device_with_static_ipam_pings_the_gateway") {
        return;
    }
    let b = NodeBox::new("kstat");
    b.eni("eth1", MAC);
    let pod = b.pod("kstat");
    let conf = b.conf("1.0.0", json!({"device": "eth1", "ipam": static_ipam("10.0.1.20/24")}));
    let r = b.cni("ADD", &conf, "c1", Some(&pod.path()), "net1").expect_ok();
    assert_eq!(r["ips"][0]["address"], "10.0.1.20/24");
    assert!(Vpc::ping_from(&pod, GATEWAY));
    b.cni("CHECK", &conf, "c1", Some(&pod.path()), "net1").expect_ok();
    // CHECK notices drift: an address removed behind our back.
    pod.ip(&["addr", "del", "10.0.1.20/24", "dev", "net1"]);
    b.cni("CHECK", &conf, "c1", Some(&pod.path()), "net1").expect_code(106, "10.0.1.20/24");
    b.cni("DEL", &conf, "c1", Some(&pod.path()), "net1").expect_ok();
    assert!(b.node.has_link("eth1"));
    assert!(b.node.addresses("eth1").is_empty(), "pod addresses do not follow it home");
    assert!(!b.state.path().join("node-state.json").exists(), "standalone use writes no node state");
}

#[test]
fn host_local_ipam_gets_its_lease_back_on_del() {
    if !require_root("host_local_ipam_gets_its_lease_back_on_del") {
        return;
    }
    let b = NodeBox::new("khl");
    b.eni("eth1", MAC);
    let pod = b.pod("khl");
    let data = b.state.path().join("host-local");
    let ipam = json!({"type": "host-local", "subnet": "10.0.1.0/24", "rangeStart": "10.0.1.100", "rangeEnd": "10.0.1.110", "gateway": GATEWAY, "dataDir": data});
    let conf = b.conf("1.0.0", json!({"mac": MAC, "ipam": ipam}));
    let r = b.cni("ADD", &conf, "c1", Some(&pod.path()), "net1").expect_ok();
    assert_eq!(r["ips"][0]["address"], "10.0.1.100/24");
    assert!(data.join("enis/10.0.1.100").exists(), "host-local recorded the lease");
    assert!(Vpc::ping_from(&pod, GATEWAY));
    b.cni("DEL", &conf, "c1", Some(&pod.path()), "net1").expect_ok();
    assert!(!data.join("enis/10.0.1.100").exists(), "lease released through IPAM DEL");
}

/// The kubelet gave eni-22 to pod B. Before, pod A's config naming the pool, the device, its MAC or a
/// bare deviceID took it first, and pod B's ADD then failed with "already in use". Now only the
/// kubelet's allocation takes an ENI of an advertised pool.
#[test]
fn only_the_kubelets_allocation_takes_an_eni_of_an_advertised_pool() {
    if !require_root("only_the_kubelets_allocation_takes_an_eni_of_an_advertised_pool") {
        return;
    }
    let b = NodeBox::new("kacct");
    b.eni("eth1", "0a:00:00:00:00:21");
    b.eni("eth2", "0a:00:00:00:00:22");
    b.node_state(
        "fast",
        &[("eni-00000021", "0a:00:00:00:00:21", "10.0.1.21"), ("eni-00000022", "0a:00:00:00:00:22", "10.0.1.22")],
    );
    b.write_node_file(json!({"allowStandaloneDevices": true}));
    b.write_checkpoint(&[
        ("uid-a", "nodeeni.io/fast", &["eni-00000021"]),
        ("uid-b", "nodeeni.io/fast", &["eni-00000022"]),
    ]);
    let (pa, pb) = (b.pod("kaccta"), b.pod("kacctb"));
    let a = |conf: Value, args: &str| b.cni_args("ADD", &conf, "ca", Some(&pa.path()), "net1", args);
    for (conf, args, words) in [
        (json!({"pool": "fast"}), "", "pool fast is a kernel pool, advertised to the kubelet"),
        (json!({"device": "eth2"}), "", "device cannot select it"),
        (json!({"mac": "0a:00:00:00:00:22"}), "", "mac cannot select it"),
        (json!({"deviceID": "eni-00000022"}), "", "no K8S_POD_UID"),
        (json!({"deviceID": "eni-00000022"}), "K8S_POD_UID=uid-a", "does not list it for pod uid-a"),
        // A config's own runtimeConfig (libcni passes it through where it injects none) is no proof
        // either: before, it took the ENI.
        (json!({"runtimeConfig": {"deviceID": "eni-00000022"}}), "", "no K8S_POD_UID"),
        (json!({"runtimeConfig": {"deviceID": "eni-00000022"}}), "K8S_POD_UID=uid-a", "does not list it for pod uid-a"),
    ] {
        a(b.conf("1.1.0", conf.clone()), args).expect_code(7, words);
        assert!(b.node.has_link("eth2") && !pa.has_link("net1"), "{conf}: nothing moved");
        assert!(b.node_state_json()["enis"][1].get("allocation").is_none(), "{conf}: eni-00000022 still free");
    }
    // Pod B gets the ENI the kubelet gave it: Multus' deviceID, proven by the kubelet's checkpoint.
    let multus = b.conf("1.1.0", json!({"deviceID": "eni-00000022"}));
    let r = b.cni_args("ADD", &multus, "cb", Some(&pb.path()), "net1", "IgnoreUnknown=1;K8S_POD_UID=uid-b").expect_ok();
    assert_eq!(r["ips"][0]["address"], "10.0.1.22/24");
    assert!(Vpc::ping_from(&pb, GATEWAY));
    // Pod A gets its own through the runtime's capability.
    let runtime = b.conf("1.1.0", json!({"runtimeConfig": {"deviceID": "eni-00000021"}}));
    a(runtime.clone(), "K8S_POD_UID=uid-a").expect_ok();
    assert_eq!(pa.addresses("net1"), ["10.0.1.21/24"]);
    b.cni("DEL", &runtime, "ca", Some(&pa.path()), "net1").expect_ok();
    b.cni("DEL", &multus, "cb", Some(&pb.path()), "net1").expect_ok();
    assert!(b.node.has_link("eth1") && b.node.has_link("eth2"));
    // STATUS still reports on the pool.
    b.cni("STATUS", &b.conf("1.1.0", json!({"pool": "fast"})), "", None, "").expect_ok();
}

#[test]
fn a_device_given_to_another_container_is_refused_cleanly() {
    if !require_root("a_device_given_to_another_container_is_refused_cleanly") {
        return;
    }
    let b = NodeBox::new("kbusy");
    b.eni("eth1", MAC);
    let (p1, p2) = (b.pod("kbusy1"), b.pod("kbusy2"));
    let conf = b.conf("1.0.0", json!({"device": "eth1"}));
    b.cni("ADD", &conf, "c1", Some(&p1.path()), "net1").expect_ok();
    b.cni("ADD", &conf, "c2", Some(&p2.path()), "net1").expect_code(101, "already given to container c1");
    let by_mac = b.conf("1.0.0", json!({"mac": MAC}));
    b.cni("ADD", &by_mac, "c2", Some(&p2.path()), "net1").expect_code(101, "c1");
    assert!(p1.has_link("net1") && !p2.has_link("net1"), "nothing moved");
    assert_eq!(b.records().len(), 1);
    // Pool ENIs: the node state's claim refuses a second container.
    b.cni("DEL", &conf, "c1", Some(&p1.path()), "net1").expect_ok();
    b.node_state("fast", &[("eni-00000011", MAC, "10.0.1.11")]);
    b.write_node_file(json!({}));
    b.write_checkpoint(&[("uid-p", "nodeeni.io/fast", &["eni-00000011"])]);
    // The pod's sandbox re-created (a new container ID, the same pod) before the old one's DEL.
    let by_id = b.conf("1.1.0", json!({"runtimeConfig": {"deviceID": "eni-00000011"}}));
    b.cni_args("ADD", &by_id, "c1", Some(&p1.path()), "net1", "K8S_POD_UID=uid-p").expect_ok();
    b.cni_args("ADD", &by_id, "c2", Some(&p2.path()), "net1", "K8S_POD_UID=uid-p")
        .expect_code(101, "already given to container c1");
}

/// The SR-IOV device plugin names devices by PCI address: during a migration the kubelet's
/// checkpoint lists the ENI's PCI address for the pod, not its ID. Before, only the ENI ID was
/// looked for, so the pod the kubelet gave the device to was refused it.
#[test]
fn the_kubelets_allocation_is_found_by_eni_id_or_pci_address() {
    if !require_root("the_kubelets_allocation_is_found_by_eni_id_or_pci_address") {
        return;
    }
    let b = NodeBox::new("kpci");
    b.eni("eth1", MAC);
    let state = json!({"version": 1, "enis": [{
        "eniId": "eni-00000015", "pool": "fast", "mode": "kernel", "lifecycle": "ready", "subnetCidr": "10.0.1.0/24",
        "primaryIp": "10.0.1.15", "secondaryIps": [], "pci": "0000:00:1f.5", "mac": MAC, "deviceIndex": 1,
        "updatedUnix": 0
    }]});
    std::fs::write(b.state.path().join("node-state.json"), state.to_string()).expect("state");
    b.write_node_file(json!({}));
    b.write_checkpoint(&[
        ("uid-p", "intel.com/sriov", &["0000:00:1f.5"]),
        ("uid-q", "intel.com/sriov", &["0000:00:1f.6"]),
    ]);
    let pod = b.pod("kpci");
    let by_id = b.conf("1.1.0", json!({"runtimeConfig": {"deviceID": "eni-00000015"}}));
    let by_pci = b.conf("1.1.0", json!({"deviceID": "0000:00:1f.5"}));
    for conf in [&by_pci, &by_id] {
        // Another pod's device is still no proof.
        b.cni_args("ADD", conf, "c1", Some(&pod.path()), "net1", "K8S_POD_UID=uid-q")
            .expect_code(7, "does not list it for pod uid-q");
        assert!(b.node.has_link("eth1"), "{conf}: nothing moved");
        let r = b.cni_args("ADD", conf, "c1", Some(&pod.path()), "net1", "K8S_POD_UID=uid-p").expect_ok();
        assert_eq!(r["ips"][0]["address"], "10.0.1.15/24", "{conf}");
        assert_eq!(pod.addresses("net1"), ["10.0.1.15/24"]);
        b.cni("DEL", conf, "c1", Some(&pod.path()), "net1").expect_ok();
        assert!(b.node.has_link("eth1") && !pod.has_link("net1"), "{conf}: back on the node");
    }
}

#[test]
fn del_works_after_the_pod_namespace_is_gone() {
    if !require_root("del_works_after_the_pod_namespace_is_gone") {
        return;
    }
    let b = NodeBox::new("kgone");
    b.eni("eth1", MAC);
    let pod = b.pod("kgone");
    let conf = b.conf("1.1.0", json!({"device": "eth1", "mtu": 9000}));
    b.cni("ADD", &conf, "c1", Some(&pod.path()), "eth0").expect_ok();
    // What the kernel does for a real ENA netdev when the namespace dies: back to the host, under the
    // pod's name, down, without addresses. (A veth would be destroyed instead, so we move it ourselves.)
    pod.ip(&["link", "set", "eth0", "down"]);
    pod.ip(&["link", "set", "eth0", "netns", b.node.name()]);
    let pod_path = pod.path();
    drop(pod);
    assert!(b.node.has_link("eth0") && !b.node.has_link("eth1"));
    b.cni("DEL", &conf, "c1", Some(&pod_path), "eth0").expect_ok();
    assert!(b.node.has_link("eth1") && !b.node.has_link("eth0"), "found by MAC, renamed back");
    assert_eq!(b.node.mtu_and_up("eth1").0, 1500, "MTU restored");
    assert!(b.records().is_empty());
    b.cni("DEL", &conf, "c1", Some(&pod_path), "eth0").expect_ok();
    b.cni("DEL", &conf, "c1", None, "eth0").expect_ok();
}

#[test]
fn a_failure_midway_leaves_the_host_as_it_was() {
    if !require_root("a_failure_midway_leaves_the_host_as_it_was") {
        return;
    }
    let b = NodeBox::new("kfail");
    b.eni("eth1", MAC);
    b.node.ip(&["link", "set", "eth1", "mtu", "1450", "up"]);
    b.node.ip(&["addr", "add", "192.0.2.5/24", "dev", "eth1"]);
    let pod = b.pod("kfail");
    // The route's gateway is not on-link: the kernel refuses it after the move, so ADD must undo.
    let ipam = json!({"type": "static", "addresses": [{"address": "10.0.1.20/24"}], "routes": [{"dst": "10.99.0.0/16", "gw": "172.31.255.1"}]});
    let conf = b.conf("1.0.0", json!({"device": "eth1", "mtu": 1400, "ipam": ipam}));
    let out = b.cni("ADD", &conf, "c1", Some(&pod.path()), "net1");
    out.expect_code(102, "add route 10.99.0.0/16");
    assert!(b.node.has_link("eth1"), "back on the host under its name");
    assert_eq!(b.node.mtu_and_up("eth1"), (1450, true), "MTU and up state restored");
    assert_eq!(b.node.addresses("eth1"), ["192.0.2.5/24"], "host addresses restored");
    assert!(!pod.has_link("net1"));
    assert!(b.records().is_empty() && b.lock_files() == 0);
    let alias = b.node.ip(&["-d", "link", "show", "eth1"]);
    assert!(!alias.contains("alias"), "alias cleared: {alias}");
}

#[test]
fn an_ifname_that_exists_in_the_pod_is_refused_before_anything_moves() {
    if !require_root("an_ifname_that_exists_in_the_pod_is_refused_before_anything_moves") {
        return;
    }
    let b = NodeBox::new("kdup");
    b.eni("eth1", MAC);
    let pod = b.pod("kdup");
    pod.ip(&["link", "add", "net1", "type", "veth", "peer", "name", "other"]);
    let conf = b.conf("1.0.0", json!({"device": "eth1"}));
    b.cni("ADD", &conf, "c1", Some(&pod.path()), "net1").expect_code(4, "already exists");
    assert!(b.node.has_link("eth1"));
    assert!(b.records().is_empty());
}

#[test]
fn sixteen_parallel_adds_on_distinct_devices() {
    if !require_root("sixteen_parallel_adds_on_distinct_devices") {
        return;
    }
    let b = NodeBox::new("kpar");
    let pods: Vec<_> = (0..16).map(|i| b.pod(&format!("kpar{i}"))).collect();
    for i in 0..16 {
        b.eni(&format!("eth{}", i + 1), &format!("0a:00:00:00:01:{i:02x}"));
    }
    let b = &b;
    std::thread::scope(|s| {
        for (i, pod) in pods.iter().enumerate() {
            s.spawn(move || {
                let ipam = static_ipam(&format!("10.0.1.{}/24", 100 + i));
                let conf = b.conf("1.0.0", json!({"device": format!("eth{}", i + 1), "ipam": ipam}));
                b.cni("ADD", &conf, &format!("c{i}"), Some(&pod.path()), "net1").expect_ok();
            });
        }
    });
    for (i, pod) in pods.iter().enumerate() {
        assert_eq!(pod.addresses("net1"), [format!("10.0.1.{}/24", 100 + i)]);
    }
    assert!(Vpc::ping_from(&pods[7], GATEWAY));
    std::thread::scope(|s| {
        for (i, pod) in pods.iter().enumerate() {
            s.spawn(move || {
                let conf =
                    b.conf("1.0.0", json!({"device": format!("eth{}", i + 1), "ipam": static_ipam("10.0.1.1/24")}));
                b.cni("DEL", &conf, &format!("c{i}"), Some(&pod.path()), "net1").expect_ok();
            });
        }
    });
    for i in 0..16 {
        assert!(b.node.has_link(&format!("eth{}", i + 1)));
    }
    assert!(b.records().is_empty() && b.lock_files() == 0);
}

#[test]
fn contention_on_one_device_waits_then_reports_try_again_later() {
    if !require_root("contention_on_one_device_waits_then_reports_try_again_later") {
        return;
    }
    let b = NodeBox::new("klock");
    b.eni("eth1", MAC);
    let pod = b.pod("klock");
    let conf = b.conf("1.0.0", json!({"device": "eth1", "lockTimeoutSeconds": 1}));
    // Another process holds the device's lock (the same lock file the plugin uses).
    let locks = nodeeni_state::lock::DeviceLocks::new(b.state.path().join("locks"));
    let held = locks.lock(MAC, std::time::Duration::from_secs(1)).expect("hold the lock");
    let started = std::time::Instant::now();
    b.cni("ADD", &conf, "c1", Some(&pod.path()), "net1").expect_code(11, "busy");
    assert!(started.elapsed() >= std::time::Duration::from_millis(900), "waited for the lock first");
    assert!(b.node.has_link("eth1"), "nothing changed");
    drop(held);
    // Four containers race for the one device: exactly one gets it, the rest are refused cleanly.
    let pods: Vec<_> = (0..4).map(|i| b.pod(&format!("klock{i}"))).collect();
    let wins: usize = std::thread::scope(|s| {
        let handles: Vec<_> = pods
            .iter()
            .enumerate()
            .map(|(i, p)| {
                let conf = b.conf("1.0.0", json!({"device": "eth1"}));
                let b = &b;
                s.spawn(move || {
                    let out = b.cni("ADD", &conf, &format!("r{i}"), Some(&p.path()), "net1");
                    if !out.ok {
                        assert!(matches!(out.code(), Some(101) | Some(100)), "loser: {}", out.stdout);
                    }
                    usize::from(out.ok)
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().expect("thread")).sum()
    });
    assert_eq!(wins, 1);
    assert_eq!(b.records().len(), 1);
}

#[test]
fn a_failed_cleanup_is_reported_and_del_can_retry() {
    if !require_root("a_failed_cleanup_is_reported_and_del_can_retry") {
        return;
    }
    let b = NodeBox::new("kclean");
    b.eni("eth1", MAC);
    let pod = b.pod("kclean");
    let conf = b.conf("1.0.0", json!({"device": "eth1"}));
    b.cni("ADD", &conf, "c1", Some(&pod.path()), "net1").expect_ok();
    // Something else takes the ENI's original name on the node meanwhile.
    b.node.ip(&["link", "add", "eth1", "type", "veth", "peer", "name", "squat"]);
    let out = b.cni("DEL", &conf, "c1", Some(&pod.path()), "net1");
    out.expect_code(108, "restoring it on the host");
    assert_eq!(b.records(), ["c1@net1.json"], "the record stays for a retry");
    b.node.ip(&["link", "del", "eth1"]);
    b.cni("DEL", &conf, "c1", Some(&pod.path()), "net1").expect_ok();
    assert_eq!(b.node.mac_of("eth1"), MAC, "the ENI is back under its name");
    assert!(b.records().is_empty());
}

/// A pod with NET_ADMIN gives a link of its own the ENI's MAC. Before, DEL took the first link with
/// the MAC (the decoy: it has the lower index in the pod) and returned it to the host as the ENI.
#[test]
fn del_returns_the_eni_never_a_decoy_carrying_its_mac() {
    if !require_root("del_returns_the_eni_never_a_decoy_carrying_its_mac") {
        return;
    }
    let b = NodeBox::new("kdecoy");
    // Links made first on the node give the ENI a high index, which it keeps in the pod; the decoy
    // takes index 2 there, so it comes first in the kernel's link dump.
    for i in 0..4 {
        b.node.ip(&["link", "add", &format!("pad{i}"), "type", "veth", "peer", "name", &format!("padp{i}")]);
    }
    b.eni("eth1", MAC);
    let pod = b.pod("kdecoy");
    let conf = b.conf("1.1.0", json!({"device": "eth1"}));
    b.cni("ADD", &conf, "c1", Some(&pod.path()), "net1").expect_ok();
    pod.ip(&[
        "link", "add", "decoy", "index", "2", "address", MAC, "type", "veth", "peer", "name", "decoyp", "index", "3",
    ]);
    let index_of = |name: &str| {
        let shown = pod.ip(&["-o", "link", "show", name]);
        shown.split(':').next().and_then(|i| i.trim().parse::<u32>().ok()).expect("index")
    };
    assert!(index_of("decoy") < index_of("net1"), "the decoy is listed before the ENI");
    b.cni("DEL", &conf, "c1", Some(&pod.path()), "net1").expect_ok();
    assert!(b.node.has_link("eth1") && !b.node.has_link("decoy"), "the ENI came home, not the decoy");
    assert!(pod.has_link("decoy") && !pod.has_link("net1") && !pod.has_link("eth1"), "the decoy stayed in the pod");
    assert!(b.records().is_empty());

    // A decoy that also copies the alias ADD set has no hardware identity either (a veth), but it
    // cannot have the ifindex the ENI kept in the pod, which ADD recorded: DEL still takes the ENI.
    b.cni("ADD", &conf, "c2", Some(&pod.path()), "net2").expect_ok();
    pod.ip(&["link", "set", "decoy", "alias", "eth1"]);
    b.cni("DEL", &conf, "c2", Some(&pod.path()), "net2").expect_ok();
    assert!(b.node.has_link("eth1") && pod.has_link("decoy") && !pod.has_link("net2"), "the ENI came home");
    assert_eq!(b.node.mac_of("eth1"), MAC);
    assert!(b.records().is_empty());

    // A record from before ifindexes were kept: two look-alikes are not guessed between (108, record
    // kept), and DEL goes through once the decoy is gone.
    b.cni("ADD", &conf, "c3", Some(&pod.path()), "net3").expect_ok();
    let record = b.state.path().join("attachments/c3@net3.json");
    let mut raw: serde_json::Value = serde_json::from_slice(&std::fs::read(&record).expect("read")).expect("json");
    raw["host"].as_object_mut().expect("host").remove("ifindex");
    std::fs::write(&record, raw.to_string()).expect("old-format record");
    let out = b.cni("DEL", &conf, "c3", Some(&pod.path()), "net3");
    out.expect_code(108, "2 links carry 0a:00:00:00:00:11");
    assert!(pod.has_link("net3") && pod.has_link("decoy") && !b.node.has_link("eth1"), "nothing moved");
    assert_eq!(b.records(), ["c3@net3.json"], "kept for a retry");
    pod.ip(&["link", "del", "decoy"]);
    b.cni("DEL", &conf, "c3", Some(&pod.path()), "net3").expect_ok();
    assert_eq!(b.node.mac_of("eth1"), MAC);
}

/// The ENI left the pod (moved into a namespace of the pod's own), and the pod gave a veth of its own
/// the ENI's MAC and the alias ADD set. Before, DEL took that look-alike, the only link in the pod
/// with the MAC, and returned it to the host as the ENI, although its ifindex is not the one ADD
/// recorded.
#[test]
fn del_takes_no_look_alike_at_another_ifindex_once_the_eni_left_the_pod() {
    if !require_root("del_takes_no_look_alike_at_another_ifindex_once_the_eni_left_the_pod") {
        return;
    }
    let b = NodeBox::new("kleft");
    // The ENI gets a high index on the node (which it keeps), so the look-alike cannot take it by chance.
    for i in 0..4 {
        b.node.ip(&["link", "add", &format!("pad{i}"), "type", "veth", "peer", "name", &format!("padp{i}")]);
    }
    b.eni("eth1", MAC);
    let (pod, stash) = (b.pod("kleft"), b.pod("kleftx"));
    let conf = b.conf("1.1.0", json!({"device": "eth1"}));
    b.cni("ADD", &conf, "c1", Some(&pod.path()), "net1").expect_ok();
    pod.ip(&["link", "set", "net1", "netns", stash.name()]);
    pod.ip(&[
        "link", "add", "decoy", "index", "2", "address", MAC, "type", "veth", "peer", "name", "decoyp", "index", "3",
    ]);
    pod.ip(&["link", "set", "decoy", "alias", "eth1"]);
    b.cni("DEL", &conf, "c1", Some(&pod.path()), "net1").expect_ok();
    assert!(pod.has_link("decoy"), "the look-alike stays in the pod");
    assert!(!b.node.has_link("eth1") && !b.node.has_link("decoy"), "nothing came to the host as the ENI");
    assert!(stash.has_link("net1"), "the ENI is where the pod put it");
}

#[test]
fn the_default_route_interface_and_the_primary_eni_are_never_handed_out() {
    if !require_root("the_default_route_interface_and_the_primary_eni_are_never_handed_out") {
        return;
    }
    let b = NodeBox::new("kprim");
    b.eni("eth1", MAC);
    b.node.ip(&["link", "set", "eth1", "up"]);
    b.node.ip(&["addr", "add", "10.0.1.9/24", "dev", "eth1"]);
    b.node.ip(&["route", "add", "default", "via", GATEWAY, "dev", "eth1"]);
    let pod = b.pod("kprim");
    for conf in [json!({"device": "eth1"}), json!({"mac": MAC})] {
        b.cni("ADD", &b.conf("1.1.0", conf.clone()), "c1", Some(&pod.path()), "net1")
            .expect_code(7, "eth1 carries a default route");
        assert!(b.node.has_link("eth1") && !pod.has_link("net1"), "{conf}: the node keeps its way out");
    }
    assert!(b.records().is_empty());
    // An ENI the node state has at device index 0 is the primary ENI: refused, even as the kubelet's
    // allocation, and not left claimed.
    b.node.ip(&["route", "del", "default"]);
    let state = json!({"version": 1, "enis": [{
        "eniId": "eni-00000000", "pool": "fast", "mode": "kernel", "lifecycle": "ready",
        "mac": MAC, "deviceIndex": 0, "updatedUnix": 0
    }]});
    std::fs::write(b.state.path().join("node-state.json"), state.to_string()).expect("state");
    let conf = b.conf("1.1.0", json!({"runtimeConfig": {"deviceID": "eni-00000000"}}));
    b.cni("ADD", &conf, "c1", Some(&pod.path()), "net1").expect_code(7, "device index 0");
    assert!(b.node.has_link("eth1") && b.node_state_json()["enis"][0].get("allocation").is_none());
}
