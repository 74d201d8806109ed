//! The CNI protocol edge: bad input never panics and never changes the host; VERSION, STATUS, GC;
//! logs go to the log file and stdout carries only the protocol.

mod common;

use common::{NodeBox, Outcome};
use nodeeni_tests::netns::TestNs;
use nodeeni_tests::root::require_root;
use std::os::unix::fs::PermissionsExt;

use serde_json::{Value, json};

const MAC: &str = "0a:00:00:00:00:31";

/// What is wrong, stdin, environment, the code expected, and a word the message must hold.
type BadCase = (&'static str, String, Vec<(&'static str, String)>, u64, &'static str);

fn host_unchanged(b: &NodeBox) {
    assert!(b.node.has_link("eth1"), "the device stays on the host");
    assert_eq!(b.node.mtu_and_up("eth1"), (1500, false));
    assert!(b.records().is_empty(), "no record written");
}

#[test]
fn bad_input_gets_the_spec_code_and_leaves_the_host_alone() {
    if !require_root("bad_input_gets_the_spec_code_and_leaves_the_host_alone") {
        return;
    }
    let b = NodeBox::new("pbad");
    b.eni("eth1", MAC);
    let pod = b.pod("pbad");
    let netns = pod.path().display().to_string();
    let path = common::cni_path();
    let good = b.conf("1.0.0", json!({"device": "eth1"})).to_string();
    let env = |container: &'static str, ns: &str, ifname: &'static str| -> Vec<(&'static str, String)> {
        vec![
            ("CNI_COMMAND", "ADD".to_string()),
            ("CNI_CONTAINERID", container.to_string()),
            ("CNI_NETNS", ns.to_string()),
            ("CNI_IFNAME", ifname.to_string()),
            ("CNI_PATH", path.clone()),
        ]
    };
    let run = |stdin: &str, vars: Vec<(&'static str, String)>| {
        let pairs: Vec<(&str, &str)> = vars.iter().map(|(k, v)| (*k, v.as_str())).collect();
        b.exec_raw(stdin.as_bytes(), &pairs)
    };
    let cases: Vec<BadCase> = vec![
        ("malformed JSON", "{\"cniVersion\": ".into(), env("c1", &netns, "net1"), 6, "decode"),
        ("not an object", "[]".into(), env("c1", &netns, "net1"), 6, "object"),
        ("unknown version", good.replace("1.0.0", "0.2.0"), env("c1", &netns, "net1"), 1, "0.2.0"),
        (
            "missing CNI_NETNS",
            good.clone(),
            env("c1", &netns, "net1").into_iter().filter(|(k, _)| *k != "CNI_NETNS").collect(),
            4,
            "CNI_NETNS",
        ),
        (
            "missing CNI_COMMAND",
            good.clone(),
            env("c1", &netns, "net1").into_iter().filter(|(k, _)| *k != "CNI_COMMAND").collect(),
            4,
            "CNI_COMMAND",
        ),
        (
            "netns path that does not exist",
            good.clone(),
            env("c1", "/run/netns/nodeeni-no-such-ns", "net1"),
            4,
            "nodeeni-no-such-ns",
        ),
        (
            "netns path that is not a netns",
            good.clone(),
            env("c1", "/etc/hostname", "net1"),
            4,
            "not a network namespace",
        ),
        ("ifname over 15 bytes", good.clone(), env("c1", &netns, "a-very-long-name"), 4, "CNI_IFNAME"),
        ("ifname with a slash", good.clone(), env("c1", &netns, "a/b"), 4, "CNI_IFNAME"),
        (
            "container ID that is not a safe file name",
            good.clone(),
            env("../../etc", &netns, "net1"),
            4,
            "CNI_CONTAINERID",
        ),
        (
            "unknown device",
            b.conf("1.0.0", json!({"device": "eth9"})).to_string(),
            env("c1", &netns, "net1"),
            100,
            "eth9",
        ),
        (
            "unknown ENI",
            b.conf("1.0.0", json!({"deviceID": "eni-0123456789abcdef0"})).to_string(),
            env("c1", &netns, "net1"),
            100,
            "eni-0123456789abcdef0",
        ),
        (
            "unknown PCI device",
            b.conf("1.0.0", json!({"deviceID": "0000:00:1f.7"})).to_string(),
            env("c1", &netns, "net1"),
            100,
            "0000:00:1f.7",
        ),
        ("no device at all", b.conf("1.0.0", json!({})).to_string(), env("c1", &netns, "net1"), 7, "no device"),
        (
            "bad deviceID",
            b.conf("1.0.0", json!({"deviceID": "gpu0"})).to_string(),
            env("c1", &netns, "net1"),
            7,
            "deviceID",
        ),
        (
            "ipam without type",
            b.conf("1.0.0", json!({"device": "eth1", "ipam": {"subnet": "10.0.0.0/8"}})).to_string(),
            env("c1", &netns, "net1"),
            7,
            "ipam.type",
        ),
        (
            "missing IPAM plugin",
            b.conf("1.0.0", json!({"device": "eth1", "ipam": {"type": "nope-ipam"}})).to_string(),
            env("c1", &netns, "net1"),
            104,
            "not found in CNI_PATH",
        ),
    ];
    for (what, stdin, vars, code, words) in cases {
        let out = run(&stdin, vars);
        assert!(!out.ok, "{what}: should fail");
        assert_eq!(out.code(), Some(code), "{what}: {}", out.stdout);
        assert!(out.msg().contains(words), "{what}: {:?} should mention {words:?}", out.msg());
        assert!(out.stderr.is_empty() || !out.stderr.contains("panicked"), "{what}: panicked: {}", out.stderr);
        host_unchanged(&b);
        assert!(!pod.has_link("net1"), "{what}");
    }
    // Unknown command.
    let out = b.exec_raw(good.as_bytes(), &[("CNI_COMMAND", "FROB")]);
    assert_eq!(out.code(), Some(4));
}

#[test]
fn version_reports_every_supported_version() {
    if !require_root("version_reports_every_supported_version") {
        return;
    }
    let b = NodeBox::new("pver");
    let out = b.exec_raw(br#"{"cniVersion": "0.4.0"}"#, &[("CNI_COMMAND", "VERSION")]).expect_ok();
    assert_eq!(out["cniVersion"], "0.4.0");
    assert_eq!(out["supportedVersions"], json!(["0.3.0", "0.3.1", "0.4.0", "1.0.0", "1.1.0"]));
    let out = b.exec_raw(b"", &[("CNI_COMMAND", "VERSION")]).expect_ok();
    assert_eq!(out["cniVersion"], "1.1.0");
    let help = std::process::Command::new(common::plugin()).arg("--help").output().expect("help");
    assert!(help.status.success() && String::from_utf8_lossy(&help.stdout).contains("deviceID"));
}

#[test]
fn status_answers_50_when_the_pool_cannot_serve() {
    if !require_root("status_answers_50_when_the_pool_cannot_serve") {
        return;
    }
    let b = NodeBox::new("pstat");
    let status = |conf: &Value| b.exec_raw(conf.to_string().as_bytes(), &[("CNI_COMMAND", "STATUS")]);
    let standalone = b.conf("1.1.0", json!({"device": "eth1"}));
    status(&standalone).expect_ok();
    let pooled = b.conf("1.1.0", json!({"pool": "fast"}));
    status(&pooled).expect_code(50, "no node state");
    b.node_state("other", &[("eni-00000041", "0a:00:00:00:00:41", "10.0.1.41")]);
    status(&pooled).expect_code(50, "pool fast has no usable ENI");
    b.node_state("fast", &[("eni-00000041", "0a:00:00:00:00:41", "10.0.1.41")]);
    status(&pooled).expect_ok();
    std::fs::write(b.state.path().join("node-state.json"), b"{ broken").expect("corrupt");
    status(&pooled).expect_code(50, "unreadable");
    let old = b.conf("1.0.0", json!({"pool": "fast"}));
    status(&old).expect_code(1, "1.1.0");
}

/// A node with `n` pool ENIs (`eth1`… with ENI IDs `eni-000000e1`…), the kubelet having given ENI i to
/// pod `uid-i`: what Multus adds each pod's `deviceID` from.
fn multus_node(label: &str, n: usize) -> NodeBox {
    let b = NodeBox::new(label);
    let enis: Vec<(String, String, String)> = (1..=n)
        .map(|i| (format!("eni-000000e{i}"), format!("0a:00:00:00:00:e{i}"), format!("10.0.1.{}", 60 + i)))
        .collect();
    for (i, (_, mac, _)) in enis.iter().enumerate() {
        b.eni(&format!("eth{}", i + 1), mac);
    }
    let state: Vec<(&str, &str, &str)> =
        enis.iter().map(|(id, mac, ip)| (id.as_str(), mac.as_str(), ip.as_str())).collect();
    b.node_state("fast", &state);
    b.write_node_file(json!({}));
    let uids: Vec<String> = (1..=n).map(|i| format!("uid-{i}")).collect();
    let ids: Vec<[&str; 1]> = enis.iter().map(|(id, _, _)| [id.as_str()]).collect();
    let entries: Vec<(&str, &str, &[&str])> =
        uids.iter().zip(&ids).map(|(uid, id)| (uid.as_str(), "nodeeni.io/fast", &id[..])).collect();
    b.write_checkpoint(&entries);
    b
}

/// ADD as Multus makes it for pod `uid-<eni>` of `namespace`: the network's config plus the pod's
/// `deviceID`.
fn attach(b: &NodeBox, nad: &Value, eni: usize, namespace: &str, container: &str, pod: &TestNs) {
    let mut conf = nad.clone();
    conf["deviceID"] = json!(format!("eni-000000e{eni}"));
    let args = format!("IgnoreUnknown=1;K8S_POD_NAMESPACE={namespace};K8S_POD_UID=uid-{eni}");
    b.cni_args("ADD", &conf, container, Some(&pod.path()), "net1", &args).expect_ok();
    assert!(pod.has_link("net1"), "{container} attached");
}

/// The pod dies without a DEL: its namespace goes, and the kernel returns an ENA netdev to the host
/// (down, under `name` when the pod's ifname is taken there). A veth would be destroyed instead, so
/// the test moves it first.
fn dies(b: &NodeBox, pod: TestNs, name: &str) {
    pod.ip(&["link", "set", "net1", "down", "name", name]);
    pod.ip(&["link", "set", name, "netns", b.node.name()]);
    drop(pod);
}

/// The GC config: the network's own config plus the runtime's list.
fn gc(b: &NodeBox, nad: &Value, valid: &[&str]) -> Outcome {
    let mut conf = nad.clone();
    conf["cni.dev/valid-attachments"] = valid.iter().map(|c| json!({"containerID": c, "ifname": "net1"})).collect();
    b.exec_raw(conf.to_string().as_bytes(), &[("CNI_COMMAND", "GC"), ("CNI_PATH", &common::cni_path())])
}

fn sorted_records(b: &NodeBox) -> Vec<String> {
    let mut records = b.records();
    records.sort();
    records
}

fn holder(b: &NodeBox, eni: usize) -> Value {
    b.node_state_json()["enis"][eni - 1]["allocation"]["containerId"].clone()
}

#[test]
fn gc_releases_attachments_the_runtime_no_longer_lists_once_their_pods_are_gone() {
    if !require_root("gc_releases_attachments_the_runtime_no_longer_lists_once_their_pods_are_gone") {
        return;
    }
    let b = multus_node("pgc", 4);
    let nad = b.conf("1.1.0", json!({"capabilities": {"deviceID": true}}));
    let (p1, p2, p3, p4) = (b.pod("pgc1"), b.pod("pgc2"), b.pod("pgc3"), b.pod("pgc4"));
    attach(&b, &nad, 1, "apps", "keep", &p1);
    attach(&b, &nad, 2, "apps", "stale", &p2);
    // Not listed, but its pod runs: an ADD that finished after the runtime took its list.
    attach(&b, &nad, 3, "apps", "running", &p3);
    // Another network's attachment is not this GC's to collect, even with its pod gone.
    let mut other = nad.clone();
    other["name"] = json!("other-net");
    attach(&b, &other, 4, "apps", "foreign", &p4);
    dies(&b, p2, "dev2");
    dies(&b, p4, "dev4");
    // Without the list the spec requires, GC refuses instead of taking every attachment for stale.
    b.exec_raw(nad.to_string().as_bytes(), &[("CNI_COMMAND", "GC"), ("CNI_PATH", &common::cni_path())])
        .expect_code(7, "cni.dev/valid-attachments");
    assert!(b.node.has_link("dev2") && !b.node.has_link("eth2"), "nothing undone by a GC without its list");

    gc(&b, &nad, &["keep"]).expect_ok();
    assert!(p1.has_link("net1") && holder(&b, 1) == "keep", "listed attachment kept");
    assert!(b.node.has_link("eth2") && !b.node.has_link("dev2"), "stale attachment returned under its own name");
    assert!(holder(&b, 2).is_null(), "and its ENI released in the node state");
    assert!(p3.has_link("net1") && holder(&b, 3) == "running", "a live pod's attachment is never GC's");
    assert!(b.node.has_link("dev4") && holder(&b, 4) == "foreign", "other network untouched");
    assert_eq!(sorted_records(&b), ["foreign@net1.json", "keep@net1.json", "running@net1.json"]);
}

/// Network names repeat: each namespace's NetworkAttachmentDefinition may call its network `fast`,
/// and GC receives no namespace. GC of one leaves the other's attachments: those configured otherwise
/// always, and those configured identically (a copy in another namespace) while their pods live.
#[test]
fn gc_leaves_another_network_attachments_of_the_same_name() {
    if !require_root("gc_leaves_another_network_attachments_of_the_same_name") {
        return;
    }
    let b = multus_node("pgcn", 5);
    // NetworkAttachmentDefinitions a/fast and b/fast, and c/fast, a copy of a/fast.
    let nad_a = b.conf("1.1.0", json!({"name": "fast", "capabilities": {"deviceID": true}, "mtu": 9000}));
    let nad_b = b.conf("1.1.0", json!({"name": "fast", "capabilities": {"deviceID": true}, "mtu": 1500}));
    let nad_c = nad_a.clone();
    let (a1, a2, b1, b2, c1) = (b.pod("pgcna1"), b.pod("pgcna2"), b.pod("pgcnb1"), b.pod("pgcnb2"), b.pod("pgcnc1"));
    attach(&b, &nad_a, 1, "a", "a1", &a1);
    attach(&b, &nad_a, 2, "a", "a2", &a2);
    attach(&b, &nad_b, 3, "b", "b1", &b1);
    attach(&b, &nad_b, 4, "b", "b2", &b2);
    attach(&b, &nad_c, 5, "c", "c1", &c1);
    dies(&b, a2, "dev2");
    dies(&b, b2, "dev4");

    // a/fast's runtime lists a1 only: a2 goes; b/fast's attachments, live or dead, and c/fast's live
    // one stay, though none is listed.
    gc(&b, &nad_a, &["a1"]).expect_ok();
    assert!(b.node.has_link("eth2") && holder(&b, 2).is_null(), "a/fast's stale attachment undone");
    assert!(a1.has_link("net1") && b1.has_link("net1") && c1.has_link("net1"), "live attachments kept");
    assert!(b.node.has_link("dev4") && holder(&b, 4) == "b2", "b/fast's stale attachment is b/fast's to collect");
    assert_eq!(sorted_records(&b), ["a1@net1.json", "b1@net1.json", "b2@net1.json", "c1@net1.json"]);

    // b/fast's own GC collects it, and touches nothing of a/fast or c/fast.
    gc(&b, &nad_b, &["b1"]).expect_ok();
    assert!(b.node.has_link("eth4") && holder(&b, 4).is_null(), "b/fast's stale attachment undone");
    assert!(a1.has_link("net1") && b1.has_link("net1") && c1.has_link("net1"));
    assert_eq!(sorted_records(&b), ["a1@net1.json", "b1@net1.json", "c1@net1.json"]);

    // c/fast cannot be told from a/fast by anything GC receives: once its pod is gone, a/fast's GC
    // undoes its attachment exactly as c/fast's own would (same config, same undo).
    dies(&b, c1, "dev5");
    gc(&b, &nad_a, &["a1"]).expect_ok();
    assert!(b.node.has_link("eth5") && holder(&b, 5).is_null());
    assert_eq!(sorted_records(&b), ["a1@net1.json", "b1@net1.json"]);
}

#[test]
fn logs_go_to_the_log_file_and_stdout_is_only_the_result() {
    if !require_root("logs_go_to_the_log_file_and_stdout_is_only_the_result") {
        return;
    }
    let b = NodeBox::new("plog");
    b.eni("eth1", MAC);
    let pod = b.pod("plog");
    let conf = b.conf("1.0.0", json!({"device": "eth1"}));
    let out = b.cni("ADD", &conf, "c1", Some(&pod.path()), "net1");
    assert!(out.ok);
    assert!(out.stdout.trim_start().starts_with('{') && out.stdout.trim().lines().count() == 1, "{}", out.stdout);
    assert!(out.stderr.is_empty(), "stderr: {}", out.stderr);
    b.cni("DEL", &conf, "c1", Some(&pod.path()), "net1").expect_ok();
    let log = std::fs::read_to_string(&b.log).expect("log file");
    assert!(log.contains("ENI handed to the pod") && log.contains("container=\"c1\""), "{log}");
    assert!(log.contains("attachment undone"), "{log}");
}

/// Where the daemon runs, the node file sets the state folder, sysfs root and log file: a network
/// config (which a namespace user may write) naming its own is refused by ADD and CHECK, and so are
/// devices the node state does not know. Before, the config's paths were used as root. DEL, GC and
/// STATUS ignore such keys (with a warning) instead: before, they refused them too, so a config
/// written before the node file existed could never be torn down.
#[test]
fn the_node_file_sets_node_paths_and_network_configs_cannot() {
    if !require_root("the_node_file_sets_node_paths_and_network_configs_cannot") {
        return;
    }
    let b = NodeBox::new("pnode");
    b.eni("eth1", MAC);
    let pod = b.pod("pnode");
    b.write_node_file(json!({}));
    let elsewhere = tempfile::tempdir().expect("tenant's folder");
    for (key, val) in [
        ("stateDir", elsewhere.path().to_path_buf()),
        ("sysfsRoot", elsewhere.path().to_path_buf()),
        ("logFile", elsewhere.path().join("log")),
    ] {
        let conf = b.conf("1.1.0", json!({"device": "eth1", key: val}));
        for command in ["ADD", "CHECK"] {
            b.cni(command, &conf, "c1", Some(&pod.path()), "net1").expect_code(7, &format!("{key}: {}", val.display()));
        }
        b.cni("DEL", &conf, "c1", Some(&pod.path()), "net1").expect_ok();
        b.exec_raw(conf.to_string().as_bytes(), &[("CNI_COMMAND", "STATUS")]).expect_ok();
        let mut gc = conf.clone();
        gc["cni.dev/valid-attachments"] = json!([]);
        b.exec_raw(gc.to_string().as_bytes(), &[("CNI_COMMAND", "GC"), ("CNI_PATH", &common::cni_path())]).expect_ok();
        assert!(std::fs::read_dir(elsewhere.path()).expect("ls").next().is_none(), "{key}: nothing written there");
        let log = std::fs::read_to_string(&b.log).expect("the node file's log");
        let warned = format!("{key} {} of the network config is ignored", val.display());
        assert_eq!(log.matches(&warned).count(), 3, "DEL, STATUS and GC warned: {log}");
    }
    assert!(b.node.has_link("eth1"));
    // A device the node state does not know: refused unless the node file allows standalone devices.
    let conf = b.conf("1.1.0", json!({"device": "eth1"}));
    b.cni("ADD", &conf, "c1", Some(&pod.path()), "net1").expect_code(7, "does not allow standalone devices");
    b.write_node_file(json!({"allowStandaloneDevices": true}));
    // Without the keys the node file's paths are used: the record lands in its state folder.
    let bare = json!({"cniVersion": "1.1.0", "name": "enis", "type": "nodeeni", "device": "eth1"});
    b.cni("ADD", &bare, "c1", Some(&pod.path()), "net1").expect_ok();
    assert_eq!(b.records(), ["c1@net1.json"]);
    b.cni("DEL", &bare, "c1", Some(&pod.path()), "net1").expect_ok();
    // A node file that is not root's alone is not trusted: every call fails, naming it.
    std::fs::set_permissions(b.node_file(), std::fs::Permissions::from_mode(0o666)).expect("chmod");
    b.cni("ADD", &bare, "c1", Some(&pod.path()), "net1").expect_code(7, "writable by group or others");
    assert!(b.node.has_link("eth1") && b.records().is_empty());
}

/// The log file is opened without following a symlink and created 0600, and a config value holding a
/// newline cannot forge a log line. Before, a symlinked logFile appended to its target.
#[test]
fn the_log_follows_no_symlink_is_private_and_one_event_is_one_line() {
    if !require_root("the_log_follows_no_symlink_is_private_and_one_event_is_one_line") {
        return;
    }
    let b = NodeBox::new("plog2");
    let victim = b.state.path().join("victim");
    std::fs::write(&victim, b"keep\n").expect("victim");
    std::os::unix::fs::symlink(&victim, &b.log).expect("plant a symlink");
    let conf = b.conf("1.1.0", json!({"device": "eth9"}));
    b.cni("ADD", &conf, "c1", Some(&b.pod("plog2").path()), "net1").expect_code(100, "eth9");
    assert_eq!(std::fs::read(&victim).expect("victim"), b"keep\n", "nothing written through the symlink");

    std::fs::remove_file(&b.log).expect("rm symlink");
    b.node_state("other", &[("eni-00000041", "0a:00:00:00:00:41", "10.0.1.41")]);
    let forged = b.conf("1.1.0", json!({"pool": "x\n2026-01-01T00:00:00Z  INFO cni: ENI handed to the pod"}));
    b.cni("ADD", &forged, "c1", Some(&b.pod("plog3").path()), "net1").expect_code(107, "has no free ENI");
    let mode = std::fs::metadata(&b.log).expect("log").permissions().mode();
    assert_eq!(mode & 0o777, 0o600, "created owner-only");
    let log = std::fs::read_to_string(&b.log).expect("log");
    assert!(log.contains("pool x\\n2026-01-01T00:00:00Z"), "the newline is escaped: {log}");
    assert!(!log.lines().any(|l| l.starts_with("2026-01-01")), "no forged line: {log}");
}
