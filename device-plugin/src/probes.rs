//! What `/healthz` and `/readyz` answer from: the pool loop's heartbeat, whether a pass has
//! succeeded, and which advertised resources the kubelet has registered.

use std::collections::BTreeMap;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use tokio::time::Instant;

#[derive(Debug)]
pub struct Probes {
    /// The pool loop's last turn.
    heartbeat: Mutex<Instant>,
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
            max_quiet: Mutex::new(Self::quiet_for(interval)),
            first_pass_ok: AtomicBool::new(false),
            registered: Mutex::default(),
        }
    }

    /// A pass may take a while when EC2 is slow (timeouts and retries); three intervals plus two
    /// minutes without a turn means the loop is stuck.
    fn quiet_for(interval: Duration) -> Duration {
        interval * 3 + Duration::from_secs(120)
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

    /// Live: the pool loop turns.
    pub fn live(&self) -> Result<(), String> {
        let quiet = lock(&self.heartbeat).elapsed();
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
        tokio::time::advance(Duration::from_secs(301)).await;
        assert!(p.live().is_err(), "three intervals plus two minutes without a turn");
        p.beat(Duration::from_secs(60));
        assert_eq!(p.live(), Ok(()));
    }
}
