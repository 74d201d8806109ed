//! What `/healthz` and `/readyz` answer from: the pool loop's heartbeat, whether a pass has
//! succeeded, and which advertised resources the kubelet has registered.

use std::collections::BTreeMap;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use tokio::time::Instant;

/// When EC2 last answered one of the pool's calls.
pub type Progress = Box<dyn Fn() -> Option<Instant> + Send + Sync>;

struct ProgressSource(Option<Progress>);

impl std::fmt::Debug for ProgressSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(if self.0.is_some() { "ProgressSource(set)" } else { "ProgressSource(none)" })
    }
}

#[derive(Debug)]
pub struct Probes {
    /// The pool loop's last turn.
    heartbeat: Mutex<Instant>,
    /// A pass working through a throttled account can take many minutes: an EC2 answer to one of its
    /// calls (a throttle included) shows it is working, not stuck.
    progress: ProgressSource,
    /// The longest a healthy loop may go without a turn.
    max_quiet: Mutex<Duration>,
    first_pass_ok: AtomicBool,
    /// Advertised resources and whether the kubelet has registered each.
    registered: Mutex<BTreeMap<String, bool>>,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl Probes {
    pub fn new(interval: Duration) -> Self {
        Self {
            heartbeat: Mutex::new(Instant::now()),
            progress: ProgressSource(None),
            max_quiet: Mutex::new(Self::quiet_for(interval)),
            first_pass_ok: AtomicBool::new(false),
            registered: Mutex::default(),
        }
    }

    /// The loop waits up to `interval` (the idle ceiling) between turns, and a pass may take a while
    /// when EC2 is slow (timeouts and retries; a throttled account shows as EC2's answers, see
    /// `with_progress`): the interval plus five minutes without a turn or an answer means stuck.
    fn quiet_for(interval: Duration) -> Duration {
        interval + Duration::from_secs(300)
    }

    /// The loop turned, under a configuration whose interval is `interval`.
    pub fn beat(&self, interval: Duration) {
        *lock(&self.max_quiet) = Self::quiet_for(interval);
        *lock(&self.heartbeat) = Instant::now();
    }

    pub fn pass_succeeded(&self) {
        self.first_pass_ok.store(true, Ordering::SeqCst);
    }

    /// A resource is advertised (not yet registered) or, with `done`, registered with the kubelet.
    pub fn resource(&self, resource: &str, done: bool) {
        lock(&self.registered).insert(resource.to_string(), done);
    }

    pub fn forget_resource(&self, resource: &str) {
        lock(&self.registered).remove(resource);
    }

    /// Liveness also counts EC2's answers to the pool's calls, as `progress` tells them.
    pub fn with_progress(mut self, progress: Progress) -> Self {
        self.progress = ProgressSource(Some(progress));
        self
    }

    /// Live: the pool loop turns, or EC2 answers its calls.
    pub fn live(&self) -> Result<(), String> {
        let mut quiet = lock(&self.heartbeat).elapsed();
        if let Some(answered) = self.progress.0.as_ref().and_then(|p| p()) {
            quiet = quiet.min(answered.elapsed());
        }
        let max = *lock(&self.max_quiet);
        if quiet > max {
            Err(format!("the reconcile loop has not turned for {quiet:?} (limit {max:?})"))
        } else {
            Ok(())
        }
    }

    /// Ready: a reconcile pass has succeeded and the kubelet knows every advertised resource.
    pub fn ready(&self) -> Result<(), String> {
        let mut why = Vec::new();
        if !self.first_pass_ok.load(Ordering::SeqCst) {
            why.push("no reconcile pass has succeeded yet".to_string());
        }
        for (resource, done) in lock(&self.registered).iter() {
            if !done {
                why.push(format!("{resource} is not registered with the kubelet yet"));
            }
        }
        if why.is_empty() { Ok(()) } else { Err(why.join("; ")) }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn ready_needs_a_pass_and_every_resource_and_live_needs_turns() {
        let p = Probes::new(Duration::from_secs(60));
        p.resource("nodeeni.io/fast", false);
        let why = p.ready().expect_err("not ready");
        assert!(why.contains("no reconcile pass") && why.contains("nodeeni.io/fast"), "{why}");
        p.pass_succeeded();
        p.resource("nodeeni.io/fast", true);
        assert_eq!(p.ready(), Ok(()));
        assert_eq!(p.live(), Ok(()));
        tokio::time::advance(Duration::from_secs(361)).await;
        assert!(p.live().is_err(), "the interval plus five minutes without a turn");
        p.beat(Duration::from_secs(60));
        assert_eq!(p.live(), Ok(()));
    }

    /// A long pass (a throttled account) is alive while EC2 answers its calls, and stuck once
    /// neither a turn nor an answer came for the limit.
    #[tokio::test(start_paused = true)]
    async fn a_pass_that_ec2_keeps_answering_is_alive() {
        let answered = std::sync::Arc::new(Mutex::new(None::<Instant>));
        let seen = answered.clone();
        let p = Probes::new(Duration::from_secs(60)).with_progress(Box::new(move || *lock(&seen)));
        for _ in 0..10 {
            tokio::time::advance(Duration::from_secs(200)).await;
            *lock(&answered) = Some(Instant::now());
            assert_eq!(p.live(), Ok(()), "EC2 answered just now");
        }
        tokio::time::advance(Duration::from_secs(361)).await;
        assert!(p.live().is_err(), "no turn and no answer for longer than the limit");
    }
}
