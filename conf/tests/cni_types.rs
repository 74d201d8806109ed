//! CNI wire types: versions, environment, network configuration, results in every version, errors.

use std::collections::HashMap;

use std::path::Path;

use nodeeni_conf::cni::{
    CniEnv, CniError, CniResult, CniVersion, Command, DeviceSelector, DeviceSource, Interface, IpConfig, NetConf,
    NetConfList, NodeFile, NodeSettings, Route, codes, version_info,
};
use serde_json::{Value, json};

fn conf(v: Value) -> Result<NetConf, CniError> {
    NetConf::parse(v.to_string().as_bytes())
}

fn base() -> Value {
    json!({"cniVersion": "1.0.0", "name": "net", "type": "nodeeni"})
}

fn with(mut v: Value, key: &str, val: Value) -> Value {
    v[key] = val;
    v
}

fn env(vars: &[(&str, &str)]) -> Result<CniEnv, CniError> {
    let m: HashMap<String, String> = vars.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
    CniEnv::from_vars(|k| m.get(k).cloned())
}

fn expect_code<T: std::fmt::Debug>(r: Result<T, CniError>, code: u32, words: &str) {
    let e = r.expect_err("should fail");
    assert_eq!(e.code, code, "{e}");
    assert!(e.msg.contains(words), "{:?} should mention {words:?}", e.msg);
}

#[test]
fn every_supported_version_parses_and_others_are_code_1() {
    for v in ["0.3.0", "0.3.1", "0.4.0", "1.0.0", "1.1.0"] {
        assert_eq!(v.parse::<CniVersion>().expect(v).as_str(), v);
        assert!(conf(with(base(), "cniVersion", json!(v))).is_ok());
    }
    for bad in ["0.2.0", "0.1.0", "1.2.0", "2.0.0", "1.0", ""] {
        let e = bad.parse::<CniVersion>().expect_err(bad);
        assert_eq!(e.code, codes::INCOMPATIBLE_VERSION);
    }
    expect_code(conf(with(base(), "cniVersion", json!("0.2.0"))), 1, "0.2.0");
    let info = version_info(Some("1.0.0"));
    assert_eq!(info["cniVersion"], "1.0.0");
    assert_eq!(info["supportedVersions"], json!(["0.3.0", "0.3.1", "0.4.0", "1.0.0", "1.1.0"]));
}

#[test]
fn malformed_config_is_a_decode_failure_and_bad_fields_are_named() {
    for bad in ["", "{", "[1]", "null", "{\"cniVersion\": }"] {
        let e = NetConf::parse(bad.as_bytes()).expect_err(bad);
        assert_eq!(e.code, codes::DECODE_FAILURE, "{bad:?}: {e}");
    }
    let mut missing = base();
    missing.as_object_mut().expect("object").remove("cniVersion");
    expect_code(conf(missing), 7, "cniVersion");
    expect_code(conf(with(base(), "name", json!(7))), 7, "name");
    expect_code(conf(with(base(), "deviceID", json!("eni-xyz"))), 7, "deviceID");
    expect_code(conf(with(base(), "deviceID", json!("0000:00:20.0"))), 7, "deviceID");
    expect_code(conf(with(base(), "device", json!("a-name-longer-than-15"))), 7, "device");
    expect_code(conf(with(base(), "device", json!("a/b"))), 7, "device");
    expect_code(conf(with(base(), "mac", json!("00:11"))), 7, "mac");
    expect_code(conf(with(base(), "pciBusID", json!("zz"))), 7, "pciBusID");
    expect_code(conf(with(base(), "mtu", json!(70000))), 7, "mtu");
    expect_code(conf(with(base(), "mode", json!("fast"))), 7, "mode");
    expect_code(conf(with(base(), "dpdkDriver", json!("e1000"))), 7, "dpdkDriver");
    expect_code(conf(with(base(), "ipam", json!({"subnet": "10.0.0.0/24"}))), 7, "ipam.type");
    expect_code(conf(with(base(), "ipam", json!({"type": "../evil"}))), 7, "ipam.type");
    expect_code(conf(with(base(), "ipam", json!("host-local"))), 7, "ipam");
    expect_code(conf(with(base(), "runtimeConfig", json!({"deviceID": 5}))), 7, "runtimeConfig.deviceID");
    expect_code(conf(with(base(), "lockTimeoutSeconds", json!(0))), 7, "lockTimeoutSeconds");
    expect_code(conf(with(base(), "prevResult", json!({"ips": [{"address": "nope"}]}))), 7, "prevResult");
    expect_code(conf(with(base(), "dns", json!({"nameservers": "1.1.1.1"}))), 7, "dns");
}

#[test]
fn the_device_comes_from_runtime_config_then_multus_then_our_keys() {
    let c = conf(with(base(), "deviceID", json!("eni-0123456789abcdef0"))).expect("eni");
    assert_eq!(c.device, Some(DeviceSelector::Eni("eni-0123456789abcdef0".parse().expect("id"))));
    let c = conf(with(base(), "deviceID", json!("00:06.0"))).expect("pci");
    assert_eq!(c.device, Some(DeviceSelector::Pci("0000:00:06.0".parse().expect("pci"))));
    let mut v = with(base(), "deviceID", json!("0000:00:06.0"));
    v["runtimeConfig"] = json!({"deviceID": "eni-12345678"});
    assert_eq!(conf(v).expect("rc").device, Some(DeviceSelector::Eni("eni-12345678".parse().expect("id"))));
    let mut v = with(base(), "pciBusID", json!("0000:00:07.0"));
    v["device"] = json!("eth9");
    let c = conf(v).expect("pciBusID");
    assert_eq!(c.device, Some(DeviceSelector::Pci("0000:00:07.0".parse().expect("pci"))));
    let c = conf(with(base(), "device", json!("eth9"))).expect("device");
    assert_eq!(c.device, Some(DeviceSelector::Ifname("eth9".parse().expect("name"))));
    let c = conf(with(base(), "mac", json!("0A:00:00:00:00:01"))).expect("mac");
    assert_eq!(c.device, Some(DeviceSelector::Mac("0a:00:00:00:00:01".parse().expect("mac"))));
    let c = conf(with(base(), "pool", json!("fast"))).expect("pool");
    assert_eq!(c.device, Some(DeviceSelector::Pool("fast".into())));
    assert_eq!(conf(base()).expect("none").device, None);
}

#[test]
fn the_device_source_names_the_key_that_chose_the_device() {
    let source = |v: Value| conf(v).expect("valid").device_source;
    let mut v = with(base(), "deviceID", json!("eni-12345678"));
    assert_eq!(source(v.clone()), Some(DeviceSource::DeviceId));
    v["runtimeConfig"] = json!({"deviceID": "eni-12345678"});
    assert_eq!(source(v), Some(DeviceSource::RuntimeConfig));
    assert_eq!(source(with(base(), "pciBusID", json!("0000:00:06.0"))), Some(DeviceSource::PciBusId));
    assert_eq!(source(with(base(), "device", json!("eth1"))), Some(DeviceSource::Device));
    assert_eq!(source(with(base(), "mac", json!("0a:00:00:00:00:01"))), Some(DeviceSource::Mac));
    assert_eq!(source(with(base(), "pool", json!("fast"))), Some(DeviceSource::Pool));
    assert_eq!(source(base()), None);
}

#[test]
fn node_paths_come_from_the_node_file_and_network_configs_may_not_set_them() {
    let node = NodeFile { log_file: Some("/var/log/nodeeni-cni.log".into()), ..NodeFile::default() };
    let at = Path::new("/etc/nodeeni/node.json");
    // No node file: standalone use, the config's keys apply.
    let mut v = with(base(), "stateDir", json!("/tmp/s"));
    v["sysfsRoot"] = json!("/tmp/sys");
    v["logFile"] = json!("/tmp/log");
    let c = conf(v).expect("valid");
    let s = NodeSettings::resolve(None, &c).expect("standalone");
    assert_eq!((s.state_dir.to_str(), s.sysfs_root.to_str()), (Some("/tmp/s"), Some("/tmp/sys")));
    assert!(s.allow_standalone_devices && !s.allow_non_ena_dpdk && s.node_file.is_none());
    // With the node file, each key is refused by name (code 7), unless it says what the file says.
    for (key, val) in [("stateDir", "/tmp/s"), ("sysfsRoot", "/tmp/sys"), ("logFile", "/tmp/log")] {
        let c = conf(with(base(), key, json!(val))).expect("valid");
        let e = NodeSettings::resolve(Some((at, &node)), &c).expect_err(key);
        assert_eq!(e.code, codes::INVALID_CONFIG, "{key}");
        assert!(e.msg.starts_with(&format!("{key}: {val} is not allowed here")), "{}", e.msg);
        assert!(e.msg.contains("/etc/nodeeni/node.json"), "{}", e.msg);
    }
    let c = conf(with(base(), "logFile", json!("/var/log/nodeeni-cni.log"))).expect("valid");
    let s = NodeSettings::resolve(Some((at, &node)), &c).expect("the node's own value");
    assert_eq!(s.log_file.as_deref(), Some(Path::new("/var/log/nodeeni-cni.log")));
    assert_eq!(s.state_dir.to_str(), Some("/var/lib/nodeeni"));
    assert!(!s.allow_standalone_devices && !s.allow_non_ena_dpdk);
    assert_eq!(s.node_file.as_deref(), Some(at));
    // A node file that allows them: the config's win.
    let open = NodeFile { allow_netconf_paths: true, ..node.clone() };
    let c = conf(with(base(), "stateDir", json!("/tmp/s"))).expect("valid");
    assert_eq!(NodeSettings::resolve(Some((at, &open)), &c).expect("allowed").state_dir.to_str(), Some("/tmp/s"));
}

#[test]
fn the_node_file_parses_strictly_with_absolute_paths() {
    let f = NodeFile::parse(br#"{"stateDir": "/srv/nodeeni", "allowStandaloneDevices": true}"#).expect("valid");
    assert_eq!(f.state_dir.to_str(), Some("/srv/nodeeni"));
    assert_eq!(f.sysfs_root.to_str(), Some("/sys"));
    assert!(f.allow_standalone_devices && !f.allow_netconf_paths && !f.allow_non_ena_dpdk);
    assert_eq!(NodeFile::parse(b"{}").expect("defaults"), NodeFile::default());
    let e = NodeFile::parse(br#"{"stateDirr": "/x"}"#).expect_err("unknown key");
    assert!(e.contains("stateDirr"), "{e}");
    let e = NodeFile::parse(br#"{"logFile": "cni.log"}"#).expect_err("relative");
    assert!(e.contains("logFile") && e.contains("absolute"), "{e}");
    // What install-cni writes reads back the same.
    let written = serde_json::to_vec(&NodeFile::default()).expect("json");
    assert_eq!(NodeFile::parse(&written).expect("round trip"), NodeFile::default());
}

#[test]
fn settings_have_defaults_and_ipam_is_kept_verbatim() {
    let c = conf(base()).expect("defaults");
    let settings = NodeSettings::resolve(None, &c).expect("no node file");
    assert_eq!(settings.state_dir.to_str(), Some("/var/lib/nodeeni"));
    assert_eq!(c.lock_timeout_secs, 30);
    assert_eq!(settings.sysfs_root.to_str(), Some("/sys"));
    let ipam = json!({"type": "static", "addresses": [{"address": "10.1.0.5/24"}]});
    let mut v = with(base(), "ipam", ipam.clone());
    v["dns"] = json!({"nameservers": ["10.1.0.2"], "search": ["svc"]});
    v["cni.dev/valid-attachments"] = json!([{"containerID": "abc", "ifname": "net1"}]);
    let c = conf(v).expect("ipam");
    assert_eq!((c.ipam, c.ipam_type.as_deref()), (Some(ipam), Some("static")));
    assert_eq!(c.dns.nameservers, ["10.1.0.2"]);
    assert_eq!(c.valid_attachments.expect("gc list")[0].ifname, "net1");
    // A prevResult is kept parsed, whatever version wrote it.
    let prev = json!({"cniVersion": "0.3.1", "interfaces": [{"name": "eth0"}], "ips": [{"version": "4", "address": "10.9.0.2/24", "interface": 0}]});
    let c = conf(with(base(), "prevResult", prev)).expect("prevResult");
    let prev = c.prev_result.expect("parsed");
    assert_eq!(
        (prev.interfaces[0].name.as_str(), prev.ips[0].address.to_string()),
        ("eth0", "10.9.0.2/24".to_string())
    );
}

#[test]
fn args_capabilities_and_runtime_config_are_read() {
    let mut v = with(base(), "args", json!({"cni": {"labels": [{"key": "app", "value": "upf"}]}}));
    v["capabilities"] = json!({"deviceID": true, "mac": false});
    v["runtimeConfig"] = json!({"deviceID": "eni-12345678", "extra": 1});
    let c = conf(v).expect("valid");
    assert!(c.args.expect("args").contains_key("cni"));
    assert_eq!(c.capabilities.get("deviceID"), Some(&true));
    assert_eq!(c.capabilities.get("mac"), Some(&false));
    assert_eq!(c.runtime_config.expect("rc").get("extra"), Some(&json!(1)));
    expect_code(conf(with(base(), "args", json!("K=V"))), 7, "args");
    expect_code(conf(with(base(), "capabilities", json!({"deviceID": "yes"}))), 7, "capabilities");
    expect_code(conf(with(base(), "runtimeConfig", json!([1]))), 7, "runtimeConfig");
}

#[test]
fn environment_is_checked_per_command() {
    let add = [
        ("CNI_COMMAND", "ADD"),
        ("CNI_CONTAINERID", "abc-1.x_y"),
        ("CNI_NETNS", "/run/netns/x"),
        ("CNI_IFNAME", "net1"),
        ("CNI_PATH", "/opt/cni/bin:/usr/lib/cni"),
    ];
    let e = env(&add).expect("valid");
    assert_eq!(e.command, Command::Add);
    assert_eq!(e.path.len(), 2);
    expect_code(env(&[]), 4, "CNI_COMMAND");
    expect_code(env(&[("CNI_COMMAND", "FROB")]), 4, "FROB");
    expect_code(env(&add[..2]), 4, "CNI_NETNS");
    let mut long = add;
    long[3] = ("CNI_IFNAME", "abcdefghijklmnop");
    expect_code(env(&long), 4, "CNI_IFNAME");
    let mut slash = add;
    slash[3] = ("CNI_IFNAME", "a/b");
    expect_code(env(&slash), 4, "CNI_IFNAME");
    for bad in ["../etc", "a/b", "-x", "", "a b"] {
        let mut v = add;
        v[1] = ("CNI_CONTAINERID", bad);
        expect_code(env(&v), 4, "CNI_CONTAINERID");
    }
    let del =
        env(&[("CNI_COMMAND", "DEL"), ("CNI_CONTAINERID", "c"), ("CNI_IFNAME", "eth0")]).expect("DEL needs no netns");
    assert!(del.netns.is_none());
    assert!(env(&[("CNI_COMMAND", "VERSION")]).is_ok());
    assert!(env(&[("CNI_COMMAND", "STATUS")]).is_ok());
    let args = env(&[("CNI_COMMAND", "GC"), ("CNI_ARGS", "IgnoreUnknown=1;K8S_POD_NAME=p")]).expect("args");
    assert_eq!(args.args.get("K8S_POD_NAME").map(String::as_str), Some("p"));
    expect_code(env(&[("CNI_COMMAND", "GC"), ("CNI_ARGS", "novalue")]), 4, "CNI_ARGS");
}

fn sample() -> CniResult {
    let mut route = Route::new("0.0.0.0/0".parse().expect("cidr"), Some("10.0.1.1".parse().expect("ip")));
    route.mtu = Some(1500);
    CniResult {
        interfaces: vec![Interface {
            name: "net1".into(),
            mac: Some("0a:00:00:00:00:01".into()),
            mtu: Some(9001),
            sandbox: Some("/run/netns/pod".into()),
            socket_path: None,
            pci_id: Some("0000:00:06.0".into()),
        }],
        ips: vec![
            IpConfig {
                address: "10.0.1.5/24".parse().expect("cidr"),
                gateway: Some("10.0.1.1".parse().expect("ip")),
                interface: Some(0),
            },
            IpConfig { address: "2001:db8::5/64".parse().expect("cidr"), gateway: None, interface: Some(0) },
        ],
        routes: vec![route],
        dns: Default::default(),
    }
}

#[test]
fn results_are_written_in_the_asked_version() {
    let r = sample();
    let v11 = r.to_json("1.1.0");
    assert_eq!(v11["interfaces"][0]["mtu"], 9001);
    assert_eq!(v11["interfaces"][0]["pciID"], "0000:00:06.0");
    assert_eq!(v11["routes"][0]["mtu"], 1500);
    assert!(v11["ips"][0].get("version").is_none());
    let v10 = r.to_json("1.0.0");
    assert!(v10["interfaces"][0].get("mtu").is_none() && v10["interfaces"][0].get("pciID").is_none());
    assert!(v10["routes"][0].get("mtu").is_none());
    assert!(v10["ips"][0].get("version").is_none());
    for old in ["0.3.0", "0.3.1", "0.4.0"] {
        let o = r.to_json(old);
        assert_eq!(o["cniVersion"], old);
        assert_eq!(o["ips"][0]["version"], "4");
        assert_eq!(o["ips"][1]["version"], "6");
        assert!(o["interfaces"][0].get("pciID").is_none());
    }
}

#[test]
fn a_prev_result_of_any_version_reads_back() {
    let r = sample();
    assert_eq!(CniResult::parse(&r.to_json("1.1.0")).expect("1.1.0"), r);
    let mut stripped = r.clone();
    stripped.interfaces[0].mtu = None;
    stripped.interfaces[0].pci_id = None;
    stripped.routes[0].mtu = None;
    for v in ["0.3.0", "0.3.1", "0.4.0", "1.0.0"] {
        assert_eq!(CniResult::parse(&r.to_json(v)).expect(v), stripped, "{v}");
    }
    let e = CniResult::parse(&json!({"cniVersion": "9.9.9"})).expect_err("version");
    assert_eq!(e.code, codes::INCOMPATIBLE_VERSION);
    assert_eq!(CniResult::parse(&json!([])).expect_err("array").code, codes::DECODE_FAILURE);
}

#[test]
fn errors_have_the_spec_shape() {
    let e = CniError::new(codes::TRY_AGAIN_LATER, "device busy", "eni-12345678 locked by another call");
    let j = e.to_json("1.0.0");
    assert_eq!(
        j,
        json!({"cniVersion": "1.0.0", "code": 11, "msg": "device busy", "details": "eni-12345678 locked by another call"})
    );
    assert!(CniError::invalid_config("x").to_json("1.1.0").get("details").is_none());
    assert_eq!((codes::PLUGIN_NOT_AVAILABLE, codes::PLUGIN_NOT_AVAILABLE_LIMITED), (50, 51));
}

#[test]
fn config_lists_parse_and_reject_bad_shapes() {
    let list = json!({"cniVersion": "1.0.0", "name": "l", "disableGC": true, "plugins": [{"type": "nodeeni"}, {"type": "tuning"}]});
    let l = NetConfList::parse(list.to_string().as_bytes()).expect("valid");
    assert_eq!((l.plugins.len(), l.disable_gc, l.disable_check, l.name.as_str()), (2, true, false, "l"));
    assert_eq!(l.cni_version, CniVersion::V1_0_0);
    let empty = json!({"cniVersion": "1.0.0", "name": "l", "plugins": []});
    expect_code(NetConfList::parse(empty.to_string().as_bytes()), 7, "plugins");
    let untyped = json!({"cniVersion": "1.0.0", "name": "l", "plugins": [{"name": "x"}]});
    expect_code(NetConfList::parse(untyped.to_string().as_bytes()), 7, "plugins[0].type");
    expect_code(NetConfList::parse(b"{]"), 6, "decode");
}
