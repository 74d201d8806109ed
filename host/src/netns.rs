//! Network namespace handles. A namespace is entered only by the current thread, for the length of a
//! synchronous closure, and left again before the closure's result is returned: nothing that could
//! await or move threads ever runs inside.

use std::fs::File;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, RawFd};
use std::path::{Path, PathBuf};

use nix::sched::{CloneFlags, setns};

#[derive(Debug, thiserror::Error)]
pub enum NetnsError {
    #[error("cannot open network namespace {path}: {source}")]
    Open { path: PathBuf, source: std::io::Error },
    #[error("{path} is not a network namespace")]
    NotANetns { path: PathBuf },
    #[error("cannot enter network namespace {path}: {source}")]
    Enter { path: PathBuf, source: nix::Error },
}

/// An open network namespace (keeps it alive while held).
#[derive(Debug)]
pub struct NetNs {
    file: File,
    path: PathBuf,
}

/// nsfs's magic number, what statfs reports for namespace files.
const NSFS_MAGIC: i64 = 0x6e73_6673;

impl NetNs {
    /// Opens the namespace at `path` (e.g. `/run/netns/x` or `/proc/<pid>/ns/net`).
    pub fn open(path: impl AsRef<Path>) -> Result<Self, NetnsError> {
        let path = path.as_ref().to_path_buf();
        let file = File::open(&path).map_err(|source| NetnsError::Open { path: path.clone(), source })?;
        let fs = nix::sys::statfs::fstatfs(&file)
            .map_err(|e| NetnsError::Open { path: path.clone(), source: std::io::Error::from(e) })?;
        if fs.filesystem_type().0 as i64 != NSFS_MAGIC {
            return Err(NetnsError::NotANetns { path });
        }
        Ok(Self { file, path })
    }

    /// The namespace the calling thread is in now.
    pub fn current() -> Result<Self, NetnsError> {
        Self::open("/proc/thread-self/ns/net")
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    pub fn raw_fd(&self) -> RawFd {
        self.file.as_raw_fd()
    }

    /// Runs `f` on this thread inside the namespace, then returns the thread to where it was.
    /// If the thread cannot get back, the process aborts: a thread in the wrong namespace would
    /// silently do everything after this in the pod.
    pub fn run<T>(&self, f: impl FnOnce() -> T) -> Result<T, NetnsError> {
        let home = Self::current()?;
        setns(self.file.as_fd(), CloneFlags::CLONE_NEWNET)
            .map_err(|source| NetnsError::Enter { path: self.path.clone(), source })?;
        let out = f();
        if let Err(e) = setns(home.file.as_fd(), CloneFlags::CLONE_NEWNET) {
            eprintln!("nodeeni: cannot return to network namespace {}: {e}; aborting", home.path.display());
            std::process::abort();
        }
        Ok(out)
    }

    /// Whether two handles name the same namespace.
    pub fn same_as(&self, other: &NetNs) -> bool {
        use std::os::unix::fs::MetadataExt;
        match (self.file.metadata(), other.file.metadata()) {
            (Ok(a), Ok(b)) => a.dev() == b.dev() && a.ino() == b.ino(),
            _ => false,
        }
    }
}

impl AsFd for NetNs {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.file.as_fd()
    }
}
