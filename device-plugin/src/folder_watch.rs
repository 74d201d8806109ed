//! The one place that watches a folder with inotify: a blocking thread reads the events and hands
//! them to async code over a channel. The config reload watches the config's folder (a ConfigMap swaps
//! a symlink, so the file itself cannot be watched); registration watches the kubelet's folder for
//! kubelet.sock appearing and our socket being removed (a kubelet restart).

use std::ffi::OsString;
use std::path::{Path, PathBuf};

use nix::sys::inotify::{AddWatchFlags, InitFlags, Inotify};
use tokio::sync::mpsc;

/// What happened to an entry of the folder.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Change {
    Created,
    Deleted,
    /// Closed after writing.
    Written,
    /// Renamed into the folder.
    MovedIn,
    Attributes,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FolderEvent {
    pub name: Option<OsString>,
    pub change: Change,
}

#[derive(Debug, thiserror::Error)]
#[error("cannot watch {path}: {source}")]
pub struct WatchError {
    pub path: PathBuf,
    pub source: nix::Error,
}

/// Events in `dir` as they happen. The channel's last message is the error that ended the watch;
/// the thread ends when the receiver is dropped (at the next event).
pub fn watch_folder(dir: &Path) -> Result<mpsc::UnboundedReceiver<Result<FolderEvent, nix::Error>>, WatchError> {
    let error = |source| WatchError { path: dir.to_path_buf(), source };
    let inotify = Inotify::init(InitFlags::IN_CLOEXEC).map_err(error)?;
    let kinds = [
        (AddWatchFlags::IN_CREATE, Change::Created),
        (AddWatchFlags::IN_DELETE, Change::Deleted),
        (AddWatchFlags::IN_CLOSE_WRITE, Change::Written),
        (AddWatchFlags::IN_MOVED_TO, Change::MovedIn),
        (AddWatchFlags::IN_ATTRIB, Change::Attributes),
    ];
    let mask = kinds.iter().fold(AddWatchFlags::empty(), |m, (flag, _)| m | *flag);
    inotify.add_watch(dir, mask).map_err(error)?;
    let (tx, rx) = mpsc::unbounded_channel();
    std::thread::spawn(move || {
        loop {
            let events = match inotify.read_events() {
                Ok(events) => events,
                Err(nix::Error::EINTR) => continue,
                Err(e) => {
                    let _ = tx.send(Err(e));
                    return;
                }
            };
            for e in events {
                let Some((_, change)) = kinds.iter().find(|(flag, _)| e.mask.contains(*flag)) else { continue };
                if tx.send(Ok(FolderEvent { name: e.name, change: *change })).is_err() {
                    return;
                }
            }
        }
    });
    Ok(rx)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn creations_writes_renames_and_deletions_are_reported_by_name() {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut events = watch_folder(dir.path()).expect("watch");
        let mut next = async || events.recv().await.expect("open").expect("no error");
        std::fs::write(dir.path().join("a"), b"x").expect("write");
        assert_eq!(next().await, FolderEvent { name: Some("a".into()), change: Change::Created });
        assert_eq!(next().await, FolderEvent { name: Some("a".into()), change: Change::Written });
        std::fs::rename(dir.path().join("a"), dir.path().join("b")).expect("rename");
        assert_eq!(next().await, FolderEvent { name: Some("b".into()), change: Change::MovedIn });
        std::fs::remove_file(dir.path().join("b")).expect("remove");
        assert_eq!(next().await, FolderEvent { name: Some("b".into()), change: Change::Deleted });
    }
}
