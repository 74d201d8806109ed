//! Every EC2 call goes through [`Resilient::call`]:
//!
//! - errors are classed: throttling and 5xx/timeouts are retried with jittered exponential backoff;
//!   not-found on a delete or detach means already done; other client errors fail at once, carrying
//!   EC2's code and message;
//! - a circuit breaker (closed → open after `failureThreshold` consecutive retryable failures → after
//!   `openTimeout` half-open, letting `halfOpenMaxRequests` through → closed after `successThreshold`
//!   successes, open again on a failure) stops hammering an EC2 that is down; its state is observable;
//! - mutating calls also take a token from a bucket (`mutatingPerSecond`, `burst`) and a slot from a
//!   bounded pool (`maxConcurrent`), so a big pool does not trip EC2's request limits;
//! - every attempt is counted per operation and outcome.

use std::collections::BTreeMap;
use std::sync::Mutex;
use std::time::Duration;

use nodeeni_conf::pool::{CircuitBreakerSettings, RateLimitSettings, RetrySettings};
use tokio::sync::{Semaphore, SemaphorePermit};
use tokio::time::Instant;

/// How an error should be treated.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorClass {
    /// RequestLimitExceeded and friends: retry later, the service is protecting itself.
    Throttled,
    /// 5xx, timeouts, connection resets: retry.
    Transient,
    /// The object is gone: a delete or detach has nothing left to do.
    NotFound,
    /// A client error EC2 will repeat on every retry (bad parameter, no permission, limit reached).
    Fatal,
}

/// Errors that can say which class they are in.
pub trait Classify {
    fn class(&self) -> ErrorClass;
}

#[derive(Debug, thiserror::Error)]
pub enum CallError<E: std::error::Error + 'static> {
    #[error("{op}: the EC2 circuit breaker is open after repeated failures; not calling")]
    BreakerOpen { op: &'static str },
    #[error("{op}: gave up after {attempts} attempts: {last}")]
    Exhausted {
        op: &'static str,
        attempts: u32,
        #[source]
        last: E,
    },
    #[error("{op}: {error}")]
    NotFound {
        op: &'static str,
        #[source]
        error: E,
    },
    #[error("{op}: {error}")]
    Fatal {
        op: &'static str,
        #[source]
        error: E,
    },
}

/// The breaker's state, as metrics and `status` show it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BreakerState {
    Closed,
    Open,
    HalfOpen,
}

#[derive(Debug)]
enum Inner {
    Closed {
        failures: u32,
    },
    Open {
        since: Instant,
    },
    /// `round` tells one half-open spell from the next, so a call from an earlier one cannot give
    /// back, or take, a place in this one.
    HalfOpen {
        in_flight: u32,
        successes: u32,
        round: u64,
    },
}

#[derive(Debug)]
pub struct CircuitBreaker {
    settings: CircuitBreakerSettings,
    inner: Mutex<Inner>,
    rounds: std::sync::atomic::AtomicU64,
}

impl CircuitBreaker {
    pub fn new(settings: CircuitBreakerSettings) -> Self {
        Self { settings, inner: Mutex::new(Inner::Closed { failures: 0 }), rounds: Default::default() }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    pub fn state(&self) -> BreakerState {
        let mut inner = self.lock();
        self.tick(&mut inner);
        match *inner {
            Inner::Closed { .. } => BreakerState::Closed,
            Inner::Open { .. } => BreakerState::Open,
            Inner::HalfOpen { .. } => BreakerState::HalfOpen,
        }
    }

    /// Open long enough: half-open.
    fn tick(&self, inner: &mut Inner) {
        if let Inner::Open { since } = *inner
            && since.elapsed() >= Duration::from_millis(self.settings.open_timeout_ms)
        {
            tracing::info!("EC2 circuit breaker half-open: letting a trial call through");
            let round = self.rounds.fetch_add(1, std::sync::atomic::Ordering::SeqCst) + 1;
            *inner = Inner::HalfOpen { in_flight: 0, successes: 0, round };
        }
    }

    /// May a call go through now? The admission must be settled with its outcome; dropped
    /// unsettled (the call's future was dropped mid-flight), a half-open trial gives its place back.
    pub fn admit(&self) -> Option<Admission<'_>> {
        let mut inner = self.lock();
        self.tick(&mut inner);
        let trial = match &mut *inner {
            Inner::Closed { .. } => None,
            Inner::Open { .. } => return None,
            Inner::HalfOpen { in_flight, round, .. } if *in_flight < self.settings.half_open_max_requests => {
                *in_flight += 1;
                Some(*round)
            }
            Inner::HalfOpen { .. } => return None,
        };
        Some(Admission { breaker: self, trial, settled: false })
    }

    /// The service answered (success, or an error that is the caller's fault), to a call admitted
    /// in half-open round `trial` (None: while closed).
    fn on_success(&self, trial: Option<u64>) {
        let mut inner = self.lock();
        match &mut *inner {
            Inner::Closed { failures } => *failures = 0,
            // Only this round's trials decide this round.
            Inner::HalfOpen { round, .. } if Some(*round) != trial => {}
            Inner::HalfOpen { in_flight, successes, .. } => {
                *in_flight = in_flight.saturating_sub(1);
                *successes += 1;
                if *successes >= self.settings.success_threshold {
                    tracing::info!("EC2 circuit breaker closed again");
                    *inner = Inner::Closed { failures: 0 };
                }
            }
            Inner::Open { .. } => {}
        }
    }

    /// The service failed (throttled, 5xx, timeout). Any failure re-opens a half-open breaker.
    fn on_failure(&self) {
        let mut inner = self.lock();
        match &mut *inner {
            Inner::Closed { failures } => {
                *failures += 1;
                if *failures >= self.settings.failure_threshold {
                    tracing::warn!(failures = *failures, "EC2 circuit breaker open");
                    *inner = Inner::Open { since: Instant::now() };
                }
            }
            Inner::HalfOpen { .. } => {
                tracing::warn!("EC2 circuit breaker trial call failed; open again");
                *inner = Inner::Open { since: Instant::now() };
            }
            Inner::Open { .. } => {}
        }
    }
}

/// A call the breaker let through, to be settled with what the service did.
#[derive(Debug)]
#[must_use = "settle the admission with the call's outcome"]
pub struct Admission<'a> {
    breaker: &'a CircuitBreaker,
    /// The half-open round whose trial place it holds (None: admitted while closed).
    trial: Option<u64>,
    settled: bool,
}

impl Admission<'_> {
    /// The service answered (success, or an error that is the caller's fault).
    pub fn success(mut self) {
        self.settled = true;
        self.breaker.on_success(self.trial);
    }

    /// The service failed (throttled, 5xx, timeout).
    pub fn failure(mut self) {
        self.settled = true;
        self.breaker.on_failure();
    }
}

impl Drop for Admission<'_> {
    fn drop(&mut self) {
        if !self.settled
            && let Some(trial) = self.trial
            && let Inner::HalfOpen { in_flight, round, .. } = &mut *self.breaker.lock()
            && *round == trial
        {
            *in_flight = in_flight.saturating_sub(1);
        }
    }
}

/// A token bucket plus a bound on calls in flight, for mutating calls.
#[derive(Debug)]
pub struct RateLimiter {
    per_second: f64,
    burst: f64,
    bucket: Mutex<(f64, Instant)>,
    in_flight: Semaphore,
}

impl RateLimiter {
    pub fn new(s: &RateLimitSettings) -> Self {
        Self {
            per_second: f64::from(s.mutating_per_second),
            burst: f64::from(s.burst),
            bucket: Mutex::new((f64::from(s.burst), Instant::now())),
            in_flight: Semaphore::new(s.max_concurrent as usize),
        }
    }

    /// Waits for a token, then for a slot; the slot is held until the permit drops.
    pub async fn acquire(&self) -> SemaphorePermit<'_> {
        loop {
            let wait = {
                let mut b = self.bucket.lock().unwrap_or_else(|p| p.into_inner());
                let now = Instant::now();
                let refill = now.duration_since(b.1).as_secs_f64() * self.per_second;
                b.0 = (b.0 + refill).min(self.burst);
                b.1 = now;
                if b.0 >= 1.0 {
                    b.0 -= 1.0;
                    None
                } else {
                    Some(Duration::from_secs_f64((1.0 - b.0) / self.per_second))
                }
            };
            match wait {
                None => break,
                Some(d) => tokio::time::sleep(d).await,
            }
        }
        // The semaphore is never closed, so acquire cannot fail; a closed one would mean shutdown.
        match self.in_flight.acquire().await {
            Ok(p) => p,
            Err(_) => std::future::pending().await,
        }
    }
}

/// Upper bounds (seconds) of the EC2 latency histogram's buckets; the last bucket is +Inf.
pub const LATENCY_BUCKETS: [f64; 11] = [0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0];

/// One operation's attempt latencies: cumulative-free bucket counts (one per [`LATENCY_BUCKETS`] bound
/// plus +Inf), their sum and count.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct Latency {
    pub buckets: [u64; LATENCY_BUCKETS.len() + 1],
    pub sum_seconds: f64,
    pub count: u64,
}

impl Latency {
    fn observe(&mut self, d: Duration) {
        let secs = d.as_secs_f64();
        let i = LATENCY_BUCKETS.iter().position(|b| secs <= *b).unwrap_or(LATENCY_BUCKETS.len());
        self.buckets[i] += 1;
        self.sum_seconds += secs;
        self.count += 1;
    }
}

/// Attempts per (operation, outcome): `ok`, `throttled`, `transient`, `not_found`, `fatal`,
/// `breaker_open`; and each operation's attempt latency.
#[derive(Debug, Default)]
pub struct CallStats {
    counts: Mutex<BTreeMap<(&'static str, &'static str), u64>>,
    latency: Mutex<BTreeMap<&'static str, Latency>>,
}

impl CallStats {
    fn add(&self, op: &'static str, outcome: &'static str) {
        *self.counts.lock().unwrap_or_else(|p| p.into_inner()).entry((op, outcome)).or_default() += 1;
    }

    fn observe(&self, op: &'static str, took: Duration) {
        self.latency.lock().unwrap_or_else(|p| p.into_inner()).entry(op).or_default().observe(took);
    }

    pub fn snapshot(&self) -> BTreeMap<(&'static str, &'static str), u64> {
        self.counts.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    pub fn latency(&self) -> BTreeMap<&'static str, Latency> {
        self.latency.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// Attempts of `op`, whatever their outcome.
    pub fn attempts(&self, op: &str) -> u64 {
        self.snapshot().iter().filter(|((o, _), _)| *o == op).map(|(_, n)| n).sum()
    }
}

/// The resilience layer: one per EC2 client.
#[derive(Debug)]
pub struct Resilient {
    retry: RetrySettings,
    pub breaker: CircuitBreaker,
    limiter: RateLimiter,
    pub stats: CallStats,
}

impl Resilient {
    pub fn new(retry: RetrySettings, breaker: CircuitBreakerSettings, rate: &RateLimitSettings) -> Self {
        Self {
            retry,
            breaker: CircuitBreaker::new(breaker),
            limiter: RateLimiter::new(rate),
            stats: CallStats::default(),
        }
    }

    /// The pause before retry number `attempt` (1-based): exponential from the base, capped, with
    /// "equal jitter" (half fixed, half random) so many nodes retrying at once spread out.
    pub fn backoff(&self, attempt: u32) -> Duration {
        let exp = self.retry.base_delay_ms.saturating_mul(1u64 << attempt.saturating_sub(1).min(20));
        let capped = exp.min(self.retry.max_delay_ms);
        let half = capped / 2;
        Duration::from_millis(half + fastrand::u64(0..=half))
    }

    /// Runs `call` under the whole policy. `mutating` calls also go through the rate limiter. The call
    /// runs in an `ec2` span naming the operation, the attempt under way and, at the end, its outcome
    /// (ok, not_found, fatal, breaker_open, exhausted); each retry and a breaker refusal are events.
    #[tracing::instrument(
        name = "ec2",
        skip_all,
        fields(op = op, attempt = tracing::field::Empty, outcome = tracing::field::Empty)
    )]
    pub async fn call<T, E, F, Fut>(&self, op: &'static str, mutating: bool, mut call: F) -> Result<T, CallError<E>>
    where
        E: Classify + std::error::Error + 'static,
        F: FnMut() -> Fut,
        Fut: std::future::Future<Output = Result<T, E>>,
    {
        let outcome = |o: &'static str| {
            tracing::Span::current().record("outcome", o);
        };
        let mut attempt = 0;
        loop {
            attempt += 1;
            tracing::Span::current().record("attempt", attempt);
            let Some(admission) = self.breaker.admit() else {
                self.stats.add(op, "breaker_open");
                outcome("breaker_open");
                tracing::info!(op, attempt, "refused by the open EC2 circuit breaker");
                return Err(CallError::BreakerOpen { op });
            };
            let permit = if mutating { Some(self.limiter.acquire().await) } else { None };
            // The attempt alone: waiting for the rate limiter is not EC2's latency.
            let started = Instant::now();
            let result = call().await;
            self.stats.observe(op, started.elapsed());
            drop(permit);
            let error = match result {
                Ok(v) => {
                    admission.success();
                    self.stats.add(op, "ok");
                    outcome("ok");
                    return Ok(v);
                }
                Err(e) => e,
            };
            match error.class() {
                ErrorClass::NotFound => {
                    admission.success();
                    self.stats.add(op, "not_found");
                    outcome("not_found");
                    return Err(CallError::NotFound { op, error });
                }
                ErrorClass::Fatal => {
                    admission.success();
                    self.stats.add(op, "fatal");
                    outcome("fatal");
                    return Err(CallError::Fatal { op, error });
                }
                class @ (ErrorClass::Throttled | ErrorClass::Transient) => {
                    admission.failure();
                    self.stats.add(op, if class == ErrorClass::Throttled { "throttled" } else { "transient" });
                    if attempt >= self.retry.max_attempts {
                        outcome("exhausted");
                        tracing::warn!(op, attempt, %error, "EC2 call failed; no attempts left");
                        return Err(CallError::Exhausted { op, attempts: attempt, last: error });
                    }
                    let pause = self.backoff(attempt);
                    tracing::warn!(op, attempt, ?pause, %error, "EC2 call failed; retrying");
                    tokio::time::sleep(pause).await;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicU32, Ordering};

    #[derive(Debug, thiserror::Error)]
    #[error("fake {0:?}")]
    struct Fake(ErrorClass);

    impl Classify for Fake {
        fn class(&self) -> ErrorClass {
            self.0
        }
    }

    fn layer(max_attempts: u32, failure_threshold: u32) -> Resilient {
        Resilient::new(
            RetrySettings { max_attempts, base_delay_ms: 100, max_delay_ms: 1_000 },
            CircuitBreakerSettings {
                failure_threshold,
                success_threshold: 2,
                open_timeout_ms: 5_000,
                half_open_max_requests: 1,
            },
            &RateLimitSettings { mutating_per_second: 5, burst: 2, max_concurrent: 2 },
        )
    }

    /// A call that fails with `class` `failures` times, then succeeds.
    fn flaky(
        calls: &AtomicU32,
        failures: u32,
        class: ErrorClass,
    ) -> impl std::future::Future<Output = Result<u32, Fake>> {
        let n = calls.fetch_add(1, Ordering::SeqCst);
        async move { if n < failures { Err(Fake(class)) } else { Ok(n) } }
    }

    /// What a tracing subscriber sees of `ec2` spans: each recorded `outcome` and each event's message.
    #[derive(Clone, Default)]
    struct Seen(std::sync::Arc<std::sync::Mutex<Vec<String>>>);

    struct Text<'a>(&'a mut String);

    impl tracing::field::Visit for Text<'_> {
        fn record_debug(&mut self, field: &tracing::field::Field, value: &dyn std::fmt::Debug) {
            use std::fmt::Write;
            let _ = write!(self.0, "{}={:?} ", field.name(), value);
        }
        fn record_str(&mut self, field: &tracing::field::Field, value: &str) {
            use std::fmt::Write;
            let _ = write!(self.0, "{}={} ", field.name(), value);
        }
    }

    impl<S: tracing::Subscriber> tracing_subscriber::Layer<S> for Seen {
        fn on_record(
            &self,
            _: &tracing::span::Id,
            values: &tracing::span::Record<'_>,
            _: tracing_subscriber::layer::Context<'_, S>,
        ) {
            let mut text = String::new();
            values.record(&mut Text(&mut text));
            if text.starts_with("outcome=") {
                self.0.lock().expect("lock").push(text.trim().to_string());
            }
        }
        fn on_event(&self, event: &tracing::Event<'_>, _: tracing_subscriber::layer::Context<'_, S>) {
            let mut text = String::new();
            event.record(&mut Text(&mut text));
            let message = text.split("message=").nth(1).and_then(|m| m.split(" op=").next()).unwrap_or_default();
            self.0.lock().expect("lock").push(format!("event {}", message.trim()));
        }
    }

    /// The `ec2` span says how each call ended, and its retries and a breaker refusal are events in it.
    #[tokio::test(start_paused = true)]
    async fn the_ec2_span_records_retries_breaker_refusals_and_the_outcome() {
        use tracing_subscriber::layer::SubscriberExt;
        let seen = Seen::default();
        let _guard = tracing::subscriber::set_default(tracing_subscriber::registry().with(seen.clone()));
        let r = layer(2, 2);
        let calls = AtomicU32::new(0);
        r.call("CreateNetworkInterface", false, || flaky(&calls, 1, ErrorClass::Throttled)).await.expect("ok");
        let calls = AtomicU32::new(0);
        let e = r.call("AttachNetworkInterface", false, || flaky(&calls, 9, ErrorClass::Transient)).await;
        assert!(matches!(e, Err(CallError::Exhausted { .. })), "{e:?}");
        let calls = AtomicU32::new(0);
        let e = r.call("DeleteNetworkInterface", false, || flaky(&calls, 0, ErrorClass::Transient)).await;
        assert!(matches!(e, Err(CallError::BreakerOpen { .. })), "two failures opened it: {e:?}");
        let seen = seen.0.lock().expect("lock").clone();
        assert_eq!(
            seen,
            [
                "event EC2 call failed; retrying",
                "outcome=ok",
                "event EC2 call failed; retrying",
                // The second failure opens the breaker: that decision is an event of the call too.
                "event EC2 circuit breaker open failures=2",
                "outcome=exhausted",
                "event EC2 call failed; no attempts left",
                "outcome=breaker_open",
                "event refused by the open EC2 circuit breaker",
            ],
        );
    }

    #[tokio::test(start_paused = true)]
    async fn throttling_and_5xx_are_retried_until_success() {
        let r = layer(5, 100);
        let calls = AtomicU32::new(0);
        let start = Instant::now();
        let v = r.call("CreateNetworkInterface", false, || flaky(&calls, 2, ErrorClass::Throttled)).await.expect("ok");
        assert_eq!(v, 2);
        assert_eq!(calls.load(Ordering::SeqCst), 3);
        // Two pauses: 50..=100 ms then 100..=200 ms.
        let waited = start.elapsed();
        assert!(waited >= Duration::from_millis(150) && waited <= Duration::from_millis(300), "{waited:?}");
        assert_eq!(r.stats.snapshot().get(&("CreateNetworkInterface", "throttled")), Some(&2));
        let calls = AtomicU32::new(0);
        r.call("DescribeInstances", false, || flaky(&calls, 1, ErrorClass::Transient)).await.expect("ok");
        assert_eq!(r.stats.attempts("DescribeInstances"), 2);
    }

    #[tokio::test(start_paused = true)]
    async fn each_attempt_lands_in_its_latency_bucket() {
        let r = layer(5, 100);
        let calls = AtomicU32::new(0);
        // Two attempts of 30 ms (one throttled, one ok) and, for another op, one of 2 s.
        r.call("DescribeNetworkInterfaces", false, || {
            let n = calls.fetch_add(1, Ordering::SeqCst);
            async move {
                tokio::time::sleep(Duration::from_millis(30)).await;
                if n == 0 { Err(Fake(ErrorClass::Throttled)) } else { Ok(n) }
            }
        })
        .await
        .expect("ok");
        r.call("DeleteNetworkInterface", true, || async {
            tokio::time::sleep(Duration::from_secs(2)).await;
            Ok::<_, Fake>(0)
        })
        .await
        .expect("ok");
        let latency = r.stats.latency();
        let describe = &latency["DescribeNetworkInterfaces"];
        assert_eq!(describe.count, 2);
        let bucket_50ms = LATENCY_BUCKETS.iter().position(|b| *b == 0.05).expect("bucket");
        assert_eq!(describe.buckets[bucket_50ms], 2, "30 ms attempts fall in the (25 ms, 50 ms] bucket");
        assert!((describe.sum_seconds - 0.06).abs() < 0.005, "{}", describe.sum_seconds);
        let delete = &latency["DeleteNetworkInterface"];
        let bucket_2_5s = LATENCY_BUCKETS.iter().position(|b| *b == 2.5).expect("bucket");
        assert_eq!((delete.count, delete.buckets[bucket_2_5s]), (1, 1));
    }

    #[tokio::test(start_paused = true)]
    async fn retries_stop_at_max_attempts() {
        let r = layer(3, 100);
        let calls = AtomicU32::new(0);
        let err = r
            .call("AttachNetworkInterface", false, || flaky(&calls, 99, ErrorClass::Transient))
            .await
            .expect_err("gives up");
        assert!(matches!(err, CallError::Exhausted { attempts: 3, .. }), "{err}");
        assert_eq!(calls.load(Ordering::SeqCst), 3);
    }

    #[tokio::test(start_paused = true)]
    async fn client_errors_fail_fast_and_not_found_is_reported_as_such() {
        let r = layer(5, 1);
        let calls = AtomicU32::new(0);
        let err =
            r.call("CreateNetworkInterface", false, || flaky(&calls, 99, ErrorClass::Fatal)).await.expect_err("fatal");
        assert!(matches!(err, CallError::Fatal { .. }));
        assert_eq!(calls.load(Ordering::SeqCst), 1, "no retry");
        let calls = AtomicU32::new(0);
        let err = r
            .call("DeleteNetworkInterface", false, || flaky(&calls, 99, ErrorClass::NotFound))
            .await
            .expect_err("gone");
        assert!(matches!(err, CallError::NotFound { .. }));
        assert_eq!(r.breaker.state(), BreakerState::Closed, "the caller's errors never open the breaker");
    }

    #[tokio::test(start_paused = true)]
    async fn the_breaker_opens_half_opens_and_closes() {
        let r = layer(1, 3);
        let calls = AtomicU32::new(0);
        for _ in 0..3 {
            let _ = r.call("DescribeInstances", false, || flaky(&calls, 99, ErrorClass::Transient)).await;
        }
        assert_eq!(r.breaker.state(), BreakerState::Open);
        let before = calls.load(Ordering::SeqCst);
        let err =
            r.call("DescribeInstances", false, || flaky(&calls, 0, ErrorClass::Transient)).await.expect_err("open");
        assert!(matches!(err, CallError::BreakerOpen { .. }));
        assert_eq!(calls.load(Ordering::SeqCst), before, "an open breaker does not call");

        tokio::time::advance(Duration::from_millis(5_000)).await;
        assert_eq!(r.breaker.state(), BreakerState::HalfOpen);
        // Half-open lets one trial through; a failure opens it again.
        let _ = r.call("DescribeInstances", false, || flaky(&calls, u32::MAX, ErrorClass::Throttled)).await;
        assert_eq!(r.breaker.state(), BreakerState::Open);
        tokio::time::advance(Duration::from_millis(5_000)).await;
        // Two successes (successThreshold) close it.
        let ok = AtomicU32::new(0);
        r.call("DescribeInstances", false, || flaky(&ok, 0, ErrorClass::Transient)).await.expect("trial 1");
        assert_eq!(r.breaker.state(), BreakerState::HalfOpen);
        r.call("DescribeInstances", false, || flaky(&ok, 0, ErrorClass::Transient)).await.expect("trial 2");
        assert_eq!(r.breaker.state(), BreakerState::Closed);
    }

    #[tokio::test(start_paused = true)]
    async fn half_open_admits_only_the_configured_number_of_trials() {
        let b = CircuitBreaker::new(CircuitBreakerSettings {
            failure_threshold: 1,
            success_threshold: 1,
            open_timeout_ms: 10,
            half_open_max_requests: 2,
        });
        b.on_failure();
        tokio::time::advance(Duration::from_millis(10)).await;
        let (first, second) = (b.admit().expect("first trial"), b.admit().expect("second trial"));
        assert!(b.admit().is_none(), "a third trial waits");
        first.success();
        second.success();
    }

    #[tokio::test(start_paused = true)]
    async fn a_call_from_an_earlier_half_open_round_neither_frees_nor_decides_this_one() {
        let b = CircuitBreaker::new(CircuitBreakerSettings {
            failure_threshold: 1,
            success_threshold: 1,
            open_timeout_ms: 10,
            half_open_max_requests: 1,
        });
        b.admit().expect("closed").failure();
        tokio::time::advance(Duration::from_millis(10)).await;
        let stale = b.admit().expect("round 1's trial");
        // Round 1 fails through another path and opens again; round 2 begins.
        b.on_failure();
        tokio::time::advance(Duration::from_millis(10)).await;
        let current = b.admit().expect("round 2's trial");
        drop(stale);
        assert!(b.admit().is_none(), "round 1's dropped trial freed a place of round 2");
        let closed_era = CircuitBreaker::new(b.settings.clone());
        let early = closed_era.admit().expect("closed");
        closed_era.admit().expect("closed").failure();
        tokio::time::advance(Duration::from_millis(10)).await;
        assert_eq!(closed_era.state(), BreakerState::HalfOpen);
        early.success();
        assert_eq!(closed_era.state(), BreakerState::HalfOpen, "a call admitted while closed is no trial");
        current.success();
        assert_eq!(b.state(), BreakerState::Closed);
    }

    #[tokio::test(start_paused = true)]
    async fn a_trial_call_dropped_mid_flight_gives_its_place_back() {
        let r = Resilient::new(
            RetrySettings { max_attempts: 1, base_delay_ms: 1, max_delay_ms: 1 },
            CircuitBreakerSettings {
                failure_threshold: 1,
                success_threshold: 1,
                open_timeout_ms: 10,
                half_open_max_requests: 1,
            },
            &RateLimitSettings { mutating_per_second: 100, burst: 100, max_concurrent: 4 },
        );
        r.breaker.admit().expect("closed").failure();
        tokio::time::advance(Duration::from_millis(10)).await;
        // The only trial place goes to a call whose future is dropped before EC2 answers (a pass
        // cancelled at shutdown, a timeout around it).
        let hung = r.call("DescribeInstances", false, std::future::pending::<Result<(), Fake>>);
        assert!(tokio::time::timeout(Duration::from_millis(5), hung).await.is_err());
        assert_eq!(r.breaker.state(), BreakerState::HalfOpen);
        let ok = r.call("DescribeInstances", false, || async { Ok::<_, Fake>(()) }).await;
        assert!(ok.is_ok(), "the place came back: {ok:?}");
        assert_eq!(r.breaker.state(), BreakerState::Closed);
    }

    #[tokio::test(start_paused = true)]
    async fn mutations_are_rate_limited_and_bounded_in_flight() {
        let r = layer(1, 100);
        let start = Instant::now();
        // burst 2, then 5 per second: the 7th token arrives after 1 s.
        for _ in 0..7 {
            drop(r.limiter.acquire().await);
        }
        let waited = start.elapsed();
        assert!(waited >= Duration::from_millis(990) && waited <= Duration::from_millis(1_100), "{waited:?}");
        tokio::time::advance(Duration::from_secs(2)).await;
        let a = r.limiter.acquire().await;
        let b = r.limiter.acquire().await;
        let third = tokio::time::timeout(Duration::from_secs(5), r.limiter.acquire()).await;
        assert!(third.is_err(), "max_concurrent 2: a third waits while two are in flight");
        drop((a, b));
    }

    #[test]
    fn backoff_grows_exponentially_with_jitter_and_a_cap() {
        let r = layer(10, 100);
        for attempt in 1..=8 {
            let full = (100u64 << (attempt - 1)).min(1_000);
            for _ in 0..50 {
                let d = r.backoff(attempt).as_millis() as u64;
                assert!(d >= full / 2 && d <= full, "attempt {attempt}: {d} outside {}..={full}", full / 2);
            }
        }
    }
}
