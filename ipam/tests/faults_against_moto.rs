//! EC2 faults between the SDK and moto: retries absorb throttling, 500s, delays and resets; the
//! breaker opens during an outage and closes after it; the pool converges either way.

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use common::setup;
use nodeeni_ipam::resilience::BreakerState;
use nodeeni_tests::fault_proxy::{Fault, FaultProxy};

fn upstream(endpoint: &str) -> String {
    endpoint.trim_start_matches("http://").to_string()
}

#[tokio::test]
async fn retries_absorb_throttling_server_errors_delays_and_resets() {
    let Some(s) = setup("faults_retries").await else { return };
    let proxy = FaultProxy::start(&upstream(&s.endpoint), |n| match n % 6 {
        1 => Fault::Throttle,
        2 => Fault::ServerError,
        3 => Fault::Delay(Duration::from_millis(30)),
        4 => Fault::Reset,
        _ => Fault::Forward,
    });
    let pools = s.fast(2);
    let mut config = s.config(&pools);
    config.ec2.retry.max_attempts = 8;
    config.ec2.retry.base_delay_ms = 5;
    config.ec2.retry.max_delay_ms = 50;
    config.ec2.circuit_breaker.failure_threshold = 50;
    let r = s.reconciler_via(config, &proxy.endpoint);
    r.reconcile().await.expect("converges through the faults");
    let stats = r.ec2.resilience.stats.snapshot();
    let count = |outcome: &str| stats.iter().filter(|((_, o), _)| *o == outcome).map(|(_, n)| n).sum::<u64>();
    assert!(count("throttled") > 0 && count("transient") > 0, "faults were met and retried: {stats:?}");
    // The truth, read around the proxy: exactly the declared ENIs, attached.
    let direct = s.reconciler(s.config(&pools));
    let enis = s.cluster_enis(&direct.ec2).await;
    assert_eq!(enis.len(), 2, "{stats:?}");
    assert!(enis.iter().all(|e| e.attachment.is_some()));
}

#[tokio::test]
async fn the_breaker_opens_during_an_outage_and_closes_after_it() {
    let Some(s) = setup("faults_breaker").await else { return };
    let outage = Arc::new(AtomicBool::new(true));
    let proxy = {
        let outage = outage.clone();
        FaultProxy::start(&upstream(&s.endpoint), move |_| {
            if outage.load(Ordering::SeqCst) { Fault::ServerError } else { Fault::Forward }
        })
    };
    let pools = s.fast(1);
    let mut config = s.config(&pools);
    config.ec2.retry.max_attempts = 2;
    config.ec2.retry.base_delay_ms = 1;
    config.ec2.retry.max_delay_ms = 5;
    config.ec2.circuit_breaker.failure_threshold = 3;
    config.ec2.circuit_breaker.success_threshold = 1;
    config.ec2.circuit_breaker.open_timeout_ms = 300;
    let r = s.reconciler_via(config, &proxy.endpoint);
    for _ in 0..3 {
        assert!(r.reconcile().await.is_err(), "EC2 is down");
    }
    assert_eq!(r.ec2.resilience.breaker.state(), BreakerState::Open);
    let before = proxy.requests.load(Ordering::SeqCst);
    let err = r.reconcile().await.expect_err("open breaker");
    assert!(err.to_string().contains("circuit breaker is open"), "{err}");
    assert_eq!(proxy.requests.load(Ordering::SeqCst), before, "an open breaker sends nothing");

    outage.store(false, Ordering::SeqCst);
    tokio::time::sleep(Duration::from_millis(350)).await;
    assert_eq!(r.ec2.resilience.breaker.state(), BreakerState::HalfOpen);
    r.reconcile().await.expect("EC2 is back");
    assert_eq!(r.ec2.resilience.breaker.state(), BreakerState::Closed);
    let direct = s.reconciler(s.config(&pools));
    assert_eq!(s.cluster_enis(&direct.ec2).await.len(), 1);
}
