//! Daemon benchmark on a node in a box: 3 pools of 4 ENIs (two kernel, one DPDK) warmed against moto,
//! with production settings (a reconcile pass a minute, health every 500 ms); then the daemon's idle RSS, Allocate latency (p50/p99) against the same gRPC connection's empty
//! call (GetDevicePluginOptions, the floor of any RPC over the socket), and pod churn through libcni.
//!
//! Usage: bench-daemon [ALLOCATES] [CHURN_CYCLES]   (root; defaults 2000 and 100)
//! With NODEENI_BENCH_OUT set, appends `key<TAB>value` lines there for scripts/bench.

use std::time::{Duration, Instant};

use nodeeni_proto::deviceplugin::v1beta1 as api;
use nodeeni_tests::bench::record;
use nodeeni_tests::netns::TestNs;
use nodeeni_tests::nodebox::{NodeBox, PodNet};

fn percentile(mut v: Vec<Duration>, p: f64) -> Duration {
    v.sort();
    let i = ((v.len() as f64 - 1.0) * p).round() as usize;
    v[i]
}

fn us(d: Duration) -> String {
    format!("{:.0}", d.as_secs_f64() * 1e6)
}

fn rss_kib(pid: u32, field: &str) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_default()
        .lines()
        .find(|l| l.starts_with(field))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|n| n.parse().ok())
        .unwrap_or(0)
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let mut args = std::env::args().skip(1);
    let allocates: usize = args.next().and_then(|a| a.parse().ok()).unwrap_or(2000);
    let cycles: usize = args.next().and_then(|a| a.parse().ok()).unwrap_or(100);
    assert!(nix::unistd::geteuid().is_root(), "bench-daemon needs root (network namespaces)");
    let driver = nodeeni_tests::bins::libcni_driver().expect("the libcni driver");
    // m5.24xlarge takes 15 ENIs: the primary and 3 pools of 4.
    let mut nb = NodeBox::start_on("bench-daemon", "m5.24xlarge").await.expect("moto (run scripts/install-deps)");
    let (a, c, sg) = (nb.world.subnet_a.clone(), nb.world.subnet_c.clone(), nb.world.sg.clone());
    // Production settings: a pass a minute, health every half second.
    nb.reconcile_interval_secs = 60;
    nb.health_interval_ms = 500;
    nb.write_config(&format!(
        "  - {{name: fast, mode: kernel, resourceName: nodeeni.io/fast, subnetIds: [{a}], securityGroupIds: [{sg}], enisPerSubnet: 4, firstDeviceIndex: 1}}\n\
         \x20 - {{name: signalling, mode: kernel, resourceName: nodeeni.io/signalling, subnetIds: [{c}], securityGroupIds: [{sg}], enisPerSubnet: 4, firstDeviceIndex: 5}}\n\
         \x20 - {{name: dp, mode: dpdk, resourceName: nodeeni.io/dpdk, subnetIds: [{c}], securityGroupIds: [{sg}], enisPerSubnet: 4, firstDeviceIndex: 9}}\n"
    ));
    let started = Instant::now();
    nb.start_daemon();
    let state = nb
        .wait_for_state("12 ENIs ready", Duration::from_secs(180), |s| {
            s.enis.len() == 12 && s.enis.iter().all(|e| e.lifecycle == nodeeni_state::node::Lifecycle::Ready)
        })
        .await;
    let warm = started.elapsed();
    for r in ["nodeeni.io/fast", "nodeeni.io/signalling", "nodeeni.io/dpdk"] {
        nb.kubelet.wait_registered(r, 1, Duration::from_secs(30)).await;
    }
    let pid = nb.daemon.as_ref().and_then(|d| d.pid()).expect("daemon pid");
    // The hot-plug stand-in polls moto; a real node's kernel does not: quiet it for the measurements.
    nb.hotplug.stop();

    // Idle: let a few reconcile passes and health rounds go by.
    tokio::time::sleep(Duration::from_secs(6)).await;
    let idle_rss = rss_kib(pid, "VmRSS:");

    let fast: Vec<String> = state
        .enis
        .iter()
        .filter(|e| e.pool == "fast")
        .filter_map(|e| e.eni_id.as_ref().map(ToString::to_string))
        .collect();
    let mut client = nb.kubelet.client("nodeeni-fast.sock").await;
    let mut alloc = Vec::with_capacity(allocates);
    let mut empty = Vec::with_capacity(allocates);
    for i in 0..allocates + 100 {
        let t = Instant::now();
        client.get_device_plugin_options(api::Empty {}).await.expect("options");
        let e = t.elapsed();
        let req = api::AllocateRequest {
            container_requests: vec![api::ContainerAllocateRequest { devices_ids: vec![fast[i % fast.len()].clone()] }],
        };
        let t = Instant::now();
        client.allocate(req).await.expect("allocate");
        let a = t.elapsed();
        if i >= 100 {
            empty.push(e);
            alloc.push(a);
        }
    }
    let (a50, a99) = (percentile(alloc.clone(), 0.5), percentile(alloc, 0.99));
    let (e50, e99) = (percentile(empty.clone(), 0.5), percentile(empty, 0.99));
    let peak_rss = rss_kib(pid, "VmHWM:");

    // Churn through libcni with the daemon running.
    let pod = TestNs::new("bench-daemon-pod");
    let conf = nb.write_cni_conf("fast");
    let cap = format!("deviceID={}", fast[0]);
    let t = Instant::now();
    for i in 0..cycles {
        let at = PodNet { conf: conf.clone(), container: format!("churn-{i}"), pod: pod.path(), ifname: "net1".into() };
        let (ok, out) = nb.cni(&driver, "add", &at, &[&cap]);
        assert!(ok, "ADD {i}: {out}");
        let (ok, out) = nb.cni(&driver, "del", &at, &[&cap]);
        assert!(ok, "DEL {i}: {out}");
    }
    let churn = cycles as f64 / t.elapsed().as_secs_f64();

    println!("Daemon benchmark: 3 pools of 4 ENIs (12 warmed in {:.1} s against moto)\n", warm.as_secs_f64());
    println!("| measure | value | reference |");
    println!("|---|---|---|");
    println!(
        "| Allocate, 1 device, p50 / p99 ({allocates} calls) | {} / {} µs | empty RPC on the same socket: {} / {} µs; target p99 < 1000 µs |",
        us(a50),
        us(a99),
        us(e50),
        us(e99)
    );
    println!("| daemon RSS idle | {:.1} MiB | target < 20 MiB |", idle_rss as f64 / 1024.0);
    println!("| daemon peak RSS (after the Allocate run) | {:.1} MiB | |", peak_rss as f64 / 1024.0);
    println!(
        "| pod churn through libcni, daemon running | {churn:.1} cycles/s | {cycles} ADD+DEL cycles, each a libcni driver process |"
    );
    record("allocate_p50_us", us(a50));
    record("allocate_p99_us", us(a99));
    record("empty_rpc_p50_us", us(e50));
    record("empty_rpc_p99_us", us(e99));
    record("idle_rss_mib", format!("{:.1}", idle_rss as f64 / 1024.0));
    record("churn_cycles_per_s", format!("{churn:.1}"));
    let daemon_bin = nodeeni_tests::bins::path("nodeeni-device-plugin");
    let size = std::fs::metadata(&daemon_bin).map(|m| m.len()).unwrap_or(0);
    record("daemon_binary_mb", format!("{:.2}", size as f64 / 1e6));
    if let Some(d) = nb.daemon.as_mut() {
        d.terminate();
    }
}
