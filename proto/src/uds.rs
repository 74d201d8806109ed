//! gRPC over Unix domain sockets, both ways: the kubelet and its plugins speak only that.

use std::path::{Path, PathBuf};

use hyper_util::rt::TokioIo;
use tokio::net::{UnixListener, UnixStream};
use tokio_stream::wrappers::UnixListenerStream;
use tonic::transport::{Channel, Endpoint, Uri};

/// Binds a listener at `path`, replacing a stale socket file left by an earlier run.
pub fn bind(path: &Path) -> std::io::Result<UnixListenerStream> {
    match std::fs::remove_file(path) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(e),
    }
    Ok(UnixListenerStream::new(UnixListener::bind(path)?))
}

/// The socket file one [`bind`] made, told from a later one at the same path by its inode: a task
/// that stops removes only its own, never the socket a newer task serves there. It holds an `O_PATH`
/// descriptor of the file, so the inode cannot be freed and its number reused by a newer socket while
/// it is compared.
#[derive(Debug)]
pub struct SocketFile {
    held: std::fs::File,
}

fn identity(meta: &std::fs::Metadata) -> (u64, u64) {
    use std::os::unix::fs::MetadataExt;
    (meta.dev(), meta.ino())
}

impl SocketFile {
    /// The file at `path` now (just after binding it).
    pub fn at(path: &Path) -> std::io::Result<Self> {
        use std::os::unix::fs::OpenOptionsExt;
        let held = std::fs::OpenOptions::new().read(true).custom_flags(libc::O_PATH | libc::O_NOFOLLOW).open(path)?;
        Ok(Self { held })
    }

    /// Whether `path` is still this file.
    pub fn is_at(&self, path: &Path) -> std::io::Result<bool> {
        match std::fs::symlink_metadata(path) {
            Ok(now) => Ok(identity(&now) == identity(&self.held.metadata()?)),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(false),
            Err(e) => Err(e),
        }
    }

    /// Removes `path` if it is still this file; `Ok(false)` when it is gone or another one.
    pub fn remove_if_ours(self, path: &Path) -> std::io::Result<bool> {
        if !self.is_at(path)? {
            return Ok(false);
        }
        std::fs::remove_file(path).map(|()| true)
    }
}

/// A channel whose every connection dials the socket at `path`.
pub async fn connect(path: impl Into<PathBuf>) -> Result<Channel, tonic::transport::Error> {
    let path = path.into();
    // tonic insists on a URI; it is never dialled, the connector below decides where bytes go.
    Endpoint::from_static("http://unix.socket")
        .connect_with_connector(tower::service_fn(move |_: Uri| {
            let path = path.clone();
            async move { UnixStream::connect(path).await.map(TokioIo::new) }
        }))
        .await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_stopping_server_removes_its_own_socket_not_a_newer_one() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("nodeeni-nodeeni.io_fast.sock");
        let _old = bind(&path).expect("bind");
        let old = SocketFile::at(&path).expect("held");
        assert!(old.is_at(&path).expect("stat"));
        // A restarted task binds the same path while the old one is still shutting down.
        let _new = bind(&path).expect("bind again");
        let new = SocketFile::at(&path).expect("held");
        assert!(!old.is_at(&path).expect("stat") && new.is_at(&path).expect("stat"));
        assert!(!old.remove_if_ours(&path).expect("checked"), "the old task leaves the new socket");
        assert!(path.exists());
        let again = SocketFile::at(&path).expect("held");
        assert!(new.remove_if_ours(&path).expect("removed"), "the owner removes it");
        assert!(!path.exists());
        assert!(!again.remove_if_ours(&path).expect("gone is fine"));
    }
}
