//! A node for CNI tests: a "node" namespace where the plugin runs (its host), a VPC namespace with a
//! subnet gateway, pods as namespaces, ENI stand-ins as veths, a private state folder and sysfs tree.

#![allow(dead_code)]

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use nodeeni_tests::netns::TestNs;
use nodeeni_tests::sysfs::FakeSysfs;
use nodeeni_tests::vpc::Vpc;
use serde_json::{Value, json};

pub const SUBNET: &str = "10.0.1.0/24";
pub const GATEWAY: &str = "10.0.1.1";

pub fn plugin() -> &'static str {
    env!("CARGO_BIN_EXE_nodeeni")
}

/// CNI_PATH: our plugin's folder, then Debian's reference plugins.
pub fn cni_path() -> String {
    let ours = Path::new(plugin()).parent().expect("bin dir").display().to_string();
    format!("{ours}:/usr/lib/cni")
}

#[derive(Debug)]
pub struct Outcome {
    pub ok: bool,
    pub stdout: String,
    pub stderr: String,
    pub json: Value,
}

impl Outcome {
    pub fn code(&self) -> Option<u64> {
        self.json.get("code").and_then(Value::as_u64)
    }

    pub fn msg(&self) -> String {
        self.json.get("msg").and_then(Value::as_str).unwrap_or_default().to_string()
    }

    #[track_caller]
    pub fn expect_ok(self) -> Value {
        assert!(self.ok, "plugin failed: {} {}", self.stdout, self.stderr);
        self.json
    }

    #[track_caller]
    pub fn expect_code(&self, code: u64, words: &str) {
        assert!(!self.ok, "expected error {code}, got success: {}", self.stdout);
        assert_eq!(self.code(), Some(code), "stdout: {}", self.stdout);
        assert!(self.msg().contains(words), "{:?} should mention {words:?}", self.msg());
    }
}

pub struct NodeBox {
    pub node: TestNs,
    pub vpc: Vpc,
    pub state: tempfile::TempDir,
    pub sysfs: FakeSysfs,
    pub log: PathBuf,
    /// Root's folder for this box's node file (NODEENI_NODE_FILE points into it; absent until written,
    /// so the machine's own /etc/nodeeni/node.json never leaks into a test).
    pub etc: tempfile::TempDir,
}

impl NodeBox {
    pub fn new(label: &str) -> Self {
        let node = TestNs::new(&format!("{label}-n"));
        let vpc = Vpc::new(label);
        vpc.add_subnet(SUBNET);
        let state = tempfile::tempdir().expect("state dir");
        let log = state.path().join("cni.log");
        let etc = tempfile::tempdir().expect("etc dir");
        Self { node, vpc, state, sysfs: FakeSysfs::new(), log, etc }
    }

    /// An ENI stand-in on the node, wired to the subnet.
    pub fn eni(&self, ifname: &str, mac: &str) {
        self.vpc.plug(&self.node, ifname, mac, SUBNET);
    }

    pub fn pod(&self, label: &str) -> TestNs {
        TestNs::new(&format!("{label}-p"))
    }

    /// A config with our state folder, sysfs tree and log file filled in.
    pub fn conf(&self, version: &str, extra: Value) -> Value {
        let mut c = json!({
            "cniVersion": version,
            "name": "enis",
            "type": "nodeeni",
            "stateDir": self.state.path(),
            "sysfsRoot": self.sysfs.root(),
            "logFile": self.log,
            "logLevel": "debug",
        });
        if let (Value::Object(base), Value::Object(more)) = (&mut c, extra) {
            base.extend(more);
        }
        c
    }

    pub fn node_file(&self) -> PathBuf {
        self.etc.path().join("node.json")
    }

    /// Writes this box's node file (root's, 0644): `extra` over the box's own paths, which the configs
    /// of [`NodeBox::conf`] repeat (and so may keep).
    pub fn write_node_file(&self, extra: Value) {
        let mut file = json!({
            "stateDir": self.state.path(),
            "sysfsRoot": self.sysfs.root(),
            "logFile": self.log,
            "kubeletCheckpoint": self.checkpoint(),
        });
        if let (Value::Object(base), Value::Object(more)) = (&mut file, extra) {
            base.extend(more);
        }
        std::fs::write(self.node_file(), file.to_string()).expect("node file");
        std::fs::set_permissions(self.node_file(), std::os::unix::fs::PermissionsExt::from_mode(0o644))
            .expect("chmod node file");
    }

    /// Where the node file points the kubelet's checkpoint.
    pub fn checkpoint(&self) -> PathBuf {
        self.etc.path().join("kubelet_internal_checkpoint")
    }

    /// Writes the kubelet's checkpoint: each (pod UID, resource, device IDs) as the device manager does.
    pub fn write_checkpoint(&self, entries: &[(&str, &str, &[&str])]) {
        let entries: Vec<Value> = entries
            .iter()
            .map(|(uid, resource, ids)| {
                json!({"PodUID": uid, "ContainerName": "app", "ResourceName": resource, "DeviceIDs": {"-1": ids}, "AllocResp": ""})
            })
            .collect();
        let doc = json!({"Data": {"PodDeviceEntries": entries, "RegisteredDevices": {}}, "Checksum": 0});
        std::fs::write(self.checkpoint(), doc.to_string()).expect("checkpoint");
    }

    /// Runs the plugin on the node with raw stdin and explicit environment (and this box's node file).
    pub fn exec_raw(&self, stdin: &[u8], env: &[(&str, &str)]) -> Outcome {
        let node_file = self.node_file();
        let out = self.node.run(|| {
            let mut child = Command::new(plugin())
                .env_clear()
                .env("PATH", "/usr/sbin:/usr/bin:/sbin:/bin")
                .env("NODEENI_NODE_FILE", &node_file)
                .envs(env.iter().copied())
                .stdin(Stdio::piped())
                .stdout(Stdio::piped())
                .stderr(Stdio::piped())
                .spawn()
                .expect("spawn plugin");
            // A plugin may exit without reading stdin; that is its answer, not a harness failure.
            match child.stdin.take().expect("stdin").write_all(stdin) {
                Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => {}
                other => other.expect("write stdin"),
            }
            child.wait_with_output().expect("wait plugin")
        });
        let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
        let json = if stdout.trim().is_empty() {
            Value::Null
        } else {
            serde_json::from_str(&stdout).unwrap_or_else(|e| panic!("stdout is not JSON ({e}): {stdout:?}"))
        };
        Outcome { ok: out.status.success(), stderr: String::from_utf8_lossy(&out.stderr).into_owned(), stdout, json }
    }

    /// Runs `command` for (container, pod, ifname) with `conf` on stdin.
    pub fn cni(&self, command: &str, conf: &Value, container: &str, pod: Option<&Path>, ifname: &str) -> Outcome {
        self.cni_args(command, conf, container, pod, ifname, "")
    }

    /// [`NodeBox::cni`] with CNI_ARGS (`K8S_POD_UID=…`, as runtimes and Multus pass it).
    pub fn cni_args(
        &self,
        command: &str,
        conf: &Value,
        container: &str,
        pod: Option<&Path>,
        ifname: &str,
        args: &str,
    ) -> Outcome {
        let netns = pod.map(|p| p.display().to_string()).unwrap_or_default();
        let path = cni_path();
        let mut env = vec![
            ("CNI_COMMAND", command),
            ("CNI_CONTAINERID", container),
            ("CNI_IFNAME", ifname),
            ("CNI_PATH", path.as_str()),
        ];
        if pod.is_some() {
            env.push(("CNI_NETNS", netns.as_str()));
        }
        if !args.is_empty() {
            env.push(("CNI_ARGS", args));
        }
        self.exec_raw(conf.to_string().as_bytes(), &env)
    }

    pub fn records(&self) -> Vec<String> {
        std::fs::read_dir(self.state.path().join("attachments"))
            .map(|d| d.filter_map(|e| e.ok()).map(|e| e.file_name().to_string_lossy().into_owned()).collect())
            .unwrap_or_default()
    }

    pub fn lock_files(&self) -> usize {
        std::fs::read_dir(self.state.path().join("locks")).map(|d| d.count()).unwrap_or(0)
    }

    /// Writes a node state with one ready kernel-pool ENI per (eni id, mac, primary ip) given.
    pub fn node_state(&self, pool: &str, enis: &[(&str, &str, &str)]) {
        let records: Vec<Value> = enis
            .iter()
            .enumerate()
            .map(|(i, (id, mac, ip))| {
                json!({
                    "eniId": id, "pool": pool, "mode": "kernel", "lifecycle": "ready",
                    "subnetCidr": SUBNET, "primaryIp": ip, "secondaryIps": [],
                    "mac": mac, "deviceIndex": i + 1, "mtu": 9001, "updatedUnix": 0
                })
            })
            .collect();
        let state = json!({"version": 1, "enis": records});
        std::fs::write(self.state.path().join("node-state.json"), serde_json::to_vec_pretty(&state).expect("json"))
            .expect("write state");
    }

    pub fn write_node_state(&self, state: &Value) {
        std::fs::write(self.state.path().join("node-state.json"), serde_json::to_vec_pretty(state).expect("json"))
            .expect("write state");
    }

    pub fn node_state_json(&self) -> Value {
        serde_json::from_slice(&std::fs::read(self.state.path().join("node-state.json")).expect("state")).expect("json")
    }
}
