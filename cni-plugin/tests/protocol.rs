//! The CNI protocol edge: bad input never panics and never changes the host; VERSION, STATUS, GC;
//! logs go to the log file and stdout carries only the protocol.

mod common;

use common::NodeBox;
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

#[test]
fn gc_releases_attachments_the_runtime_no_longer_lists() {
    if !require_root("gc_releases_attachments_the_runtime_no_longer_lists") {
        return;
    }
    let b = NodeBox::new("pgc");
    b.eni("eth1", "0a:00:00:00:00:51");
    b.eni("eth2", "0a:00:00:00:00:52");
    b.eni("eth3", "0a:00:00:00:00:53");
    let (p1, p2, p3) = (b.pod("pgc1"), b.pod("pgc2"), b.pod("pgc3"));
    b.cni("ADD", &b.conf("1.1.0", json!({"device": "eth1"})), "keep", Some(&p1.path()), "net1").expect_ok();
    b.cni("ADD", &b.conf("1.1.0", json!({"device": "eth2"})), "stale", Some(&p2.path()), "net1").expect_ok();
    // Another network's attachment is not this GC's to collect, even though it is not listed.
    let mut other = b.conf("1.1.0", json!({"device": "eth3"}));
    other["name"] = json!("other-net");
    b.cni("ADD", &other, "foreign", Some(&p3.path()), "net1").expect_ok();
    // Without the list the spec requires, GC refuses instead of taking every attachment for stale.
    let bare = b.conf("1.1.0", json!({}));
    b.exec_raw(bare.to_string().as_bytes(), &[("CNI_COMMAND", "GC"), ("CNI_PATH", &common::cni_path())])
        .expect_code(7, "cni.dev/valid-attachments");
    assert!(p1.has_link("net1") && p2.has_link("net1"), "nothing undone by a GC without its list");
    let gc = b.conf("1.1.0", json!({"cni.dev/valid-attachments": [{"containerID": "keep", "ifname": "net1"}]}));
    b.exec_raw(gc.to_string().as_bytes(), &[("CNI_COMMAND", "GC"), ("CNI_PATH", &common::cni_path())]).expect_ok();
    assert!(p1.has_link("net1"), "listed attachment kept");
    assert!(!p2.has_link("net1") && b.node.has_link("eth2"), "stale attachment returned to the host");
    assert!(p3.has_link("net1"), "other network untouched");
    let mut records = b.records();
    records.sort();
    assert_eq!(records, ["foreign@net1.json", "keep@net1.json"]);
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
