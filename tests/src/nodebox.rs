//! A node in a box: everything a nodeeni node has, on this machine. A "vpc" namespace with each
//! subnet's gateway, moto as EC2 with the VPC, subnets, security group and the node's instance, the
//! node's namespace where the hot-plug stand-in makes attached ENIs appear (veth with the ENI's MAC,
//! a PCI device in an emulated sysfs), a kubelet stand-in on a device-plugin folder, vfio device nodes
//! in no-IOMMU form, and the daemon run as a process. Everything it starts it stops and everything it
//! creates it removes on drop, also when a test fails.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use nodeeni_state::node::{NodeState, NodeStore};

use crate::ec2world::{World, sdk, world_with};
use crate::hotplug::HotPlug;
use crate::kubelet::Kubelet;
use crate::moto::Moto;
use crate::netns::TestNs;
use crate::process::Process;
use crate::sysfs::FakeSysfs;
use crate::vpc::Vpc;

/// How old a /metrics rendering the daemon may serve (`http::METRICS_MAX_AGE`, 1 s), and a margin.
const METRICS_CACHE_WINDOW: Duration = Duration::from_millis(1100);

pub const CLUSTER: &str = "nib";
pub const KERNEL_RESOURCE: &str = "nodeeni.io/fast";
pub const DPDK_RESOURCE: &str = "nodeeni.io/dpdk";

/// Fields drop in order: the daemon first, then what it uses.
#[derive(Debug)]
pub struct NodeBox {
    pub daemon: Option<Process>,
    pub hotplug: HotPlug,
    pub kubelet: Kubelet,
    pub node: TestNs,
    pub vpc: Arc<Vpc>,
    pub sysfs: Arc<FakeSysfs>,
    pub raw: aws_sdk_ec2::Client,
    pub world: World,
    /// The EC2 endpoint the daemon is configured with (moto, or a proxy in front of it).
    pub ec2_endpoint: String,
    pub moto: Moto,
    pub metrics_port: u16,
    /// The node's EC2 instance type.
    pub instance_type: String,
    /// More flags for the daemon's `run`.
    pub extra_daemon_args: Vec<String>,
    /// The config's reconcileIntervalSeconds (2: tests want passes often), and its
    /// idleIntervalMaxSeconds (no idle back-off: a scenario's drift is repaired at the next interval;
    /// the back-off has its own test in ipam's pool_behaviour).
    pub reconcile_interval_secs: u32,
    /// The daemon's --health-interval-ms (200).
    pub health_interval_ms: u32,
    /// Whether the config file names the instance (cluster mode's Node can name it instead).
    pub identity_in_config: bool,
    pub dir: tempfile::TempDir,
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").and_then(|l| l.local_addr()).expect("free port").port()
}

impl NodeBox {
    /// Builds the box on a c5.4xlarge (8 ENIs: room for the primary and every pool of the
    /// scenarios); None (said on stderr) when moto is missing and CI is not set. Needs root.
    pub async fn start(label: &str) -> Option<Self> {
        Self::start_on(label, "c5.4xlarge").await
    }

    /// [`NodeBox::start`] on an instance of `instance_type`.
    pub async fn start_on(label: &str, instance_type: &str) -> Option<Self> {
        let moto = Moto::start(label)?;
        let raw = sdk(&moto.endpoint);
        let world = world_with(&raw, aws_sdk_ec2::types::InstanceType::from(instance_type)).await;
        let vpc = Arc::new(Vpc::new(label));
        for (_, cidr) in world.cidrs() {
            vpc.add_subnet(&cidr);
        }
        let node = TestNs::new(&format!("{label}-node"));
        let sysfs = Arc::new(FakeSysfs::new());
        let dir = tempfile::tempdir().expect("tempdir");
        for sub in ["state", "device-plugins", "devinfo", "dev/vfio", "cni-cache"] {
            std::fs::create_dir_all(dir.path().join(sub)).expect("mkdir");
        }
        // No-IOMMU vfio nodes, as on most EC2 instances: the stand-in gives index N group 10 + N.
        std::fs::write(dir.path().join("dev/vfio/vfio"), b"").expect("vfio");
        for group in 10..30 {
            std::fs::write(dir.path().join(format!("dev/vfio/noiommu-{group}")), b"").expect("vfio group");
        }
        let kubelet = Kubelet::start(&dir.path().join("device-plugins"));
        let hotplug =
            HotPlug::start(&moto.endpoint, &world.instance, node.name(), vpc.clone(), world.cidrs(), sysfs.clone());
        let ec2_endpoint = moto.endpoint.clone();
        Some(Self {
            daemon: None,
            hotplug,
            kubelet,
            node,
            vpc,
            sysfs,
            raw,
            world,
            ec2_endpoint,
            moto,
            metrics_port: free_port(),
            instance_type: instance_type.to_string(),
            extra_daemon_args: Vec::new(),
            reconcile_interval_secs: 2,
            health_interval_ms: 200,
            identity_in_config: true,
            dir,
        })
    }

    pub fn state_dir(&self) -> PathBuf {
        self.dir.path().join("state")
    }
    pub fn plugin_dir(&self) -> PathBuf {
        self.dir.path().join("device-plugins")
    }
    pub fn devinfo_dir(&self) -> PathBuf {
        self.dir.path().join("devinfo")
    }
    pub fn dev_root(&self) -> PathBuf {
        self.dir.path().join("dev")
    }
    pub fn config_path(&self) -> PathBuf {
        self.dir.path().join("config/pools.yaml")
    }

    /// Scenario 1's pools: two kernel ENIs and a host ENI in subnet a, one DPDK ENI in subnet c.
    pub fn standard_pools(&self) -> String {
        format!(
            "  - {{name: fast, mode: kernel, resourceName: {KERNEL_RESOURCE}, subnetIds: [{a}], securityGroupIds: [{sg}], enisPerSubnet: 2, firstDeviceIndex: 1, mtu: 9001}}\n\
             \x20 - {{name: dp, mode: dpdk, resourceName: {DPDK_RESOURCE}, subnetIds: [{c}], securityGroupIds: [{sg}], firstDeviceIndex: 3, dpdkDriver: vfio-pci}}\n\
             \x20 - {{name: masters, mode: host, subnetIds: [{a}], securityGroupIds: [{sg}], firstDeviceIndex: 4, mtu: 9001}}\n",
            a = self.world.subnet_a,
            c = self.world.subnet_c,
            sg = self.world.sg
        )
    }

    /// Cluster mode: the daemon runs as node `node_name` against the API-server stand-in `api`
    /// (a kubeconfig in the box's folder), and the config file names no instance: the Node does.
    pub fn cluster_mode(&mut self, api: &crate::apiserver::ApiServer, node_name: &str) {
        let kubeconfig = self.dir.path().join("kubeconfig");
        std::fs::write(&kubeconfig, api.kubeconfig()).expect("kubeconfig");
        self.extra_daemon_args.extend([
            "--node-name".into(),
            node_name.into(),
            "--kubeconfig".into(),
            kubeconfig.display().to_string(),
        ]);
        self.identity_in_config = false;
    }

    /// The whole pool configuration around `pools` (YAML list items; `[]` for none).
    pub fn config_text(&self, pools: &str) -> String {
        let node = if self.identity_in_config {
            format!(
                "node: {{instanceId: {instance}, availabilityZone: us-east-1a, instanceType: {instance_type}}}\n",
                instance = self.world.instance,
                instance_type = self.instance_type,
            )
        } else {
            String::new()
        };
        let pools = if pools.trim() == "[]" { " []\n".to_string() } else { format!("\n{pools}") };
        format!(
            "apiVersion: nodeeni.io/v1alpha1\nkind: PoolConfig\nclusterName: {CLUSTER}\nstateDir: {state}\n\
             reconcileIntervalSeconds: {interval}\nidleIntervalMaxSeconds: {interval}\nleakGraceSeconds: 3600\n{node}\
             ec2: {{endpointUrl: \"{ec2}\", region: us-east-1, retry: {{maxAttempts: 8, baseDelayMs: 50, maxDelayMs: 400}}}}\n\
             pools:{pools}",
            state = self.state_dir().display(),
            ec2 = self.ec2_endpoint,
            interval = self.reconcile_interval_secs,
        )
    }

    /// Writes the configuration file (atomically: a reload never sees half a file).
    pub fn write_config(&self, pools: &str) {
        self.write_config_text(&self.config_text(pools));
    }

    pub fn write_config_text(&self, text: &str) {
        let path = self.config_path();
        std::fs::create_dir_all(path.parent().expect("dir")).expect("mkdir");
        let tmp = path.with_extension("tmp");
        std::fs::write(&tmp, text).expect("write config");
        std::fs::rename(&tmp, &path).expect("rename config");
    }

    /// The daemon's command line.
    pub fn daemon_args(&self) -> Vec<String> {
        let mut args: Vec<String> = vec!["run".into(), "--config".into(), self.config_path().display().to_string()];
        for (flag, value) in [
            ("--device-plugin-dir", self.plugin_dir()),
            ("--sysfs-root", self.sysfs.root().to_path_buf()),
            ("--dev-root", self.dev_root()),
            ("--devinfo-dir", self.devinfo_dir()),
            ("--node-netns", self.node.path()),
        ] {
            args.push(flag.into());
            args.push(value.display().to_string());
        }
        args.extend([
            "--metrics-addr".into(),
            format!("127.0.0.1:{}", self.metrics_port),
            "--health-interval-ms".into(),
            self.health_interval_ms.to_string(),
            "--netdev-wait-secs".into(),
            "20".into(),
        ]);
        args.extend(self.extra_daemon_args.iter().cloned());
        args
    }

    /// Starts the daemon (its log in the box's folder, appended across restarts).
    pub fn start_daemon(&mut self) {
        let bin = crate::bins::path("nodeeni-device-plugin");
        let log = self.dir.path().join("daemon.log");
        self.daemon = Some(Process::spawn(
            &bin,
            &self.daemon_args(),
            &[
                ("AWS_ACCESS_KEY_ID", "testing"),
                ("AWS_SECRET_ACCESS_KEY", "testing"),
                ("AWS_EC2_METADATA_DISABLED", "true"),
                ("NODEENI_LOG", "info,nodeeni_ipam=debug"),
            ],
            &log,
        ));
    }

    pub fn daemon_log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("daemon.log")).unwrap_or_default()
    }

    pub fn store(&self) -> NodeStore {
        NodeStore::new(self.state_dir())
    }

    /// The node state now (empty before the daemon's first write).
    pub fn state(&self) -> NodeState {
        let store = self.store();
        if !store.exists() {
            return NodeState::default();
        }
        store.load(Duration::from_secs(5)).expect("node state")
    }

    /// Waits until `check` holds for the node state; panics with `what`, the state and the daemon's
    /// log when it does not within `timeout`.
    pub async fn wait_for_state(&self, what: &str, timeout: Duration, check: impl Fn(&NodeState) -> bool) -> NodeState {
        let context = || {
            format!(
                "state: {}\n--- daemon log ---\n{}",
                serde_json::to_string_pretty(&self.state()).unwrap_or_default(),
                self.daemon_log()
            )
        };
        crate::poll::eventually(what, timeout, async || Some(self.state()).filter(|s| check(s)), context).await
    }

    /// Waits until the scraped metric `key` satisfies `check`; panics with the daemon's log otherwise.
    pub async fn wait_for_metric(&self, key: &str, timeout: Duration, check: impl Fn(Option<f64>) -> bool) {
        let probe = async || check(self.metrics().get(key).copied()).then_some(());
        crate::poll::eventually(key, timeout, probe, || self.daemon_log()).await
    }

    /// GET `path` from the daemon's HTTP endpoint: (status, body).
    pub fn http_get(&self, path: &str) -> Result<(u16, String), String> {
        crate::http::get(self.metrics_port, path, Duration::from_secs(5))
    }

    /// Waits until the daemon has finished `n` more reconcile passes (ok or not) than now: the
    /// second one started after this call, so whatever a test checks next was judged by a whole pass.
    pub async fn wait_for_passes(&self, n: u32) {
        self.wait_for_more("nodeeni_reconcile_total", n).await
    }

    /// Waits until the drained daemon's pool loop has turned `n` more times (without a pass).
    pub async fn wait_for_paused_turns(&self, n: u32) {
        self.wait_for_more("nodeeni_reconcile_paused_total", n).await
    }

    async fn wait_for_more(&self, family: &str, n: u32) {
        let sum = |m: &BTreeMap<String, f64>| -> f64 {
            m.iter().filter(|(k, _)| k.split('{').next() == Some(family)).map(|(_, v)| v).sum()
        };
        // The daemon serves /metrics from a rendering up to a second old (its METRICS_MAX_AGE), which
        // may not count a pass that ended just before this call. A rendering made after the window
        // has passed counts every pass before now (and perhaps a few since, which only makes the wait
        // longer): that is the baseline.
        tokio::time::sleep(METRICS_CACHE_WINDOW).await;
        let target = sum(&self.metrics()) + f64::from(n);
        let timeout = Duration::from_secs(u64::from(self.reconcile_interval_secs) * u64::from(n) * 4 + 60);
        let probe = async || (sum(&self.metrics()) >= target).then_some(());
        crate::poll::eventually(family, timeout, probe, || self.daemon_log()).await
    }

    /// Scrapes /metrics and parses it (see [`parse_metrics`]).
    pub fn metrics(&self) -> BTreeMap<String, f64> {
        let (status, body) = self.http_get("/metrics").expect("scrape");
        assert_eq!(status, 200, "{body}");
        parse_metrics(&body).unwrap_or_else(|e| panic!("{e}\n{body}"))
    }

    /// A CNI network configuration for the nodeeni plugin, as Multus hands it over.
    pub fn write_cni_conf(&self, name: &str) -> PathBuf {
        let path = self.dir.path().join(format!("{name}.conf"));
        let conf = serde_json::json!({
            "cniVersion": "1.0.0",
            "name": name,
            "type": "nodeeni",
            "capabilities": {"deviceID": true},
            "stateDir": self.state_dir(),
            "logFile": self.dir.path().join("cni.log"),
        });
        std::fs::write(&path, conf.to_string()).expect("write conf");
        path
    }

    /// Runs the libcni driver in the node's namespace, as the runtime on the node would.
    /// `cycles` pods, one after another, each given `device` (CNI ADD) and giving it back (DEL)
    /// through libcni with the network config `conf`, in the pod namespace `pod`; panics naming the
    /// cycle and verb that failed.
    pub fn churn(&self, driver: &Path, conf: &Path, pod: &Path, device: &str, cycles: usize) {
        let cap = format!("deviceID={device}");
        for i in 0..cycles {
            let at =
                PodNet { conf: conf.into(), container: format!("churn-{i}"), pod: pod.into(), ifname: "net1".into() };
            for verb in ["add", "del"] {
                let (ok, out) = self.cni(driver, verb, &at, &[&cap]);
                assert!(ok, "cycle {i} {verb}: {out}");
            }
        }
    }

    pub fn cni(&self, driver: &Path, verb: &str, at: &PodNet, caps: &[&str]) -> (bool, String) {
        // The kubelet's checkpoint, the pod's UID and the CNI's node file (what a node has around a call).
        let kubelet = crate::allocation::kubelet_side(self.dir.path(), &self.state_dir(), verb, &at.container, caps);
        let out = self.node.run(|| {
            std::process::Command::new(driver)
                .args([verb, &at.conf.display().to_string(), &at.container, &at.pod.display().to_string(), &at.ifname])
                .args(caps)
                .env("TMPDIR", self.dir.path().join("cni-cache"))
                .envs(kubelet)
                .output()
                .expect("run libcni driver")
        });
        let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
        (out.status.success(), text)
    }
}

/// One pod attachment as the runtime names it: network config, container, pod namespace, ifname.
#[derive(Debug, Clone)]
pub struct PodNet {
    pub conf: PathBuf,
    pub container: String,
    pub pod: PathBuf,
    pub ifname: String,
}

/// Parses the Prometheus text format: every sample line `name{labels} value` into a map keyed by
/// `name{labels}` as written. Any line that is neither a comment nor a valid sample is an error.
pub fn parse_metrics(text: &str) -> Result<BTreeMap<String, f64>, String> {
    let mut out = BTreeMap::new();
    for line in text.lines() {
        if line.is_empty() || line.starts_with("# HELP ") || line.starts_with("# TYPE ") {
            continue;
        }
        let (key, value) = line.rsplit_once(' ').ok_or(format!("not a sample: {line:?}"))?;
        let value: f64 = match value {
            "+Inf" => f64::INFINITY,
            "-Inf" => f64::NEG_INFINITY,
            v => v.parse().map_err(|_| format!("bad value in {line:?}"))?,
        };
        let name_end = key.find('{').unwrap_or(key.len());
        let name = &key[..name_end];
        let valid_name = !name.is_empty()
            && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':')
            && !name.starts_with(|c: char| c.is_ascii_digit());
        if !valid_name || (name_end < key.len() && !key.ends_with('}')) {
            return Err(format!("bad metric name or labels in {line:?}"));
        }
        out.insert(key.to_string(), value);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn metric_lines_parse_and_garbage_does_not() {
        let m = parse_metrics("# HELP a x\n# TYPE a counter\na{b=\"c\"} 3\nd_bucket{le=\"+Inf\"} 1\ne 0.5\n")
            .expect("parse");
        assert_eq!(m.get("a{b=\"c\"}"), Some(&3.0));
        assert_eq!(m.get("e"), Some(&0.5));
        assert!(parse_metrics("a{b=\"c\" 3\n").is_err());
        assert!(parse_metrics("a{b=\"c\"} three\n").is_err());
        assert!(parse_metrics("9a 1\n").is_err());
    }
}
