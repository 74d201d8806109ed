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
