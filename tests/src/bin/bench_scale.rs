//! bench-scale: a cluster's nodes against one account's EC2 request limits, in virtual time
//! ([`nodeeni_tests::scale`]: the real pool loop per node, one simulated account with the buckets AWS
//! publishes, a latency range per call, listings that lag new ENIs). Nodes boot spread over a window,
//! as an autoscaling group brings them. tokio's paused clock makes an hour of the cluster seconds.
//!
//! Reports, per cluster size: time until every node has its ENIs against the bound the buckets set
//! for that work, throttled calls as a share of all, the slowest node's wait against the median,
//! describes per second at steady state against the account's refill, EC2 calls per ENI. Then, per
//! node: a pass's time and heap with 1..14 ENIs.
//!
//! Usage: bench-scale [NODES...]   (default 100 1000 5000; scripts/bench-scale builds and runs it)

use std::alloc::{GlobalAlloc, Layout, System};
use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use nodeeni_ipam::identity::NodeIdentity;
use nodeeni_ipam::reconcile::Reconciler;
use nodeeni_tests::bench::{median, record};
use nodeeni_tests::fake_ec2::AccountLimits;
use nodeeni_tests::fake_host::NamedNetdevs;
use nodeeni_tests::scale::{AZ, Cluster, account, config, run};

/// Counts heap bytes in use and their peak, for the per-node pass's memory.
struct Counting;

static IN_USE: AtomicUsize = AtomicUsize::new(0);
static PEAK: AtomicUsize = AtomicUsize::new(0);

// SAFETY: every call is forwarded to the system allocator unchanged; only counters are added.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        // SAFETY: the caller's contract is the system allocator's.
        let p = unsafe { System.alloc(layout) };
        if !p.is_null() {
            let now = IN_USE.fetch_add(layout.size(), Ordering::Relaxed) + layout.size();
            PEAK.fetch_max(now, Ordering::Relaxed);
        }
        p
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        IN_USE.fetch_sub(layout.size(), Ordering::Relaxed);
        // SAFETY: as above.
        unsafe { System.dealloc(ptr, layout) }
    }
}

#[global_allocator]
static ALLOCATOR: Counting = Counting;

/// ENIs each node's pool declares.
const ENIS_PER_NODE: u32 = 4;
/// Nodes start spread over this window.
const BOOT_WINDOW: Duration = Duration::from_secs(300);
/// After the last node converged: time for the idle back-off to reach its ceiling, then the window
/// in which steady-state describes are counted.
const SETTLE: Duration = Duration::from_secs(1800);
const STEADY: Duration = Duration::from_secs(3600);

fn scratch(name: &str) -> PathBuf {
    let dir = PathBuf::from(format!("/dev/shm/nodeeni-bench-scale-{}/{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("scratch under /dev/shm");
    dir
}

fn spec(nodes: usize, steady: bool) -> Cluster {
    Cluster {
        nodes,
        enis_per_node: ENIS_PER_NODE,
        boot_window: BOOT_WINDOW,
        limits: Some(AccountLimits::published()),
        steady: steady.then_some((SETTLE, STEADY)),
        scratch: scratch(&format!("cluster-{nodes}")),
    }
}

/// The least time the account's buckets allow for `work` (calls per bucket): a full bucket, then
/// its refill rate.
fn bucket_bound(work: &[(&'static str, u64)], limits: &AccountLimits) -> Duration {
    let mut bound = Duration::ZERO;
    for (bucket, n) in work {
        if *bucket == "describe" {
            // Describes are the client's choice, not the work's: counted apart.
            continue;
        }
        let Some(b) = limits.buckets.iter().find(|(name, _, _)| name == bucket).map(|(_, b, _)| *b) else { continue };
        let secs = ((*n as f64) - b.capacity).max(0.0) / b.refill_per_second;
        bound = bound.max(Duration::from_secs_f64(secs));
    }
    bound
}

/// One node's pass: CPU time (wall time with instant EC2 answers) and the heap it takes.
async fn per_node(enis: u32) -> (Duration, Duration, usize) {
    let (ec2, subnet) = account(None);
    let dir = scratch(&format!("node-{enis}"));
    let instance = ec2.add_instance("c5.18xlarge", AZ);
    let config = config(&dir, &subnet, enis);
    let node =
        NodeIdentity { instance_id: instance, availability_zone: AZ.into(), instance_type: "c5.18xlarge".into() };
    let pool = Reconciler::new(ec2.clone(), NamedNetdevs, config, node);
    let real = std::time::Instant::now();
    pool.reconcile().await.expect("warm");
    let warm = real.elapsed();
    pool.reconcile().await.expect("idle");
    const IDLE: u32 = 20;
    let real = std::time::Instant::now();
    let base = IN_USE.load(Ordering::Relaxed);
    PEAK.store(base, Ordering::Relaxed);
    for _ in 0..IDLE {
        let r = pool.reconcile().await.expect("idle");
        assert!(!r.changed_anything(), "{r:?}");
    }
    let idle = real.elapsed() / IDLE;
    let heap = PEAK.load(Ordering::Relaxed).saturating_sub(base);
    let _ = std::fs::remove_dir_all(&dir);
    (warm, idle, heap)
}

fn secs(d: Duration) -> String {
    format!("{:.0} s", d.as_secs_f64())
}

fn main() {
    let sizes: Vec<usize> = std::env::args().skip(1).map(|a| a.parse().expect("NODES: numbers")).collect();
    let sizes = if sizes.is_empty() { vec![100, 1000, 5000] } else { sizes };
    let runtime =
        tokio::runtime::Builder::new_current_thread().enable_all().start_paused(true).build().expect("runtime");
    runtime.block_on(async {
        // One node alone, in the same account: how long a node's own work takes (latencies, the
        // listing lag, the pass's steps), the floor under any cluster's time.
        let alone = run(&spec(1, false)).await;
        let limits = AccountLimits::published();
        println!("## A cluster's nodes against one account's EC2 limits (virtual time)\n");
        println!(
            "{ENIS_PER_NODE} ENIs per node, nodes booting over {} s; one node alone converges in {:.1} s.\n",
            BOOT_WINDOW.as_secs(),
            alone.converged.as_secs_f64()
        );
        println!(
            "| nodes | converged | bound | ratio | throttled | slowest / median wait | steady describes/s | of the 20/s refill | EC2 calls per ENI | wall time |"
        );
        println!("|---|---|---|---|---|---|---|---|---|---|");
        for n in sizes {
            let wall = std::time::Instant::now();
            let result = run(&spec(n, true)).await;
            let wall = wall.elapsed();
            let last_boot = BOOT_WINDOW.mul_f64((n as f64 - 1.0) / n as f64);
            // The declared work, not the calls made: a create, an attach and a DeleteOnTermination
            // change per ENI.
            let enis = (n as u64) * u64::from(ENIS_PER_NODE);
            let work = [
                ("CreateNetworkInterface", enis),
                ("mutating", enis),
                ("ModifyNetworkInterfaceAttribute", enis),
            ];
            let bound = bucket_bound(&work, &limits).max(last_boot + alone.converged);
            let ratio = result.converged.as_secs_f64() / bound.as_secs_f64();
            let throttled = result.throttled() as f64 / result.calls() as f64;
            let run = &result;
            let fairness = run.waits.last().copied().unwrap_or_default().as_secs_f64()
                / median(&run.waits).as_secs_f64().max(1e-9);
            let share = run.steady_describes_per_second / 20.0;
            let per_eni = run.calls() as f64 / (n as f64 * f64::from(ENIS_PER_NODE));
            println!(
                "| {n} | {} | {} | {ratio:.2} | {:.1}% | {} / {} = {fairness:.2} | {:.2} | {:.0}% | {per_eni:.1} | {:.1} s |",
                secs(run.converged),
                secs(bound),
                throttled * 100.0,
                secs(run.waits.last().copied().unwrap_or_default()),
                secs(median(&run.waits)),
                run.steady_describes_per_second,
                share * 100.0,
                wall.as_secs_f64(),
            );
            let ops: Vec<String> =
                run.by_op.iter().map(|(op, n, t)| format!("{op} {n} ({t} throttled)")).collect();
            eprintln!("{n} nodes, calls until converged: {}", ops.join(", "));
            assert_eq!(run.ec2.enis().len(), n * ENIS_PER_NODE as usize, "exactly the declared ENIs, none twice");
            record(&format!("scale_{n}_ratio"), format!("{ratio:.2}"));
            record(&format!("scale_{n}_throttled_pct"), format!("{:.1}", throttled * 100.0));
            record(&format!("scale_{n}_fairness"), format!("{fairness:.2}"));
            record(&format!("scale_{n}_steady_describe_share_pct"), format!("{:.0}", share * 100.0));
            record(&format!("scale_{n}_calls_per_eni"), format!("{per_eni:.1}"));
        }
        println!("\n## One node's pass, by ENIs (EC2 answering at once)\n");
        println!("| ENIs | warm-up pass | idle pass | idle pass heap peak |");
        println!("|---|---|---|---|");
        for enis in [1, 2, 4, 8, 14] {
            let (warm, idle, heap) = per_node(enis).await;
            println!(
                "| {enis} | {:.2} ms | {:.3} ms | {:.1} KiB |",
                warm.as_secs_f64() * 1e3,
                idle.as_secs_f64() * 1e3,
                heap as f64 / 1024.0
            );
            record(&format!("pass_idle_us_{enis}"), format!("{:.0}", idle.as_secs_f64() * 1e6));
        }
    });
    let _ = std::fs::remove_dir_all(format!("/dev/shm/nodeeni-bench-scale-{}", std::process::id()));
}
