//! Daemon benchmark on a node in a box: 3 pools of 4 ENIs (two kernel, one DPDK) warmed against moto,
//! with production settings (a reconcile pass a minute, health every 500 ms); then the daemon's idle
//! RSS, Allocate latency (p50/p99) against the same gRPC connection's empty call
//! (GetDevicePluginOptions, the floor of any RPC over the socket), how soon every resource is
//! registered again after a kubelet restart (target 2 s), how soon a netdev going down or up reaches
//! ListAndWatch (target 1 s), and pod churn through libcni.
//!
//! Usage: bench-daemon [ALLOCATES] [CHURN_CYCLES] [REPEATS]   (root; defaults 2000, 100 and 10)
//! With NODEENI_BENCH_OUT set, appends `key<TAB>value` lines there for scripts/bench.

use std::time::{Duration, Instant};

use nodeeni_proto::deviceplugin::v1beta1 as api;
use nodeeni_tests::bench::record;
use nodeeni_tests::hotplug::link_with_mac;
use nodeeni_tests::netns::TestNs;
use nodeeni_tests::nodebox::NodeBox;

fn percentile(mut v: Vec<Duration>, p: f64) -> Duration {
    v.sort();
    let i = ((v.len() as f64 - 1.0) * p).round() as usize;
    v[i]
}

fn us(d: Duration) -> String {
    format!("{:.0}", d.as_secs_f64() * 1e6)
}

fn ms(d: Duration) -> String {
    format!("{:.0}", d.as_secs_f64() * 1e3)
}

/// Reads ListAndWatch until `id` has `health`; how long that took.
async fn until_health(stream: &mut tonic::Streaming<api::ListAndWatchResponse>, id: &str, health: &str) -> Duration {
    use tokio_stream::StreamExt;
    let t = Instant::now();
    loop {
        let next = tokio::time::timeout(Duration::from_secs(30), stream.next()).await;
        let list = next.expect("a ListAndWatch update").expect("the stream is open").expect("ok");
        if list.devices.iter().any(|d| d.id == id && d.health == health) {
            return t.elapsed();
        }
    }
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
    let repeats: usize = args.next().and_then(|a| a.parse().ok()).unwrap_or(10);
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
    let mut client = nb.kubelet.client("nodeeni-nodeeni.io_fast.sock").await;
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
    drop(client);

    // Kubelet restarts (every socket deleted, a new kubelet.sock): from the new kubelet listening until
    // all three resources are registered with it again, watched every millisecond.
    let resources = ["nodeeni.io/fast", "nodeeni.io/signalling", "nodeeni.io/dpdk"];
    let registered = |nb: &NodeBox, r: &str| nb.kubelet.registrations().iter().filter(|q| q.resource_name == r).count();
    let mut reregister = Vec::with_capacity(repeats);
    for _ in 0..repeats {
        let before: Vec<usize> = resources.iter().map(|r| registered(&nb, r)).collect();
        nb.kubelet.restart().await;
        let t = Instant::now();
        while resources.iter().zip(&before).any(|(r, n)| registered(&nb, r) <= *n) {
            assert!(t.elapsed() < Duration::from_secs(30), "not registered again: {:?}", nb.kubelet.registrations());
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        reregister.push(t.elapsed());
    }

    // A kernel-pool ENI's netdev goes down, then up: until ListAndWatch says so. Each flip waits a
    // different part of the health interval first: flipping right after an update would always land
    // just after a health round and measure a whole interval every time.
    let flip = &fast[1];
    let mac = state.enis.iter().find(|e| e.eni_id.as_ref().map(ToString::to_string).as_ref() == Some(flip));
    let ifname = link_with_mac(nb.node.name(), &mac.and_then(|e| e.mac).expect("mac").to_string()).expect("netdev");
    let mut client = nb.kubelet.client("nodeeni-nodeeni.io_fast.sock").await;
    let mut stream = client.list_and_watch(api::Empty {}).await.expect("watch").into_inner();
    until_health(&mut stream, flip, api::HEALTHY).await;
    let mut to_stream = Vec::with_capacity(2 * repeats);
    let offset = |i: usize| Duration::from_millis((i as u64 * 379) % nb.health_interval_ms as u64);
    for i in 0..repeats {
        tokio::time::sleep(offset(2 * i)).await;
        nb.node.ip(&["link", "set", &ifname, "down"]);
        to_stream.push(until_health(&mut stream, flip, api::UNHEALTHY).await);
        tokio::time::sleep(offset(2 * i + 1)).await;
        nb.node.ip(&["link", "set", &ifname, "up"]);
        to_stream.push(until_health(&mut stream, flip, api::HEALTHY).await);
    }
    let (r50, rmax) = (percentile(reregister.clone(), 0.5), percentile(reregister, 1.0));
    let (h50, hmax) = (percentile(to_stream.clone(), 0.5), percentile(to_stream, 1.0));

    // Churn through libcni with the daemon running.
    let pod = TestNs::new("bench-daemon-pod");
    let conf = nb.write_cni_conf("fast");
    let t = Instant::now();
    nb.churn(&driver, &conf, &pod.path(), &fast[0], cycles);
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
    println!(
        "| kubelet restarted → all 3 resources registered with it again, median / max ({repeats}) | {} / {} ms | target < 2000 ms |",
        ms(r50),
        ms(rmax)
    );
    println!(
        "| netdev down or up → ListAndWatch, median / max ({}) | {} / {} ms | target < 1000 ms; health judged every 500 ms |",
        2 * repeats,
        ms(h50),
        ms(hmax)
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
    record("reregister_p50_ms", ms(r50));
    record("reregister_max_ms", ms(rmax));
    record("health_p50_ms", ms(h50));
    record("health_max_ms", ms(hmax));
    record("idle_rss_mib", format!("{:.1}", idle_rss as f64 / 1024.0));
    record("churn_cycles_per_s", format!("{churn:.1}"));
    let daemon_bin = nodeeni_tests::bins::path("nodeeni-device-plugin");
    let size = std::fs::metadata(&daemon_bin).map(|m| m.len()).unwrap_or(0);
    record("daemon_binary_mb", format!("{:.2}", size as f64 / 1e6));
    if let Some(d) = nb.daemon.as_mut() {
        d.terminate();
    }
}
