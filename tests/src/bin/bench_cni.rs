//! Benchmark: ADD+DEL cycles of `nodeeni` and of Debian's host-device on the same veth stand-in, with
//! the same static IPAM, exec'd directly from inside a node namespace, alternating, many runs. Also
//! nodeeni with its built-in VPC addresses (no IPAM exec). Prints a markdown table: medians, ratios
//! against host-device, peak RSS of the plugin process, binary sizes.
//!
//! Usage: bench-cni NODEENI_BINARY [RUNS]   (run as root; scripts/bench-cni builds and calls it)

use std::io::Write;
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use nodeeni_state::atomic::{Durability, replace_file};
use nodeeni_tests::bench::median;
use nodeeni_tests::netns::TestNs;
use nodeeni_tests::vpc::Vpc;
use serde_json::{Value, json};

const HOST_DEVICE: &str = "/usr/lib/cni/host-device";
const MAC: &str = "0a:00:00:00:be:01";

struct Sample {
    elapsed: Duration,
    max_rss_kib: i64,
}

/// Runs `bin` with the CNI environment and `conf` on stdin; returns time and the child's peak RSS.
// The child is reaped by wait4 (not Child::wait), which is what hands us its rusage.
#[allow(clippy::zombie_processes)]
fn exec(bin: &Path, command: &str, conf: &Value, pod: &Path, cni_path: &str) -> Sample {
    let input = stdin_of(conf);
    let start = Instant::now();
    let mut child = plugin_command(Command::new(bin), command, conf, pod, cni_path)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn plugin");
    child.stdin.take().expect("stdin").write_all(input.as_bytes()).expect("stdin");
    let pid = child.id() as libc::pid_t;
    let mut status = 0;
    // SAFETY: zeroed rusage is a valid value; wait4 fills it for our own child.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: pid is our child; pointers are to live locals.
    let rc = unsafe { libc::wait4(pid, &mut status, 0, &mut usage) };
    let elapsed = start.elapsed();
    assert_eq!(rc, pid, "wait4");
    let mut out = String::new();
    if let Some(mut s) = child.stdout.take() {
        let _ = std::io::Read::read_to_string(&mut s, &mut out);
    }
    let ok = std::process::ExitStatus::from_raw(status).success();
    assert!(ok, "{} {command} failed: {out}", bin.display());
    Sample { elapsed, max_rss_kib: usage.ru_maxrss }
}

/// The pod the kubelet allocated the bench's pool ENI to (the checkpoint says so).
const POD_UID: &str = "bench-pod-uid";

/// `cmd` with the CNI environment of one call: a runtime's, with the pod's UID in CNI_ARGS. A
/// config holding `nodeFile` (the bench's own key, taken out before the plugin reads it) runs with
/// that node file, as the daemon's install writes one.
fn plugin_command(mut cmd: Command, command: &str, conf: &Value, pod: &Path, cni_path: &str) -> Command {
    cmd.env_clear()
        .env("CNI_COMMAND", command)
        .env("CNI_CONTAINERID", "bench")
        .env("CNI_NETNS", pod)
        .env("CNI_IFNAME", "net1")
        .env("CNI_PATH", cni_path)
        .env("CNI_ARGS", format!("IgnoreUnknown=1;K8S_POD_UID={POD_UID}"));
    if let Some(node_file) = conf.get("nodeFile").and_then(Value::as_str) {
        cmd.env("NODEENI_NODE_FILE", node_file);
    }
    cmd
}

/// The config as the plugin gets it (without the bench's `nodeFile`).
fn stdin_of(conf: &Value) -> String {
    let mut conf = conf.clone();
    if let Some(m) = conf.as_object_mut() {
        m.remove("nodeFile");
    }
    conf.to_string()
}

struct Series {
    add: Vec<Duration>,
    del: Vec<Duration>,
    rss: i64,
}

impl Series {
    fn new() -> Self {
        Self { add: Vec::new(), del: Vec::new(), rss: 0 }
    }
    fn cycle(&mut self, bin: &Path, conf: &Value, pod: &Path, cni_path: &str) {
        let a = exec(bin, "ADD", conf, pod, cni_path);
        let d = exec(bin, "DEL", conf, pod, cni_path);
        self.add.push(a.elapsed);
        self.del.push(d.elapsed);
        self.rss = self.rss.max(a.max_rss_kib).max(d.max_rss_kib);
    }
    fn medians(&self) -> (Duration, Duration, Duration) {
        let cycles: Vec<Duration> = self.add.iter().zip(&self.del).map(|(a, d)| *a + *d).collect();
        (median(&self.add), median(&self.del), median(&cycles))
    }
}

fn ms(d: Duration) -> String {
    format!("{:.2}", d.as_secs_f64() * 1000.0)
}

fn main() {
    let mut args = std::env::args().skip(1);
    let nodeeni = PathBuf::from(args.next().expect("usage: bench-cni NODEENI_BINARY [RUNS]"));
    let runs: usize = args.next().map_or(200, |r| r.parse().expect("RUNS is a number"));
    let cni_path = format!("{}:/usr/lib/cni", nodeeni.parent().expect("dir").display());
    let state = tempfile::tempdir().expect("state dir");

    let node = TestNs::new("bench-node");
    let vpc = Vpc::new("bench");
    vpc.add_subnet("10.0.1.0/24");
    vpc.plug(&node, "eth1", MAC, "10.0.1.0/24");
    let pod = TestNs::new("bench-pod");

    let ipam = json!({"type": "static", "addresses": [{"address": "10.0.1.20/24", "gateway": "10.0.1.1"}]});
    let base = |t: &str| json!({"cniVersion": "1.0.0", "name": "bench", "type": t, "device": "eth1", "ipam": ipam});
    // Standalone, like host-device: a device by name, no node state (its own state folder).
    let standalone = tempfile::tempdir().expect("standalone state dir");
    let mut ours_static = base("nodeeni");
    ours_static["stateDir"] = json!(standalone.path());
    ours_static["sysfsRoot"] = json!(standalone.path().join("sys"));
    let theirs = base("host-device");
    // The VPC-address path, as where the daemon runs: the node file, the ENI from the node state
    // (claimed for the pod the kubelet's checkpoint allocated it to), no IPAM plugin exec'd.
    let node_state = json!({"version": 1, "enis": [{
        "eniId": "eni-0000000000000be01", "pool": "bench", "mode": "kernel", "lifecycle": "ready",
        "subnetCidr": "10.0.1.0/24", "primaryIp": "10.0.1.30", "mac": MAC, "deviceIndex": 1, "updatedUnix": 0
    }]});
    std::fs::write(state.path().join("node-state.json"), node_state.to_string()).expect("node state");
    let checkpoint = state.path().join("kubelet_internal_checkpoint");
    let entries = json!({"Data": {"PodDeviceEntries": [{"PodUID": POD_UID, "ContainerName": "app",
        "ResourceName": "nodeeni.io/bench", "DeviceIDs": {"-1": ["eni-0000000000000be01"]}}]}});
    std::fs::write(&checkpoint, entries.to_string()).expect("checkpoint");
    let node_file = state.path().join("node.json");
    let node_settings =
        json!({"stateDir": state.path(), "sysfsRoot": state.path().join("sys"), "kubeletCheckpoint": checkpoint});
    std::fs::write(&node_file, node_settings.to_string()).expect("node file");
    let ours_vpc = json!({"cniVersion": "1.0.0", "name": "bench", "type": "nodeeni",
        "runtimeConfig": {"deviceID": "eni-0000000000000be01"}, "nodeFile": node_file});

    let (mut ns, mut hd, mut vp) = (Series::new(), Series::new(), Series::new());
    let pod_path = pod.path();
    node.run(|| {
        // Warm the page cache for all three before measuring.
        for _ in 0..3 {
            ns.cycle(&nodeeni, &ours_static, &pod_path, &cni_path);
            hd.cycle(Path::new(HOST_DEVICE), &theirs, &pod_path, &cni_path);
            vp.cycle(&nodeeni, &ours_vpc, &pod_path, &cni_path);
        }
        (ns, hd, vp) = (Series::new(), Series::new(), Series::new());
        for _ in 0..runs {
            ns.cycle(&nodeeni, &ours_static, &pod_path, &cni_path);
            hd.cycle(Path::new(HOST_DEVICE), &theirs, &pod_path, &cni_path);
            vp.cycle(&nodeeni, &ours_vpc, &pod_path, &cni_path);
        }
    });
    assert!(node.has_link("eth1"), "the stand-in is back on the node after every cycle");

    let (hd_add, hd_del, hd_cycle) = hd.medians();
    let ratio = |d: Duration| format!("{:.2}×", d.as_secs_f64() / hd_cycle.as_secs_f64());
    let size = |p: &Path| std::fs::metadata(p).map(|m| format!("{:.2} MB", m.len() as f64 / 1e6)).unwrap_or_default();
    println!("CNI benchmark: {runs} alternating ADD+DEL cycles per plugin on one veth stand-in (medians)\n");
    println!("| plugin | IPAM | ADD ms | DEL ms | cycle ms | cycle vs host-device | peak RSS | binary |");
    println!("|---|---|---|---|---|---|---|---|");
    println!(
        "| host-device (Debian) | static (exec) | {} | {} | {} | 1.00× | {} KiB | {} |",
        ms(hd_add),
        ms(hd_del),
        ms(hd_cycle),
        hd.rss,
        size(Path::new(HOST_DEVICE))
    );
    let (a, d, c) = ns.medians();
    nodeeni_tests::bench::record("cni_add_ms_hostdevice", ms(hd_add));
    nodeeni_tests::bench::record("cni_del_ms_hostdevice", ms(hd_del));
    nodeeni_tests::bench::record("cni_cycle_ms_hostdevice", ms(hd_cycle));
    nodeeni_tests::bench::record("cni_add_ms_nodeeni", ms(a));
    nodeeni_tests::bench::record("cni_del_ms_nodeeni", ms(d));
    nodeeni_tests::bench::record("cni_cycle_ms_nodeeni", ms(c));
    nodeeni_tests::bench::record("cni_cycle_ratio", ratio(c));
    nodeeni_tests::bench::record("cni_rss_kib_nodeeni", ns.rss);
    nodeeni_tests::bench::record("cni_rss_kib_hostdevice", hd.rss);
    nodeeni_tests::bench::record("cni_binary_nodeeni", size(&nodeeni));
    nodeeni_tests::bench::record("cni_binary_hostdevice", size(Path::new(HOST_DEVICE)));
    println!(
        "| nodeeni | static (exec) | {} | {} | {} | {} | {} KiB | {} |",
        ms(a),
        ms(d),
        ms(c),
        ratio(c),
        ns.rss,
        size(&nodeeni)
    );
    let (a, d, c) = vp.medians();
    nodeeni_tests::bench::record("cni_add_ms_nodeeni_vpc", ms(a));
    nodeeni_tests::bench::record("cni_del_ms_nodeeni_vpc", ms(d));
    nodeeni_tests::bench::record("cni_cycle_ratio_vpc", ratio(c));
    println!(
        "| nodeeni | VPC addresses (built in) | {} | {} | {} | {} | {} KiB | {} |",
        ms(a),
        ms(d),
        ms(c),
        ratio(c),
        vp.rss,
        size(&nodeeni)
    );
    // The kernel's share: moving the link into the pod and back, as both plugins must (via ip(8), so
    // this includes two short process launches).
    let moves: Vec<Duration> = (0..runs.min(50))
        .map(|_| {
            let start = Instant::now();
            node.ip(&["link", "set", "eth1", "netns", pod.name()]);
            pod.ip(&["link", "set", "eth1", "netns", node.name()]);
            start.elapsed()
        })
        .collect();
    let floor = median(&moves);
    nodeeni_tests::bench::record("kernel_floor_ms", ms(floor));
    nodeeni_tests::bench::record("kernel_floor_ratio", format!("{:.2}×", floor.as_secs_f64() / hd_cycle.as_secs_f64()));
    println!(
        "\nKernel floor: the link into the pod and back with ip(8), median of {}: {} ms ({:.2}× of host-device's cycle).",
        moves.len(),
        ms(floor),
        floor.as_secs_f64() / hd_cycle.as_secs_f64()
    );
    let static_alone: Vec<Duration> = (0..runs.min(50))
        .map(|_| {
            node.run(|| exec(Path::new("/usr/lib/cni/static"), "ADD", &ipam_only(&ipam), &pod_path, &cni_path).elapsed)
        })
        .collect();
    println!(
        "\nThe static IPAM exec alone (ADD, median of {}): {} ms — {:.2}× of host-device's cycle.",
        static_alone.len(),
        ms(median(&static_alone)),
        median(&static_alone).as_secs_f64() / hd_cycle.as_secs_f64()
    );

    // Durability: every shared file the CNI writes is fsync'd before its rename and its folder after
    // (power loss must not leave a torn node state). What that costs here: one replacement of the node
    // state in the state folder the cycles used, durable against crash-safe only, and the fsyncs one
    // cycle of the VPC-address path makes.
    let body = std::fs::read(state.path().join("node-state.json")).expect("node state");
    let probe = state.path().join("durability-probe.json");
    let time_writes = |durability: Durability| {
        let samples: Vec<Duration> = (0..runs)
            .map(|_| {
                let start = Instant::now();
                replace_file(&probe, &body, 0o644, durability).expect("write");
                start.elapsed()
            })
            .collect();
        median(&samples)
    };
    let (durable, crash_only) = (time_writes(Durability::PowerLoss), time_writes(Durability::ProcessCrash));
    let syncs = node.run(|| fsyncs_per_cycle(&nodeeni, &ours_vpc, &pod_path, &cni_path, state.path()));
    // Each durable replacement is two fsyncs (the file, then its folder).
    let per_cycle = (durable.saturating_sub(crash_only)) * u32::try_from(syncs / 2).unwrap_or(u32::MAX);
    // The fsyncs were counted on the VPC-address path (the daemon's: a node-state claim and release
    // besides the attachment record), so its cycle is the one they are a share of.
    let (_, _, cycle) = vp.medians();
    nodeeni_tests::bench::record("cni_durable_write_us", format!("{:.0}", durable.as_secs_f64() * 1e6));
    nodeeni_tests::bench::record("cni_crash_only_write_us", format!("{:.0}", crash_only.as_secs_f64() * 1e6));
    nodeeni_tests::bench::record("cni_fsyncs_per_cycle", syncs);
    nodeeni_tests::bench::record("cni_durability_ms_per_cycle", ms(per_cycle));
    println!(
        "\nDurable writes: replacing the node state with fsyncs {} µs, crash-safe only {} µs (medians of {runs}); \
         one ADD+DEL cycle makes {syncs} fsyncs: about {} ms of its {} ms.",
        durable.as_micros(),
        crash_only.as_micros(),
        ms(per_cycle),
        ms(cycle)
    );
}

/// The fsyncs one ADD and one DEL of `bin` make, counted by strace(1) (installed by install-deps).
fn fsyncs_per_cycle(bin: &Path, conf: &Value, pod: &Path, cni_path: &str, dir: &Path) -> usize {
    let trace = dir.join("fsyncs.trace");
    let mut count = 0;
    for command in ["ADD", "DEL"] {
        let mut strace = Command::new("strace");
        strace.args(["-f", "-qq", "-e", "trace=fsync,fdatasync", "-o"]).arg(&trace).arg(bin);
        let mut child = plugin_command(strace, command, conf, pod, cni_path)
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("strace (install-deps installs it)");
        child.stdin.take().expect("stdin").write_all(stdin_of(conf).as_bytes()).expect("stdin");
        assert!(child.wait().expect("wait").success(), "{command} under strace failed");
        let text = std::fs::read_to_string(&trace).expect("trace");
        count += text.lines().filter(|l| l.contains("fsync(") || l.contains("fdatasync(")).count();
    }
    count
}

fn ipam_only(ipam: &Value) -> Value {
    json!({"cniVersion": "1.0.0", "name": "bench", "type": "static", "ipam": ipam})
}
