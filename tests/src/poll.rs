//! Waiting for a condition the system reaches on its own (a pass, a re-registration, a write), bounded,
//! with a failure that says what was awaited and what was seen last.

use std::time::{Duration, Instant};

/// Calls `probe` every 50 ms until it returns `Some`, and returns that. Panics after `timeout` with
/// `what` and `context()` (the last observation, a log).
pub async fn eventually<T>(
    what: &str,
    timeout: Duration,
    mut probe: impl AsyncFnMut() -> Option<T>,
    context: impl Fn() -> String,
) -> T {
    let start = Instant::now();
    loop {
        if let Some(v) = probe().await {
            return v;
        }
        if start.elapsed() > timeout {
            panic!("{what}: not within {timeout:?}\n{}", context());
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}
