//! Every EC2 call goes through [`Resilient::call`]:
//!
//! - errors are classed: throttling and 5xx/timeouts are retried with jittered exponential backoff;
//!   not-found on a delete or detach means already done; other client errors fail at once, carrying
//!   EC2's code and message;
//! - a circuit breaker (closed → open after `failureThreshold` consecutive retryable failures → after
//!   `openTimeout` half-open, letting `halfOpenMaxRequests` through → closed after `successThreshold`
//!   successes, open again on a failure) stops hammering an EC2 that is down; its state is observable;
//! - every call takes a token from the client's bucket for EC2's request bucket it is charged to
//!   (mutations: `mutatingPerSecond`, `burst`, and a slot of `maxConcurrent`; describes:
//!   `describePerSecond`, `describeBurst`); a throttle cuts that bucket's rate, successes and quiet
//!   time grow it back, so the nodes of an account back off together and recover slowly;
//! - a throttle does not count against the breaker: EC2 answered;
//! - every attempt is counted per operation and outcome.

use std::collections::BTreeMap;
use std::sync::Mutex;
use std::time::Duration;

use nodeeni_conf::pool::{CircuitBreakerSettings, RateLimitSettings, RetrySettings};
use tokio::sync::{Notify, Semaphore, SemaphorePermit};
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

    /// The service failed (5xx, timeout; a throttle is an answer, not a failure). Any failure re-opens
    /// a half-open breaker.
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

    /// The service failed (5xx, timeout).
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

/// EC2's request buckets ("Request throttling for the Amazon EC2 API"): each is its own account-wide
/// token bucket, so each gets its own client-side pace, and a throttled create does not slow attaches.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum RequestBucket {
    /// CreateNetworkInterface (account: 100, refill 5/s).
    Create,
    /// DeleteNetworkInterface (100, 5/s).
    Delete,
    /// ModifyNetworkInterfaceAttribute (100, 5/s).
    Modify,
    /// Assign/UnassignPrivateIpAddresses (100, 5/s).
    PrivateIps,
    /// Every other mutation, attach and detach among them (50, 5/s).
    Mutating,
    /// Non-mutating calls (100, 20/s).
    Describe,
}

impl RequestBucket {
    pub const ALL: [RequestBucket; 6] = [
        RequestBucket::Create,
        RequestBucket::Delete,
        RequestBucket::Modify,
        RequestBucket::PrivateIps,
        RequestBucket::Mutating,
        RequestBucket::Describe,
    ];

    /// The bucket's place in [`RequestBucket::ALL`].
    pub fn index(self) -> usize {
        self as usize
    }

    /// The bucket's name in metrics.
    pub fn as_str(self) -> &'static str {
        match self {
            RequestBucket::Create => "create",
            RequestBucket::Delete => "delete",
            RequestBucket::Modify => "modify",
            RequestBucket::PrivateIps => "private_ips",
            RequestBucket::Mutating => "mutating",
            RequestBucket::Describe => "describe",
        }
    }

    /// The bucket EC2 charges `op` to.
    pub fn of(op: &str, mutating: bool) -> Self {
        match op {
            "CreateNetworkInterface" => RequestBucket::Create,
            "DeleteNetworkInterface" => RequestBucket::Delete,
            "ModifyNetworkInterfaceAttribute" => RequestBucket::Modify,
            "AssignPrivateIpAddresses" | "UnassignPrivateIpAddresses" => RequestBucket::PrivateIps,
            _ if mutating => RequestBucket::Mutating,
            _ => RequestBucket::Describe,
        }
    }
}

/// A throttle after a success halves the rate: one throttle among successes is a busy moment (other
/// clients of the account), not a crowd. Each further throttle with no success between cuts it to a
/// tenth: with 1000 nodes sharing a 5/s bucket a node's fair share is 1/200 of its ceiling, a few
/// such cuts away. (Tuned with `scripts/bench-scale`: shallower cuts made more throttles, deeper ones
/// left nodes idle while the account had room.)
const FIRST_CUT: f64 = 0.5;
const THROTTLE_CUT: f64 = 0.1;
/// Each success grows the rate by this share, so a node grows back as fast as the account lets its
/// calls through: crowded, it grows slowly.
const SUCCESS_GROWTH: f64 = 0.2;
/// Without a throttle for this long after the last cut, the rate doubles every further
/// `QUIET_DOUBLING`: a node whose calls became rare is not left at a crawl once the crowd is gone.
const QUIET_AFTER_CUT: Duration = Duration::from_secs(30);
const QUIET_DOUBLING: Duration = Duration::from_secs(30);
/// How long a throttled call keeps trying (at least `maxAttempts` times) before it gives up.
pub const THROTTLE_PATIENCE: Duration = Duration::from_secs(600);
/// The floor: one call in 20 minutes.
const MIN_RATE: f64 = 1.0 / 1200.0;
/// A wait is never shorter than this, so a clock that stands still (tokio's paused one) cannot spin.
const MIN_WAIT: Duration = Duration::from_millis(1);
/// Float slack when comparing tokens.
const TOKEN_EPSILON: f64 = 1e-9;

#[derive(Debug)]
struct Pace {
    ceiling: f64,
    burst: f64,
    rate: f64,
    tokens: f64,
    at: Instant,
    last_cut: Option<Instant>,
    /// Calls of this bucket allowed in flight: one at first and after a throttle, doubling with each
    /// success up to `max_window` (a slow start: a node booting into a crowded account learns so from
    /// one call, not from all its parallel ones).
    window: u32,
    max_window: u32,
    in_flight: u32,
    /// The last answer was a throttle (no success since).
    throttled_last: bool,
}

impl Pace {
    fn new(per_second: u32, burst: u32, max_window: u32) -> Self {
        let ceiling = f64::from(per_second.max(1));
        Self {
            ceiling,
            burst: f64::from(burst.max(1)),
            rate: ceiling,
            tokens: f64::from(burst.max(1)),
            at: Instant::now(),
            last_cut: None,
            window: 1,
            max_window: max_window.max(1),
            in_flight: 0,
            throttled_last: false,
        }
    }

    /// Brings the bucket to `now`: quiet-time recovery, then the refill at the current rate. Below
    /// one call a second at most one token is banked, so a slowed node cannot burst into a crowd.
    fn advance(&mut self, now: Instant) {
        if let Some(cut) = self.last_cut {
            let quiet_before = self.at.saturating_duration_since(cut).saturating_sub(QUIET_AFTER_CUT);
            let quiet_now = now.saturating_duration_since(cut).saturating_sub(QUIET_AFTER_CUT);
            let doublings = quiet_now.saturating_sub(quiet_before).as_secs_f64() / QUIET_DOUBLING.as_secs_f64();
            if doublings > 0.0 {
                self.rate = (self.rate * doublings.exp2()).min(self.ceiling);
                if self.rate >= self.ceiling {
                    // Back at the ceiling by quiet time: the next throttle is a busy moment again.
                    // (Not before: a node waiting in a crowd recovers by quiet time too, and its
                    // next throttle must cut deep.)
                    self.throttled_last = false;
                }
            }
        }
        let capacity = if self.rate < 1.0 { 1.0 } else { self.burst };
        let refill = now.saturating_duration_since(self.at).as_secs_f64() * self.rate;
        self.tokens = (self.tokens + refill).min(capacity);
        self.at = now;
    }

    /// Takes a token, or says how long until one is there.
    fn take(&mut self, now: Instant) -> Option<Duration> {
        self.advance(now);
        if self.tokens >= 1.0 - TOKEN_EPSILON {
            self.tokens = (self.tokens - 1.0).max(0.0);
            None
        } else {
            Some(Duration::from_secs_f64((1.0 - self.tokens) / self.rate).max(MIN_WAIT))
        }
    }

    /// A call sent at `sent` was throttled. Calls sent before the last cut were paced by the old rate:
    /// their throttles are the signal already acted on (the calls in flight when EC2 ran dry).
    fn throttled(&mut self, sent: Instant, now: Instant) {
        self.advance(now);
        if self.last_cut.is_some_and(|cut| sent <= cut) {
            return;
        }
        let cut = if self.throttled_last { THROTTLE_CUT } else { FIRST_CUT };
        self.throttled_last = true;
        self.rate = (self.rate * cut).max(MIN_RATE);
        // The next call waits a full interval at the new pace, alone.
        self.tokens = 0.0;
        self.window = 1;
        self.last_cut = Some(now);
    }

    /// A call succeeded. (Successes of calls sent before the last cut count too: ignoring them left a
    /// lone node under sporadic throttles crawling, the node-in-a-box fault scenario.)
    fn succeeded(&mut self, now: Instant) {
        self.advance(now);
        self.rate = (self.rate * (1.0 + SUCCESS_GROWTH)).min(self.ceiling);
        self.throttled_last = false;
        self.window = self.window.saturating_mul(2).min(self.max_window);
    }
}

/// The client's pace: an adaptive token bucket per [`RequestBucket`] (cut when EC2 throttles, grown
/// back by successes and quiet time, never above the configured rate), plus one bound on mutations
/// in flight across their buckets (describes are bounded by their bucket's window alone).
#[derive(Debug)]
pub struct RateLimiter {
    /// By [`RequestBucket::index`].
    paces: Mutex<[Pace; RequestBucket::ALL.len()]>,
    /// Told when a call leaves a bucket's window.
    released: Notify,
    mutations_in_flight: Semaphore,
}

/// A call's place: a token taken, a place in its bucket's window and a slot, until dropped.
#[derive(Debug)]
pub struct Permit<'a> {
    /// When the token was taken.
    taken: Instant,
    // Dropped after the slot: the place is given back last, when the slot is free again. None for
    // describes.
    _slot: Option<SemaphorePermit<'a>>,
    _place: Place<'a>,
}

/// A place in a bucket's window.
#[derive(Debug)]
struct Place<'a> {
    limiter: &'a RateLimiter,
    bucket: RequestBucket,
}

impl Drop for Place<'_> {
    fn drop(&mut self) {
        self.limiter.with(self.bucket, |p, now| {
            p.advance(now);
            p.in_flight = p.in_flight.saturating_sub(1);
        });
        self.limiter.released.notify_waiters();
    }
}

/// Describes in flight at once (the describe window's ceiling): enough for a pass's parallel slots,
/// few enough not to flood.
const DESCRIBES_IN_FLIGHT: u32 = 16;

impl RateLimiter {
    pub fn new(s: &RateLimitSettings) -> Self {
        let paces = RequestBucket::ALL.map(|b| match b {
            RequestBucket::Describe => Pace::new(s.describe_per_second, s.describe_burst, DESCRIBES_IN_FLIGHT),
            _ => Pace::new(s.mutating_per_second, s.burst, s.max_concurrent),
        });
        Self {
            paces: Mutex::new(paces),
            released: Notify::new(),
            mutations_in_flight: Semaphore::new(s.max_concurrent as usize),
        }
    }

    fn with<T>(&self, bucket: RequestBucket, f: impl FnOnce(&mut Pace, Instant) -> T) -> T {
        let mut paces = self.paces.lock().unwrap_or_else(|p| p.into_inner());
        f(&mut paces[bucket.index()], Instant::now())
    }

    /// Waits for a place in `bucket`'s window and a token of it, then for a slot; all are held
    /// until the permit drops.
    pub async fn acquire(&self, bucket: RequestBucket) -> Permit<'_> {
        loop {
            // Asked for before looking, so a release between the look and the wait is not missed.
            let released = self.released.notified();
            tokio::pin!(released);
            released.as_mut().enable();
            let next = self.with(bucket, |p, now| {
                if p.in_flight >= p.window {
                    return Some(None);
                }
                let wait = p.take(now);
                if wait.is_none() {
                    p.in_flight += 1;
                }
                wait.map(Some)
            });
            match next {
                None => break,
                Some(None) => released.await,
                // Woken at least every QUIET_DOUBLING to look again: a wait computed at a crawl must
                // not outlast the rate's recovery.
                Some(Some(wait)) => tokio::time::sleep(wait.min(QUIET_DOUBLING)).await,
            }
        }
        // From here the window place is held: given back on drop, also when this future is dropped
        // while it waits for a slot.
        let place = Place { limiter: self, bucket };
        let taken = Instant::now();
        // Mutations of every bucket share one bound; the describe window is its own (its ceiling is
        // DESCRIBES_IN_FLIGHT, and a call holds its place as long as it would a slot).
        let slot = if bucket == RequestBucket::Describe {
            None
        } else {
            // The semaphore is never closed, so acquire cannot fail; a closed one would mean shutdown.
            match self.mutations_in_flight.acquire().await {
                Ok(p) => Some(p),
                Err(_) => std::future::pending().await,
            }
        };
        Permit { taken, _place: place, _slot: slot }
    }

    /// EC2 throttled a call of `bucket` sent at `sent`: slow down.
    pub fn throttled(&self, bucket: RequestBucket, sent: Instant) {
        self.with(bucket, |p, now| p.throttled(sent, now));
    }

    /// EC2 took a call of `bucket`: grow back a little.
    pub fn succeeded(&self, bucket: RequestBucket) {
        self.with(bucket, |p, now| p.succeeded(now));
    }

    /// The current rate of `bucket`, calls per second.
    pub fn rate(&self, bucket: RequestBucket) -> f64 {
        self.with(bucket, |p, now| {
            p.advance(now);
            p.rate
        })
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
    pub limiter: RateLimiter,
    pub stats: CallStats,
    /// When EC2 last answered (any outcome, a throttle included).
    last_answer: Mutex<Option<Instant>>,
}

impl Resilient {
    pub fn new(retry: RetrySettings, breaker: CircuitBreakerSettings, rate: &RateLimitSettings) -> Self {
        Self {
            retry,
            breaker: CircuitBreaker::new(breaker),
            limiter: RateLimiter::new(rate),
            stats: CallStats::default(),
            last_answer: Mutex::new(None),
        }
    }

    /// When EC2 last answered a call of this client, whatever it said: a pass that keeps getting
    /// answers is working, however long it takes.
    pub fn last_answer(&self) -> Option<Instant> {
        *self.last_answer.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The pause before retry number `attempt` (1-based): exponential from the base, capped, with
    /// "equal jitter" (half fixed, half random) so many nodes retrying at once spread out.
    pub fn backoff(&self, attempt: u32) -> Duration {
        let exp = self.retry.base_delay_ms.saturating_mul(1u64 << attempt.saturating_sub(1).min(20));
        let capped = exp.min(self.retry.max_delay_ms);
        let half = capped / 2;
        Duration::from_millis(half + fastrand::u64(0..=half))
    }

    /// Runs `call` under the whole policy, paced by the bucket `op` is charged to (`mutating` tells
    /// a mutation EC2 does not name a bucket for from a describe). The call
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
        let first = Instant::now();
        let bucket = RequestBucket::of(op, mutating);
        loop {
            attempt += 1;
            tracing::Span::current().record("attempt", attempt);
            let permit = self.limiter.acquire(bucket).await;
            // Asked after the pace's wait, which can be long: the breaker's answer is about now, and
            // a half-open trial place is not held by a call still queued.
            let Some(admission) = self.breaker.admit() else {
                self.stats.add(op, "breaker_open");
                outcome("breaker_open");
                tracing::info!(op, attempt, "refused by the open EC2 circuit breaker");
                return Err(CallError::BreakerOpen { op });
            };
            // The attempt alone: waiting for the rate limiter is not EC2's latency.
            let started = Instant::now();
            let result = call().await;
            self.stats.observe(op, started.elapsed());
            let answered = match &result {
                Ok(_) => true,
                Err(e) => e.class() != ErrorClass::Transient,
            };
            if answered {
                *self.last_answer.lock().unwrap_or_else(|p| p.into_inner()) = Some(Instant::now());
            }
            // The pace learns the outcome before the place is given back, so the next call waiting
            // for it sees the window and rate this answer made. The call counts as sent when its
            // token was taken: that is the pace it was sent at.
            match &result {
                Ok(_) => self.limiter.succeeded(bucket),
                Err(e) if e.class() == ErrorClass::Throttled => self.limiter.throttled(bucket, permit.taken),
                Err(_) => {}
            }
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
                ErrorClass::Throttled => {
                    // EC2 is up and protecting the account's bucket: slow down, and keep the breaker
                    // out of it (it is for an EC2 that does not answer; a half-open trial's place is
                    // given back).
                    drop(admission);
                    self.stats.add(op, "throttled");
                    // Patient: a crowded account is worked through at its pace, not given up on
                    // after a few tries (a pass that gave up would come back a minute later at full
                    // speed, into the same crowd).
                    if attempt >= self.retry.max_attempts && first.elapsed() >= THROTTLE_PATIENCE {
                        outcome("exhausted");
                        tracing::warn!(op, attempt, %error, "EC2 call throttled; no attempts left");
                        return Err(CallError::Exhausted { op, attempts: attempt, last: error });
                    }
                    let pause = self.backoff(attempt);
                    tracing::warn!(op, attempt, ?pause, %error, "EC2 call throttled; retrying at a slower pace");
                    tokio::time::sleep(pause).await;
                }
                ErrorClass::Transient => {
                    admission.failure();
                    self.stats.add(op, "transient");
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
            &RateLimitSettings {
                mutating_per_second: 5,
                burst: 2,
                max_concurrent: 2,
                describe_per_second: 5,
                describe_burst: 2,
            },
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
        // Callsite interest is global: one registered first on another test's thread (no subscriber
        // there) can be cached as uninteresting while this thread has one. So the scenario runs once
        // to register every callsite, the cache is rebuilt, and the second run is the one checked.
        let scenario = || async {
            let r = layer(2, 2);
            let calls = AtomicU32::new(0);
            r.call("CreateNetworkInterface", false, || flaky(&calls, 1, ErrorClass::Throttled)).await.expect("ok");
            let calls = AtomicU32::new(0);
            let e = r.call("AttachNetworkInterface", false, || flaky(&calls, 9, ErrorClass::Transient)).await;
            assert!(matches!(e, Err(CallError::Exhausted { .. })), "{e:?}");
            let calls = AtomicU32::new(0);
            let e = r.call("DeleteNetworkInterface", false, || flaky(&calls, 0, ErrorClass::Transient)).await;
            assert!(matches!(e, Err(CallError::BreakerOpen { .. })), "two failures opened it: {e:?}");
        };
        scenario().await;
        tracing::callsite::rebuild_interest_cache();
        seen.0.lock().expect("lock").clear();
        scenario().await;
        let seen = seen.0.lock().expect("lock").clone();
        assert_eq!(
            seen,
            [
                "event EC2 call throttled; retrying at a slower pace",
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
        let v = r.call("DescribeInstances", false, || flaky(&calls, 2, ErrorClass::Transient)).await.expect("ok");
        assert_eq!(v, 2);
        assert_eq!(calls.load(Ordering::SeqCst), 3);
        // Two pauses: 50..=100 ms then 100..=200 ms.
        let waited = start.elapsed();
        assert!(waited >= Duration::from_millis(150) && waited <= Duration::from_millis(300), "{waited:?}");
        assert_eq!(r.stats.snapshot().get(&("DescribeInstances", "transient")), Some(&2));
        let calls = AtomicU32::new(0);
        r.call("CreateNetworkInterface", true, || flaky(&calls, 2, ErrorClass::Throttled)).await.expect("ok");
        assert_eq!(r.stats.snapshot().get(&("CreateNetworkInterface", "throttled")), Some(&2));
        assert_eq!(r.stats.attempts("CreateNetworkInterface"), 3);
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
        let _ = r.call("DescribeInstances", false, || flaky(&calls, u32::MAX, ErrorClass::Transient)).await;
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
            &RateLimitSettings { mutating_per_second: 100, burst: 100, max_concurrent: 4, ..Default::default() },
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
            drop(r.limiter.acquire(RequestBucket::Create).await);
        }
        let waited = start.elapsed();
        assert!(waited >= Duration::from_millis(990) && waited <= Duration::from_millis(1_100), "{waited:?}");
        tokio::time::advance(Duration::from_secs(2)).await;
        let a = r.limiter.acquire(RequestBucket::Create).await;
        let b = r.limiter.acquire(RequestBucket::Mutating).await;
        let third = tokio::time::timeout(Duration::from_secs(5), r.limiter.acquire(RequestBucket::Delete)).await;
        assert!(third.is_err(), "max_concurrent 2: a third mutation waits while two are in flight");
        let describe = tokio::time::timeout(Duration::from_secs(5), r.limiter.acquire(RequestBucket::Describe)).await;
        assert!(describe.is_ok(), "describes have slots of their own");
        drop((a, b));
    }

    fn rates(r: &Resilient) -> (f64, f64) {
        (r.limiter.rate(RequestBucket::Create), r.limiter.rate(RequestBucket::Mutating))
    }

    fn close(a: f64, b: f64) -> bool {
        (a - b).abs() < 1e-6 * b.max(1e-9)
    }

    /// A throttle after a success halves its bucket's rate, a further one with no success between
    /// cuts it to a tenth (calls sent before a cut add nothing to it), successes grow it by a fifth up
    /// to the configured rate, and other buckets keep their pace.
    #[tokio::test(start_paused = true)]
    async fn a_throttle_cuts_its_buckets_rate_and_successes_grow_it_back() {
        let r = layer(1, 100);
        assert_eq!(rates(&r), (5.0, 5.0));
        let sent = Instant::now();
        tokio::time::advance(Duration::from_millis(100)).await;
        r.limiter.throttled(RequestBucket::Create, sent);
        r.limiter.throttled(RequestBucket::Create, sent);
        assert!(close(rates(&r).0, 2.5), "two calls sent at once throttled: one cut, a halving: {:?}", rates(&r));
        assert_eq!(rates(&r).1, 5.0, "attach's bucket is not create's");
        r.limiter.throttled(RequestBucket::Create, Instant::now());
        assert!(close(rates(&r).0, 2.5), "one sent at the cut's instant was paced by the old rate");
        tokio::time::advance(Duration::from_millis(1)).await;
        r.limiter.throttled(RequestBucket::Create, Instant::now());
        assert!(close(rates(&r).0, 0.25), "throttled again, no success between: a tenth: {:?}", rates(&r));
        r.limiter.succeeded(RequestBucket::Create);
        assert!(close(rates(&r).0, 0.25 * 1.2), "{:?}", rates(&r));
        tokio::time::advance(Duration::from_millis(1)).await;
        r.limiter.throttled(RequestBucket::Create, Instant::now());
        assert!(close(rates(&r).0, 0.15), "after a success a throttle halves again: {:?}", rates(&r));
        tokio::time::advance(Duration::from_millis(1)).await;
        for _ in 0..100 {
            r.limiter.succeeded(RequestBucket::Create);
        }
        assert_eq!(rates(&r).0, 5.0, "never above the configured rate");
        for _ in 0..40 {
            tokio::time::advance(Duration::from_millis(1)).await;
            r.limiter.throttled(RequestBucket::Create, Instant::now());
        }
        assert!(close(rates(&r).0, 1.0 / 1200.0), "the floor: {:?}", rates(&r));
    }

    /// Slowed below one call a second, a bucket banks at most one token, so a slowed node does not
    /// burst into a crowd; 30 s after the last cut without another, the rate doubles every 30 s.
    #[tokio::test(start_paused = true)]
    async fn a_slowed_bucket_banks_one_token_and_recovers_with_quiet_time() {
        let r = layer(1, 100);
        r.limiter.throttled(RequestBucket::Create, Instant::now());
        tokio::time::advance(Duration::from_millis(1)).await;
        r.limiter.throttled(RequestBucket::Create, Instant::now());
        assert!(close(rates(&r).0, 0.25));
        tokio::time::advance(Duration::from_secs(25)).await;
        let start = Instant::now();
        drop(r.limiter.acquire(RequestBucket::Create).await);
        assert_eq!(start.elapsed(), Duration::ZERO, "one token banked (25 s at 0.25/s would be 6.25)");
        drop(r.limiter.acquire(RequestBucket::Create).await);
        let waited = start.elapsed().as_secs_f64();
        assert!((waited - 4.0).abs() < 0.01, "the second waits 1/0.25 s, not a burst: {waited}");
        // 75 s after the cut: 45 s of quiet beyond the first 30, one and a half doublings.
        tokio::time::advance(Duration::from_secs(46)).await;
        let quiet = rates(&r).0;
        assert!(close(quiet, 0.25 * 1.5f64.exp2()), "{quiet}");
        tokio::time::advance(Duration::from_secs(600)).await;
        assert_eq!(rates(&r).0, 5.0);
    }

    /// A bucket lets one call in flight at first and after a throttle; each success doubles that,
    /// up to `maxConcurrent`.
    #[tokio::test(start_paused = true)]
    async fn a_bucket_starts_with_one_call_in_flight_and_opens_up_with_successes() {
        let r = Resilient::new(
            RetrySettings { max_attempts: 1, base_delay_ms: 1, max_delay_ms: 1 },
            CircuitBreakerSettings::default(),
            &RateLimitSettings { mutating_per_second: 100, burst: 100, max_concurrent: 4, ..Default::default() },
        );
        let r = &r;
        let in_flight = |n: usize| async move {
            let mut held = Vec::new();
            for _ in 0..n {
                match tokio::time::timeout(Duration::from_secs(1), r.limiter.acquire(RequestBucket::Create)).await {
                    Ok(p) => held.push(p),
                    Err(_) => break,
                }
            }
            held.len()
        };
        assert_eq!(in_flight(4).await, 1, "one at first");
        r.limiter.succeeded(RequestBucket::Create);
        assert_eq!(in_flight(4).await, 2);
        r.limiter.succeeded(RequestBucket::Create);
        r.limiter.succeeded(RequestBucket::Create);
        assert_eq!(in_flight(8).await, 4, "at most maxConcurrent");
        r.limiter.throttled(RequestBucket::Create, Instant::now());
        tokio::time::advance(Duration::from_secs(1)).await;
        assert_eq!(in_flight(4).await, 1, "one again after a throttle");
    }

    /// An acquire dropped while it waits for a slot (its window place already taken) gives the
    /// place back: the bucket is not stalled by a cancelled call.
    #[tokio::test(start_paused = true)]
    async fn a_cancelled_acquire_gives_its_window_place_back() {
        let r = layer(1, 100); // maxConcurrent 2, shared by the mutation buckets
        let (a, b) = (r.limiter.acquire(RequestBucket::Delete).await, r.limiter.acquire(RequestBucket::Mutating).await);
        let stuck = tokio::time::timeout(Duration::from_secs(1), r.limiter.acquire(RequestBucket::Create)).await;
        assert!(stuck.is_err(), "no slot free: it waits, holding Create's only window place, until dropped");
        drop((a, b));
        let again = tokio::time::timeout(Duration::from_secs(1), r.limiter.acquire(RequestBucket::Create)).await;
        assert!(again.is_ok(), "Create's place came back");
    }

    /// EC2 throttling is EC2 answering: however many, they never open the breaker; the call's
    /// retries slow its bucket, each one a new cut, and it keeps trying, paced, for
    /// THROTTLE_PATIENCE before it gives up.
    #[tokio::test(start_paused = true)]
    async fn throttles_slow_the_bucket_keep_trying_and_leave_the_breaker_closed() {
        let r = layer(4, 2);
        let calls = AtomicU32::new(0);
        let start = Instant::now();
        let until_patient = r
            .call("CreateNetworkInterface", true, || flaky(&calls, 99, ErrorClass::Throttled))
            .await
            .expect_err("throttled out");
        let CallError::Exhausted { attempts, .. } = until_patient else { panic!("{until_patient}") };
        let took = start.elapsed();
        assert!(took >= THROTTLE_PATIENCE, "gave up after {took:?}");
        // Waits are re-checked every 30 s as the rate recovers: never a 20-minute sleep at the floor.
        assert!(took <= THROTTLE_PATIENCE + Duration::from_secs(180), "gave up only after {took:?}");
        assert!(attempts > 4, "kept trying past maxAttempts: {attempts}");
        assert_eq!(r.breaker.state(), BreakerState::Closed);
        assert!(rates(&r).0 <= 0.5, "the last throttle (no success since) cut the rate to a tenth: {:?}", rates(&r));
        assert_eq!(r.stats.snapshot().get(&("CreateNetworkInterface", "throttled")), Some(&u64::from(attempts)));
        // Throttled twice, then taken: the call succeeds, at the slower pace.
        let calls = AtomicU32::new(0);
        let r = layer(4, 2);
        let start = Instant::now();
        r.call("CreateNetworkInterface", true, || flaky(&calls, 2, ErrorClass::Throttled)).await.expect("ok");
        // 5/s halved, then cut to a tenth (0.25/s): the third attempt waited a full 4 s for its token.
        assert!(start.elapsed() >= Duration::from_secs(4), "{:?}", start.elapsed());
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
