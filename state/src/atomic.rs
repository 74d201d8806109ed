//! Crash-safe file replacement, the one way nodeeni writes a file others read: the bytes go into a
//! fresh temp file beside the target, then a rename puts it in place. Readers see the old or the new
//! content, never half, whenever the writing process dies.
//!
//! The temp file's name is unique and unpredictable, and it is created with `O_EXCL | O_NOFOLLOW`, so
//! a symlink planted where the temp goes is never followed (the create fails instead and another name
//! is drawn). The rename replaces whatever the target path names, a symlink included, without following
//! it: the file a planted symlink points at is never written.

use std::fmt;
use std::fs::{File, OpenOptions};
use std::hash::{BuildHasher, Hasher};
use std::io::{self, Write};
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

/// What a write must survive.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Durability {
    /// A crash of any process (the rename is atomic): enough for state that a reboot makes moot anyway,
    /// such as which pod holds an ENI (every pod namespace is gone after a reboot).
    ProcessCrash,
    /// Also a power loss or kernel crash: fsync the file before the rename and the folder after.
    PowerLoss,
}

/// The mode of state files (node state, attachment records, configs other daemons read).
pub const STATE_FILE_MODE: u32 = 0o644;

/// Which step of a [`replace_file`] failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Step {
    CreateTemp,
    Write,
    Chmod,
    Sync,
    Rename,
    SyncFolder,
}

impl Step {
    pub fn as_str(self) -> &'static str {
        match self {
            Step::CreateTemp => "create temp file",
            Step::Write => "write",
            Step::Chmod => "chmod",
            Step::Sync => "sync",
            Step::Rename => "rename",
            Step::SyncFolder => "sync folder",
        }
    }
}

impl fmt::Display for Step {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A failed [`replace_file`]: the target, the step, and the kernel's error.
#[derive(Debug, thiserror::Error)]
#[error("replacing {path}: {step}: {source}")]
pub struct AtomicWriteError {
    pub path: PathBuf,
    pub step: Step,
    #[source]
    pub source: io::Error,
}

impl From<AtomicWriteError> for io::Error {
    /// Keeps the kernel's error kind (and errno) for callers that speak `io::Error`.
    fn from(e: AtomicWriteError) -> io::Error {
        e.source
    }
}

/// Replaces `path` with `bytes`, with permissions exactly `mode` (the umask does not apply), as
/// durable as asked. The temp file is removed on every error before the rename; nothing is left behind.
pub fn replace_file(path: &Path, bytes: &[u8], mode: u32, durability: Durability) -> Result<(), AtomicWriteError> {
    let fail = |step| move |source| AtomicWriteError { path: path.to_path_buf(), step, source };
    let dir = path.parent().filter(|p| !p.as_os_str().is_empty()).unwrap_or(Path::new("."));
    let name = path.file_name().ok_or_else(|| fail(Step::CreateTemp)(io::Error::other("no file name")))?;
    let (tmp, mut file) = create_temp(dir, &name.to_string_lossy()).map_err(fail(Step::CreateTemp))?;
    let result = (|| {
        file.write_all(bytes).map_err(fail(Step::Write))?;
        file.set_permissions(std::fs::Permissions::from_mode(mode)).map_err(fail(Step::Chmod))?;
        if durability == Durability::PowerLoss {
            file.sync_all().map_err(fail(Step::Sync))?;
        }
        std::fs::rename(&tmp, path).map_err(fail(Step::Rename))
    })();
    drop(file);
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    result?;
    if durability == Durability::PowerLoss {
        File::open(dir).and_then(|d| d.sync_all()).map_err(fail(Step::SyncFolder))?;
    }
    Ok(())
}

/// Replaces `path` with `bytes` atomically and durably (survives power loss), mode 0644.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> io::Result<()> {
    Ok(replace_file(path, bytes, STATE_FILE_MODE, Durability::PowerLoss)?)
}

/// Replaces `path` with `bytes` atomically, as durable as asked, mode 0644.
pub fn replace(path: &Path, bytes: &[u8], durability: Durability) -> io::Result<()> {
    Ok(replace_file(path, bytes, STATE_FILE_MODE, durability)?)
}

/// How many names to draw before giving up: a clash means another writer, or a planted file.
const TEMP_ATTEMPTS: usize = 16;

/// Creates a new temp file in `dir` for the target `name`, owner-only until it is complete.
fn create_temp(dir: &Path, name: &str) -> io::Result<(PathBuf, File)> {
    let mut last = None;
    for _ in 0..TEMP_ATTEMPTS {
        let tmp = dir.join(format!(".{name}.tmp-{}", unpredictable_suffix()));
        match create_exclusive(&tmp) {
            Ok(file) => return Ok((tmp, file)),
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => last = Some(e),
            Err(e) => return Err(e),
        }
    }
    Err(last.unwrap_or_else(|| io::Error::from(io::ErrorKind::AlreadyExists)))
}

/// Creates `path`, which must not exist in any form: `O_EXCL` fails on an existing file or symlink
/// (even a dangling one), `O_NOFOLLOW` says so once more.
fn create_exclusive(path: &Path) -> io::Result<File> {
    OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .custom_flags(nix::libc::O_NOFOLLOW | nix::libc::O_CLOEXEC)
        .open(path)
}

/// 128 bits no other process can guess: SipHash under the keys std seeds from the OS's random source
/// (once per thread, then stepped per hasher), over a counter, the pid and the time.
fn unpredictable_suffix() -> String {
    use std::sync::atomic::{AtomicU64, Ordering};
    static N: AtomicU64 = AtomicU64::new(0);
    let n = N.fetch_add(1, Ordering::Relaxed);
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_nanos());
    let word = |salt: u8| {
        let mut h = std::collections::hash_map::RandomState::new().build_hasher();
        h.write_u8(salt);
        h.write_u64(n);
        h.write_u32(std::process::id());
        h.write_u128(now);
        h.finish()
    };
    format!("{:016x}{:016x}", word(0), word(1))
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::MetadataExt;

    use super::*;

    fn names_in(dir: &Path) -> Vec<String> {
        let mut names: Vec<String> = std::fs::read_dir(dir)
            .expect("ls")
            .filter_map(|e| e.ok())
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        names
    }

    #[test]
    fn replaces_content_and_leaves_no_temp_files() {
        let dir = tempfile::tempdir().expect("tempdir");
        let p = dir.path().join("state.json");
        write_atomic(&p, b"one").expect("first");
        write_atomic(&p, b"two").expect("second");
        replace(&p, b"three", Durability::ProcessCrash).expect("third");
        assert_eq!(std::fs::read(&p).expect("read"), b"three");
        assert_eq!(names_in(dir.path()), ["state.json"]);
    }

    #[test]
    fn a_failed_write_leaves_the_old_file() {
        let dir = tempfile::tempdir().expect("tempdir");
        let p = dir.path().join("missing-dir/state.json");
        assert!(write_atomic(&p, b"x").is_err());
        assert!(!p.exists());
    }

    #[test]
    fn the_mode_is_exactly_as_asked_whatever_the_umask() {
        let dir = tempfile::tempdir().expect("tempdir");
        for mode in [0o444, 0o640, 0o755, 0o666] {
            let p = dir.path().join(format!("f{mode:o}"));
            replace_file(&p, b"x", mode, Durability::ProcessCrash).expect("write");
            // Again over the first one: a read-only old file is replaced all the same.
            replace_file(&p, b"y", mode, Durability::PowerLoss).expect("rewrite");
            let meta = std::fs::metadata(&p).expect("meta");
            assert_eq!(meta.permissions().mode() & 0o7777, mode, "{mode:o}");
            assert_eq!(std::fs::read(&p).expect("read"), b"y");
        }
    }

    #[test]
    fn a_symlink_at_the_target_is_replaced_not_followed() {
        let dir = tempfile::tempdir().expect("tempdir");
        let elsewhere = tempfile::tempdir().expect("elsewhere");
        let victim = elsewhere.path().join("shadow");
        std::fs::write(&victim, b"precious").expect("victim");
        let p = dir.path().join("device.json");
        std::os::unix::fs::symlink(&victim, &p).expect("plant symlink");
        replace_file(&p, b"ours", 0o444, Durability::PowerLoss).expect("write");
        assert!(std::fs::symlink_metadata(&p).expect("lstat").file_type().is_file(), "the link itself was replaced");
        assert_eq!(std::fs::read(&p).expect("read"), b"ours");
        assert_eq!(std::fs::read(&victim).expect("victim"), b"precious", "the link's target is untouched");
        // A dangling symlink is replaced too, and nothing is created where it pointed.
        let dangling = elsewhere.path().join("not-there");
        let q = dir.path().join("config.json");
        std::os::unix::fs::symlink(&dangling, &q).expect("plant dangling");
        replace_file(&q, b"ours", 0o644, Durability::ProcessCrash).expect("write");
        assert!(!dangling.exists());
        assert_eq!(std::fs::read(&q).expect("read"), b"ours");
        assert_eq!(names_in(dir.path()), ["config.json", "device.json"]);
    }

    #[test]
    fn a_symlink_planted_at_a_temp_name_is_never_followed() {
        let dir = tempfile::tempdir().expect("tempdir");
        let victim = dir.path().join("victim");
        std::fs::write(&victim, b"precious").expect("victim");
        let planted = dir.path().join(".state.json.tmp-guess");
        std::os::unix::fs::symlink(&victim, &planted).expect("plant");
        let err = create_exclusive(&planted).expect_err("must not open through a symlink");
        assert_eq!(err.kind(), io::ErrorKind::AlreadyExists);
        let dangling = dir.path().join(".state.json.tmp-dangling");
        std::os::unix::fs::symlink(dir.path().join("would-be-created"), &dangling).expect("plant dangling");
        assert!(create_exclusive(&dangling).is_err());
        assert!(!dir.path().join("would-be-created").exists());
        assert_eq!(std::fs::read(&victim).expect("victim"), b"precious");
    }

    #[test]
    fn temp_names_never_repeat() {
        let names: std::collections::BTreeSet<String> = (0..1000).map(|_| unpredictable_suffix()).collect();
        assert_eq!(names.len(), 1000);
        assert!(names.iter().all(|n| n.len() == 32 && n.chars().all(|c| c.is_ascii_hexdigit())));
    }

    #[test]
    fn no_temp_file_is_left_behind_when_the_rename_fails() {
        let dir = tempfile::tempdir().expect("tempdir");
        // A non-empty folder where the file should go: the temp is written, the rename refused.
        let p = dir.path().join("state.json");
        std::fs::create_dir(&p).expect("mkdir");
        std::fs::write(p.join("inside"), b"x").expect("inside");
        let err = replace_file(&p, b"new", 0o644, Durability::PowerLoss).expect_err("rename over a folder");
        assert_eq!(err.step, Step::Rename, "{err}");
        assert!(err.to_string().contains("state.json"), "{err}");
        assert_eq!(names_in(dir.path()), ["state.json"]);
    }

    #[test]
    fn concurrent_writers_of_one_file_each_land_whole() {
        let dir = tempfile::tempdir().expect("tempdir");
        let p = dir.path().join("state.json");
        std::thread::scope(|s| {
            for i in 0..8u8 {
                let p = &p;
                s.spawn(move || {
                    for _ in 0..20 {
                        replace_file(p, &[i; 4096], 0o644, Durability::ProcessCrash).expect("write");
                    }
                });
            }
        });
        let body = std::fs::read(&p).expect("read");
        assert_eq!(body.len(), 4096);
        assert!(body.iter().all(|b| *b == body[0]), "one writer's content, whole");
        assert_eq!(names_in(dir.path()), ["state.json"]);
        assert_eq!(std::fs::metadata(&p).expect("meta").nlink(), 1);
    }
}
