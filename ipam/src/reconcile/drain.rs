//! Drain: empty the node. Every ENI of this node is detached and deleted; those held by pods are
//! waited for (bounded), never taken. While the marker file exists the daemon's loop leaves the pool
//! alone, so a drain is not undone by the next pass.

use std::time::Duration;

use nodeeni_state::lock::{LockError, LockGuard, acquire};
use nodeeni_state::node::StoreError;

use super::converge::Removed;
use super::plan::Removal;
use super::{DrainReport, PoolError, Reconciler, Report};
use crate::ec2::Ec2;
use crate::host::HostPrep;

/// While this file exists in the state folder the daemon's pool loop is paused (`drain` writes it).
pub const DRAIN_MARKER: &str = "drain-requested";

/// The pool's lock in the state folder: a pass holds it, and a drain (another process) for its whole
/// run, so the two never interleave — the marker alone is read only when a pass starts.
pub const POOL_LOCK: &str = "pool.lock";

impl<E: Ec2, H: HostPrep> Reconciler<E, H> {
    /// Takes the pool lock, waiting up to `wait`: each try is a non-blocking flock on a blocking
    /// thread, and the wait between tries is the runtime's, so no thread sits in a lock wait.
    pub(super) async fn lock_pool(&self, wait: Duration) -> Result<LockGuard, PoolError> {
        let dir = self.config.state_dir.clone();
        let path = dir.join(POOL_LOCK);
        let start = tokio::time::Instant::now();
        loop {
            let attempt = tokio::task::spawn_blocking({
                let (dir, path) = (dir.clone(), path.clone());
                move || {
                    std::fs::create_dir_all(&dir).map_err(|source| LockError::Io { path: dir.clone(), source })?;
                    acquire(&path, "the pool", true, false, Duration::ZERO)
                }
            })
            .await
            .unwrap_or_else(|e| {
                Err(LockError::Io { path: path.clone(), source: std::io::Error::other(e.to_string()) })
            });
            match attempt {
                Ok(guard) => return Ok(guard),
                Err(LockError::Busy { .. }) if start.elapsed() < wait => {
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
                Err(LockError::Busy { key, .. }) => {
                    return Err(PoolError::Store(StoreError::Lock(LockError::Busy { key, waited: wait })));
                }
                Err(e) => return Err(PoolError::Store(StoreError::Lock(e))),
            }
        }
    }

    /// Empties the node: every ENI of this node is detached and deleted; ENIs held by pods are waited
    /// for until `timeout`. Reports what it deleted and what it could not remove.
    pub async fn drain(&self, timeout: Duration) -> Result<DrainReport, PoolError> {
        let start = tokio::time::Instant::now();
        // A pass in flight finishes first; none starts until the drain is done.
        let _pool = self.lock_pool(timeout).await?;
        let mut out = DrainReport::default();
        loop {
            let mut listed = self.mine().await?;
            let mut report = Report::default();
            let (found, state) = self.adopt(&listed, &mut report).await?;
            listed.extend(found);
            let removals: Vec<Removal> = state
                .enis
                .into_iter()
                .filter_map(|rec| {
                    let eni = rec.eni_id?;
                    let attachment_id =
                        listed.iter().find(|e| e.id == eni).and_then(|e| e.attachment.as_ref()).map(|a| a.id.clone());
                    Some(Removal { eni, pool: rec.pool, attachment_id })
                })
                .collect();
            let results = futures_util::future::join_all(removals.iter().map(|r| self.remove(r))).await;
            for (removal, result) in removals.iter().zip(results) {
                if result? == Removed::Deleted {
                    out.deleted.push(removal.eni.clone());
                }
            }
            out.remaining = self.load()?.enis.iter().filter_map(|e| e.eni_id.clone()).collect();
            if out.remaining.is_empty() || start.elapsed() >= timeout {
                if !out.remaining.is_empty() {
                    tracing::warn!(remaining = ?out.remaining, "drain timed out; these are still held by pods");
                }
                return Ok(out);
            }
            tokio::time::sleep(Duration::from_millis(500).min(timeout.saturating_sub(start.elapsed()))).await;
        }
    }
}
