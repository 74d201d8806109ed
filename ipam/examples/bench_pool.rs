//! Benchmark: time to warm a pool of 8 ENIs against moto, one mutation at a time vs concurrently, and
//! the EC2 calls each warmed ENI costs. Prints a markdown table. `scripts/bench-pool` runs it.

#[path = "../tests/common/mod.rs"]
mod common;

use std::time::{Duration, Instant};

use aws_sdk_ec2::types::InstanceType;
use common::{NoHostSide, sdk, world_with};
use nodeeni_conf::PoolConfig;
use nodeeni_conf::load::LoadOptions;
use nodeeni_ipam::ec2::AwsEc2;
use nodeeni_ipam::identity::NodeIdentity;
use nodeeni_ipam::reconcile::Reconciler;
use nodeeni_tests::fault_proxy::{Fault, FaultProxy};
use nodeeni_tests::moto::Moto;

const ENIS: u32 = 8;
const MUTATING: [&str; 3] = ["CreateNetworkInterface", "AttachNetworkInterface", "ModifyNetworkInterfaceAttribute"];

struct Run {
    elapsed: Duration,
    mutating: u64,
    describes: u64,
}

/// Warms the pool; with `latency`, every EC2 call passes a proxy that adds it (as EC2's round trip would).
async fn warm(max_concurrent: u32, latency: Option<Duration>) -> Run {
    let moto = Moto::start("bench-pool").expect("moto (run scripts/install-deps)");
    let raw = sdk(&moto.endpoint);
    let w = world_with(&raw, InstanceType::C518xlarge).await;
    let proxy =
        latency.map(|d| FaultProxy::start(moto.endpoint.trim_start_matches("http://"), move |_| Fault::Delay(d)));
    let raw = proxy.as_ref().map_or(raw, |p| sdk(&p.endpoint));
    let state = tempfile::tempdir().expect("state");
    let text = format!(
        "clusterName: bench\nstateDir: {}\nec2: {{rateLimit: {{mutatingPerSecond: 1000, burst: 1000, maxConcurrent: {max_concurrent}}}}}\n\
         pools:\n  - {{name: fast, mode: kernel, resourceName: nodeeni.io/fast, subnetIds: [{}], enisPerSubnet: {ENIS}}}\n",
        state.path().display(),
        w.subnet_a
    );
    let config = PoolConfig::from_text(&text, &LoadOptions::default()).expect("config");
    let ec2 = AwsEc2::from_client(raw, &config.ec2);
    let node = NodeIdentity {
        instance_id: w.instance.clone(),
        availability_zone: "us-east-1a".into(),
        instance_type: "c5.18xlarge".into(),
    };
    let r = Reconciler::new(ec2, NoHostSide, config, node);
    let start = Instant::now();
    let report = r.reconcile().await.expect("warm");
    let elapsed = start.elapsed();
    assert_eq!(report.created.len() as u32, ENIS, "{report:?}");
    let stats = r.ec2.resilience.stats.snapshot();
    let mutating = stats.iter().filter(|((op, _), _)| MUTATING.contains(op)).map(|(_, n)| n).sum();
    let describes = stats.iter().filter(|((op, _), _)| op.starts_with("Describe")).map(|(_, n)| n).sum();
    Run { elapsed, mutating, describes }
}

#[tokio::main]
async fn main() {
    let latency = Duration::from_millis(50);
    let runs = [
        ("moto, one at a time (maxConcurrent 1)", warm(1, None).await),
        ("moto, concurrent (maxConcurrent 8)", warm(8, None).await),
        ("moto + 50 ms per call, one at a time", warm(1, Some(latency)).await),
        ("moto + 50 ms per call, concurrent", warm(8, Some(latency)).await),
    ];
    let per = |n: u64| n as f64 / f64::from(ENIS);
    println!("Pool benchmark: warming {ENIS} ENIs against moto (create with tags, attach, DeleteOnTermination)\n");
    println!("| mode | time to warm | mutating calls per ENI | describe calls per ENI |");
    println!("|---|---|---|---|");
    for (label, run) in &runs {
        println!(
            "| {label} | {:.0} ms | {:.2} | {:.2} |",
            run.elapsed.as_secs_f64() * 1000.0,
            per(run.mutating),
            per(run.describes)
        );
    }
    let ratio = |a: &Run, b: &Run| b.elapsed.as_secs_f64() / a.elapsed.as_secs_f64();
    nodeeni_tests::bench::record("ec2_mutating_per_eni", format!("{:.2}", per(runs[1].1.mutating)));
    nodeeni_tests::bench::record("ec2_describes_per_eni", format!("{:.2}", per(runs[1].1.describes)));
    nodeeni_tests::bench::record("warm_ms_serial_50ms", format!("{:.0}", runs[2].1.elapsed.as_secs_f64() * 1000.0));
    nodeeni_tests::bench::record("warm_ms_concurrent_50ms", format!("{:.0}", runs[3].1.elapsed.as_secs_f64() * 1000.0));
    nodeeni_tests::bench::record("warm_ratio_50ms", format!("{:.2}×", ratio(&runs[2].1, &runs[3].1)));
    println!(
        "\nConcurrent vs one at a time: {:.2}× on bare moto (where calls barely overlap), {:.2}× with 50 ms per call.",
        ratio(&runs[0].1, &runs[1].1),
        ratio(&runs[2].1, &runs[3].1)
    );
}
