//! The pools of many nodes in one crowded account (virtual time, the real pool loop per node): every
//! node gets its ENIs, each exactly once, throttles are worked through at a slower pace instead of
//! failing passes, and an idle cluster lists its ENIs less and less often.

use std::time::Duration;

use nodeeni_ipam::ec2::tags;
use nodeeni_tests::fake_ec2::{AccountLimits, Bucket};
use nodeeni_tests::scale::{Cluster, run};

/// The published buckets, shrunk so that twenty nodes crowd the account as a thousand would.
fn crowded() -> AccountLimits {
    let mut limits = AccountLimits::published();
    for (_, bucket, _) in &mut limits.buckets {
        *bucket = Bucket { capacity: bucket.capacity / 20.0, refill_per_second: bucket.refill_per_second / 20.0 };
    }
    limits
}

#[tokio::test(start_paused = true)]
async fn twenty_nodes_in_a_crowded_account_all_get_their_enis_once_without_failed_passes() {
    // Boot times, jitter and back-off draw from fastrand: seeded, so a failure replays (every node
    // runs on this test's one thread, whose generator this is).
    fastrand::seed(14);
    let scratch = tempfile::tempdir().expect("scratch");
    let spec = Cluster {
        nodes: 20,
        enis_per_node: 3,
        boot_window: Duration::from_secs(30),
        limits: Some(crowded()),
        steady: Some((Duration::from_secs(1800), Duration::from_secs(3600))),
        scratch: scratch.path().to_path_buf(),
    };
    let result = run(&spec).await;
    assert_eq!(result.waits.len(), 20, "every node converged");
    let enis = result.ec2.enis();
    assert_eq!(enis.len(), 60, "each declared ENI exactly once: no duplicate from a retried create");
    for eni in &enis {
        assert!(eni.attachment.is_some(), "{} attached", eni.id);
        assert!(eni.tags.contains_key(tags::NODE));
    }
    let op = |name: &str| result.by_op.iter().find(|(op, _, _)| *op == name).map_or((0, 0), |(_, n, t)| (*n, *t));
    let (creates, creates_throttled) = op("CreateNetworkInterface");
    assert!(creates_throttled > 0, "the account was crowded: {:?}", result.by_op);
    assert_eq!(creates - creates_throttled, 60, "60 creates taken, none twice: {:?}", result.by_op);
    assert_eq!(op("DeleteNetworkInterface"), (0, 0), "nothing made in excess and deleted again");
    assert_eq!(result.failed_passes, 0, "throttles slow calls down; they fail no pass");
    // 60 creates through a bucket of 5 refilling 0.25/s take at least 220 s; far more would mean
    // the nodes starved themselves.
    assert!(result.converged >= Duration::from_secs(220), "{:?}", result.converged);
    assert!(result.converged <= Duration::from_secs(660), "within 3x of the bucket's bound: {:?}", result.converged);
    // Idle, each node lists its ENIs about once per idleIntervalMaxSeconds (600 s), not once a minute.
    let per_node = result.steady_describes_per_second * 600.0 / 20.0;
    assert!((0.8..=1.6).contains(&per_node), "{per_node:.2} describes per node per 600 s idle");
}
