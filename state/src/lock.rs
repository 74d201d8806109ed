//! Cross-process locks: one lock file per key (an ENI's MAC or PCI address, the node state), held with
//! flock, waited for with a bound. The holder unlinks the file on release, so lock files do not pile up;
//! a waiter that locked a file someone unlinked meanwhile notices (the path no longer names its inode)
//! and tries again.

use std::fs::{File, OpenOptions};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use nix::errno::Errno;
use nix::fcntl::{Flock, FlockArg};

#[derive(Debug, thiserror::Error)]
pub enum LockError {
    #[error("{key} is busy: another operation held its lock for {waited:?}")]
    Busy { key: String, waited: Duration },
    #[error("lock {path}: {source}")]
    Io { path: PathBuf, source: std::io::Error },
}

/// A held lock; released (and its file removed) on drop.
#[derive(Debug)]
pub struct LockGuard {
    /// Held for the guard's life: unlocked, then closed, when the guard drops.
    _held: Flock<File>,
    path: PathBuf,
    remove_on_release: bool,
}

impl Drop for LockGuard {
    fn drop(&mut self) {
        // Unlink while still holding the lock: nobody can lock this inode and think it current.
        // `_held`, dropped right after this, releases the flock.
        if self.remove_on_release {
            let _ = std::fs::remove_file(&self.path);
        }
    }
}

/// Locks `file` without waiting; `None` when another holder has it.
fn try_flock(file: File, exclusive: bool) -> std::io::Result<Option<Flock<File>>> {
    let arg = if exclusive { FlockArg::LockExclusiveNonblock } else { FlockArg::LockSharedNonblock };
    match Flock::lock(file, arg) {
        Ok(locked) => Ok(Some(locked)),
        Err((_, Errno::EWOULDBLOCK)) => Ok(None),
        Err((_, errno)) => Err(std::io::Error::from(errno)),
    }
}

/// Takes the lock at `path`, waiting up to `timeout`. `exclusive` false takes a shared lock.
/// `remove_on_release` unlinks the file when the guard drops (per-device locks; not for shared locks,
/// where another reader may still hold it).
pub fn acquire(
    path: &Path,
    key: &str,
    exclusive: bool,
    remove_on_release: bool,
    timeout: Duration,
) -> Result<LockGuard, LockError> {
    let io = |source| LockError::Io { path: path.to_path_buf(), source };
    let start = Instant::now();
    let mut pause = Duration::from_micros(200);
    loop {
        let file = OpenOptions::new().read(true).write(true).create(true).truncate(false).open(path).map_err(io)?;
        if let Some(held) = try_flock(file, exclusive).map_err(io)? {
            // Still the file the path names? If the previous holder unlinked it, start over.
            let ours = held.metadata().map_err(io)?;
            match std::fs::metadata(path) {
                Ok(now) if now.ino() == ours.ino() && now.dev() == ours.dev() => {
                    return Ok(LockGuard { _held: held, path: path.to_path_buf(), remove_on_release });
                }
                _ => continue,
            }
        }
        if start.elapsed() >= timeout {
            return Err(LockError::Busy { key: key.to_string(), waited: timeout });
        }
        std::thread::sleep(pause);
        pause = (pause * 2).min(Duration::from_millis(20));
    }
}

/// A file-system-safe name for a key such as a MAC address or PCI address.
pub fn file_name_for(key: &str) -> String {
    key.chars().map(|c| if c.is_ascii_alphanumeric() || c == '-' || c == '.' { c } else { '_' }).collect()
}

/// Per-device locks under one folder.
#[derive(Debug, Clone)]
pub struct DeviceLocks {
    dir: PathBuf,
}

impl DeviceLocks {
    pub fn new(dir: impl Into<PathBuf>) -> Self {
        Self { dir: dir.into() }
    }

    pub fn lock(&self, key: &str, timeout: Duration) -> Result<LockGuard, LockError> {
        std::fs::create_dir_all(&self.dir).map_err(|source| LockError::Io { path: self.dir.clone(), source })?;
        let path = self.dir.join(format!("{}.lock", file_name_for(key)));
        acquire(&path, key, true, true, timeout)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::{Arc, Barrier};

    #[test]
    fn a_second_holder_waits_then_times_out_with_busy() {
        let dir = tempfile::tempdir().expect("tempdir");
        let locks = DeviceLocks::new(dir.path());
        let held = locks.lock("0a:00:00:00:00:01", Duration::from_secs(1)).expect("first");
        // flock is per open file description, so a second open in this process contends like another process.
        let err = locks.lock("0a:00:00:00:00:01", Duration::from_millis(50)).expect_err("busy");
        assert!(matches!(err, LockError::Busy { .. }), "{err}");
        assert!(err.to_string().contains("0a:00:00:00:00:01"));
        // Another key is independent.
        let _other = locks.lock("0000:00:06.0", Duration::from_millis(50)).expect("other key");
        drop(held);
        let _again = locks.lock("0a:00:00:00:00:01", Duration::from_millis(50)).expect("free after release");
    }

    #[test]
    fn shared_holders_coexist_and_keep_an_exclusive_one_waiting() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("state.lock");
        let short = Duration::from_millis(50);
        let r1 = acquire(&path, "state", false, false, short).expect("first reader");
        let r2 = acquire(&path, "state", false, false, short).expect("second reader alongside");
        let err = acquire(&path, "state", true, false, short).expect_err("writer waits for readers");
        assert!(matches!(err, LockError::Busy { waited, .. } if waited == short), "{err}");
        drop(r1);
        assert!(acquire(&path, "state", true, false, short).is_err(), "one reader still holds it");
        drop(r2);
        let w = acquire(&path, "state", true, false, short).expect("writer once readers are gone");
        assert!(acquire(&path, "state", false, false, short).is_err(), "readers wait for the writer");
        drop(w);
        assert!(path.exists(), "shared lock files stay");
    }

    #[test]
    fn lock_files_are_removed_on_release() {
        let dir = tempfile::tempdir().expect("tempdir");
        let locks = DeviceLocks::new(dir.path());
        for i in 0..20 {
            let _g = locks.lock(&format!("dev{i}"), Duration::from_secs(1)).expect("lock");
        }
        assert_eq!(std::fs::read_dir(dir.path()).expect("ls").count(), 0);
    }

    #[test]
    fn contenders_are_serialized_and_all_get_through() {
        let dir = tempfile::tempdir().expect("tempdir");
        let locks = DeviceLocks::new(dir.path());
        let inside = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let barrier = Arc::new(Barrier::new(8));
        let handles: Vec<_> = (0..8)
            .map(|_| {
                let (locks, inside, barrier) = (locks.clone(), inside.clone(), barrier.clone());
                std::thread::spawn(move || {
                    barrier.wait();
                    let _g = locks.lock("same", Duration::from_secs(10)).expect("eventually");
                    assert_eq!(inside.fetch_add(1, std::sync::atomic::Ordering::SeqCst), 0, "two holders at once");
                    std::thread::sleep(Duration::from_millis(5));
                    inside.fetch_sub(1, std::sync::atomic::Ordering::SeqCst);
                })
            })
            .collect();
        for h in handles {
            h.join().expect("thread");
        }
        assert_eq!(std::fs::read_dir(dir.path()).expect("ls").count(), 0);
    }
}
