//! The plugin through libcni (Debian's golang-github-appc-cni-dev, v1.1.2), the library container
//! runtimes and Multus link: a single .conf, a runtimeConfig deviceID capability, and a .conflist
//! chained with the reference `tuning` plugin (which reads our result as its prevResult). The plugin
//! is reached through a shim that adds the pod's UID to `CNI_ARGS`, as containerd and CRI-O do (the
//! driver passes none), and reads this box's node file.

mod common;

use std::path::Path;
use std::process::Command;

use common::{GATEWAY, NodeBox};
use nodeeni_tests::allocation::{pod_uid, pod_uid_shim};
use nodeeni_tests::root::require_root;
use nodeeni_tests::vpc::Vpc;
use serde_json::{Value, json};

/// One attachment as the runtime names it: config file, container, pod namespace, ifname.
struct Attachment<'a> {
    file: &'a Path,
    container: &'a str,
    pod: &'a Path,
    ifname: &'a str,
}

fn drive(b: &NodeBox, driver: &Path, verb: &str, at: &Attachment, caps: &[&str]) -> (bool, String) {
    let shim = pod_uid_shim(b.etc.path(), Path::new(common::plugin()));
    let out = b.node.run(|| {
        Command::new(driver)
            .args([verb, at.file.to_str().expect("utf8"), at.container, at.pod.to_str().expect("utf8"), at.ifname])
            .args(caps)
            .env("CNI_PATH", format!("{}:{}", shim.display(), common::cni_path()))
            .env("NODEENI_NODE_FILE", b.node_file())
            .env("TMPDIR", b.state.path())
            .output()
            .expect("run driver")
    });
    let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    (out.status.success(), text)
}

#[test]
fn libcni_runs_add_check_del_on_a_conf() {
    if !require_root("libcni_runs_add_check_del_on_a_conf") {
        return;
    }
    let Some(driver) = nodeeni_tests::bins::libcni_driver() else { return };
    let b = NodeBox::new("lconf");
    b.eni("eth1", "0a:00:00:00:00:61");
    let pod = b.pod("lconf");
    let ipam = json!({"type": "static", "addresses": [{"address": "10.0.1.61/24", "gateway": GATEWAY}]});
    let conf = b.conf("1.0.0", json!({"device": "eth1", "mtu": 1400, "ipam": ipam}));
    let file = b.state.path().join("20-enis.conf");
    std::fs::write(&file, conf.to_string()).expect("write conf");
    let pod_path = pod.path();
    let at = Attachment { file: &file, container: "c1", pod: &pod_path, ifname: "net1" };

    let (ok, out) = drive(&b, &driver, "add", &at, &[]);
    assert!(ok, "libcni ADD: {out}");
    let result: Value = serde_json::from_str(out.trim()).expect("result JSON");
    assert_eq!(result["interfaces"][0]["name"], "net1");
    assert_eq!(result["ips"][0]["address"], "10.0.1.61/24");
    assert_eq!(pod.mtu_and_up("net1"), (1400, true));
    assert!(Vpc::ping_from(&pod, GATEWAY));
    let (ok, out) = drive(&b, &driver, "check", &at, &[]);
    assert!(ok, "libcni CHECK: {out}");
    let (ok, out) = drive(&b, &driver, "del", &at, &[]);
    assert!(ok, "libcni DEL: {out}");
    assert!(b.node.has_link("eth1") && !pod.has_link("net1"));
    assert_eq!(b.node.mtu_and_up("eth1"), (1500, false));
    let (ok, out) = drive(&b, &driver, "del", &at, &[]);
    assert!(ok, "second libcni DEL: {out}");
}

#[test]
fn libcni_passes_the_device_id_capability_as_runtime_config() {
    if !require_root("libcni_passes_the_device_id_capability_as_runtime_config") {
        return;
    }
    let Some(driver) = nodeeni_tests::bins::libcni_driver() else { return };
    let b = NodeBox::new("lcap");
    b.eni("eth1", "0a:00:00:00:00:71");
    b.node_state("fast", &[("eni-0000000000000a071", "0a:00:00:00:00:71", "10.0.1.71")]);
    b.write_node_file(json!({}));
    let uid = pod_uid("c1");
    b.write_checkpoint(&[(uid.as_str(), "nodeeni.io/fast", &["eni-0000000000000a071"])]);
    let pod = b.pod("lcap");
    let conf = b.conf("1.0.0", json!({"capabilities": {"deviceID": true}}));
    let file = b.state.path().join("30-cap.conf");
    std::fs::write(&file, conf.to_string()).expect("write conf");
    let pod_path = pod.path();
    let at = Attachment { file: &file, container: "c1", pod: &pod_path, ifname: "net1" };
    let (ok, out) = drive(&b, &driver, "add", &at, &["deviceID=eni-0000000000000a071"]);
    assert!(ok, "libcni ADD with capability: {out}");
    assert_eq!(pod.addresses("net1"), ["10.0.1.71/24"], "VPC address of the ENI named by runtimeConfig.deviceID");
    assert!(Vpc::ping_from(&pod, GATEWAY));
    let (ok, out) = drive(&b, &driver, "del", &at, &["deviceID=eni-0000000000000a071"]);
    assert!(ok, "libcni DEL: {out}");
    assert!(b.node.has_link("eth1"));
}

/// libcni injects `runtimeConfig` only for a capability the config declares and the runtime fills;
/// otherwise it passes the config's own `runtimeConfig` key through. Before, the plugin trusted
/// `runtimeConfig.deviceID` as the kubelet's allocation, so a NetworkAttachmentDefinition writing one
/// took the ENI the kubelet gave another pod.
#[test]
fn a_configs_own_runtime_config_takes_no_eni_the_kubelet_gave_another_pod() {
    if !require_root("a_configs_own_runtime_config_takes_no_eni_the_kubelet_gave_another_pod") {
        return;
    }
    let Some(driver) = nodeeni_tests::bins::libcni_driver() else { return };
    let b = NodeBox::new("lrc");
    b.eni("eth1", "0a:00:00:00:00:91");
    b.node_state("fast", &[("eni-0000000000000a091", "0a:00:00:00:00:91", "10.0.1.91")]);
    b.write_node_file(json!({}));
    b.write_checkpoint(&[("uid-victim", "nodeeni.io/fast", &["eni-0000000000000a091"])]);
    let pod = b.pod("lrc");
    let conf = b.conf("1.0.0", json!({"runtimeConfig": {"deviceID": "eni-0000000000000a091"}}));
    let file = b.state.path().join("40-forged.conf");
    std::fs::write(&file, conf.to_string()).expect("write conf");
    let pod_path = pod.path();
    let at = Attachment { file: &file, container: "c1", pod: &pod_path, ifname: "net1" };
    let (ok, out) = drive(&b, &driver, "add", &at, &[]);
    assert!(!ok, "a config's own runtimeConfig.deviceID took the victim's ENI: {out}");
    assert!(out.contains("does not list it for pod uid-c1"), "{out}");
    assert!(b.node.has_link("eth1") && !pod.has_link("net1"), "nothing moved");
    assert!(b.node_state_json()["enis"][0].get("allocation").is_none(), "not claimed");
    assert!(b.records().is_empty());
}

#[test]
fn libcni_runs_a_conflist_chained_with_tuning() {
    if !require_root("libcni_runs_a_conflist_chained_with_tuning") {
        return;
    }
    let Some(driver) = nodeeni_tests::bins::libcni_driver() else { return };
    let b = NodeBox::new("llist");
    b.eni("eth1", "0a:00:00:00:00:81");
    let pod = b.pod("llist");
    let ipam = json!({"type": "static", "addresses": [{"address": "10.0.1.81/24", "gateway": GATEWAY}]});
    let ours = b.conf("1.0.0", json!({"device": "eth1", "ipam": ipam}));
    let mut plugin = ours.clone();
    plugin.as_object_mut().expect("object").remove("cniVersion");
    plugin.as_object_mut().expect("object").remove("name");
    let list = json!({
        "cniVersion": "1.0.0",
        "name": "enis",
        "plugins": [plugin, {"type": "tuning", "mtu": 1280, "sysctl": {"net.ipv4.conf.net1.arp_ignore": "1"}}]
    });
    let file = b.state.path().join("10-chain.conflist");
    std::fs::write(&file, list.to_string()).expect("write conflist");
    let pod_path = pod.path();
    let at = Attachment { file: &file, container: "c1", pod: &pod_path, ifname: "net1" };
    let (ok, out) = drive(&b, &driver, "add", &at, &[]);
    assert!(ok, "libcni ADD on conflist: {out}");
    let result: Value = serde_json::from_str(out.trim()).expect("result JSON");
    assert_eq!(result["interfaces"][0]["name"], "net1", "tuning passed our result on");
    assert_eq!(pod.mtu_and_up("net1"), (1280, true), "tuning ran after us on our interface");
    let sysctl = pod.exec("cat", &["/proc/sys/net/ipv4/conf/net1/arp_ignore"]);
    assert_eq!(String::from_utf8_lossy(&sysctl.stdout).trim(), "1");
    assert!(Vpc::ping_from(&pod, GATEWAY));
    let (ok, out) = drive(&b, &driver, "check", &at, &[]);
    assert!(ok, "libcni CHECK on conflist: {out}");
    let (ok, out) = drive(&b, &driver, "del", &at, &[]);
    assert!(ok, "libcni DEL on conflist: {out}");
    assert!(b.node.has_link("eth1"));
    assert_eq!(b.node.mtu_and_up("eth1").0, 1500);
}

/// `nodeeni-ipam` under a main plugin this kernel has (ptp), through libcni: each pod gets one of
/// the host ENI's secondary IPs (exactly those, never one twice) with the subnet's prefix and the
/// VPC router as gateway; used up, ADD fails with the pool-exhausted code; CHECK verifies; DEL
/// releases, and the next pod gets the address back.
#[test]
fn nodeeni_ipam_hands_out_the_host_enis_secondary_ips_under_ptp() {
    if !require_root("nodeeni_ipam_hands_out_the_host_enis_secondary_ips_under_ptp") {
        return;
    }
    let Some(driver) = nodeeni_tests::bins::libcni_driver() else { return };
    let b = NodeBox::new("lipam");
    let secondaries = ["10.0.1.81", "10.0.1.82", "10.0.1.83"];
    let state = json!({"version": 1, "enis": [{
        "eniId": "eni-0000000000000a081", "pool": "masters", "mode": "host", "lifecycle": "ready",
        "subnetCidr": "10.0.1.0/24", "primaryIp": "10.0.1.80", "secondaryIps": secondaries,
        "mac": "0a:00:00:00:00:81", "deviceIndex": 4, "hostIfname": "multus4", "updatedUnix": 0
    }]});
    std::fs::write(b.state.path().join("node-state.json"), state.to_string()).expect("state");
    b.write_node_file(json!({}));
    let conf = json!({
        "cniVersion": "1.0.0", "name": "hostnet", "type": "ptp",
        "ipam": {"type": "nodeeni-ipam", "pool": "masters"}
    });
    let file = b.state.path().join("40-hostnet.conf");
    std::fs::write(&file, conf.to_string()).expect("write conf");
    let pods: Vec<_> = (0..4).map(|i| b.pod(&format!("lipam{i}"))).collect();
    let paths: Vec<_> = pods.iter().map(|p| p.path()).collect();
    let at =
        |i: usize| Attachment { file: &file, container: ["c0", "c1", "c2", "c3"][i], pod: &paths[i], ifname: "net1" };

    let mut handed = Vec::new();
    for (i, pod) in pods.iter().enumerate().take(3) {
        let (ok, out) = drive(&b, &driver, "add", &at(i), &[]);
        assert!(ok, "ADD {i}: {out}");
        let result: Value = serde_json::from_str(out.trim()).expect("result");
        let address = result["ips"][0]["address"].as_str().expect("address").to_string();
        assert_eq!(result["ips"][0]["gateway"], GATEWAY, "the VPC router");
        assert_eq!(pod.addresses("net1"), std::slice::from_ref(&address), "ptp put it in the pod");
        handed.push(address);
    }
    let mut sorted = handed.clone();
    sorted.sort();
    sorted.dedup();
    assert_eq!(sorted, secondaries.map(|s| format!("{s}/24")), "exactly the ENI's secondary IPs, each once");
    let (ok, out) = drive(&b, &driver, "add", &at(3), &[]);
    assert!(!ok && out.contains("no free IPv4 address"), "used up: {out}");
    let (ok, out) = drive(&b, &driver, "check", &at(1), &[]);
    assert!(ok, "CHECK: {out}");

    let (ok, out) = drive(&b, &driver, "del", &at(1), &[]);
    assert!(ok, "DEL: {out}");
    let (ok, out) = drive(&b, &driver, "del", &at(1), &[]);
    assert!(ok, "DEL again: {out}");
    let (ok, out) = drive(&b, &driver, "add", &at(3), &[]);
    assert!(ok, "ADD after a release: {out}");
    assert_eq!(pods[3].addresses("net1"), [handed[1].clone()], "the released address, to the next pod");
    for i in [0, 2, 3] {
        let (ok, out) = drive(&b, &driver, "del", &at(i), &[]);
        assert!(ok, "DEL {i}: {out}");
    }
    let state: Value =
        serde_json::from_slice(&std::fs::read(b.state.path().join("node-state.json")).expect("state")).expect("json");
    assert!(state["enis"][0].get("ipHolds").is_none(), "every address released: {state}");
}
