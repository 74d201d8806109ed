//! The plugin's log file. It is opened without following a symlink (one planted there would make the
//! plugin, running as root, append to any file), kept owner-only (created 0600; one found with group or
//! other permission bits, as an older plugin or anyone else may have left it, is set to 0600), and
//! every control character a logged value carries is escaped, so a config field holding a newline
//! cannot forge a log line: one event is one line.

use std::fs::File;
use std::io::{self, Write};
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::Path;
use std::sync::{Mutex, MutexGuard};

use tracing_subscriber::fmt::MakeWriter;

/// Mode of a log file the plugin creates.
pub const LOG_FILE_MODE: u32 = 0o600;

/// Group and other permission bits: none on a log file.
const OPEN_TO_OTHERS: u32 = 0o077;

/// Opens `path` for appending: created 0600 if missing, never through a symlink, only a regular file
/// (a FIFO or a device is refused, and the open never blocks on one). An existing file open to group
/// or others is set to 0600 through the open descriptor (so no path swap can redirect the change).
pub fn open(path: &Path) -> io::Result<File> {
    let file = File::options()
        .create(true)
        .append(true)
        .mode(LOG_FILE_MODE)
        .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC | libc::O_NONBLOCK)
        .open(path)?;
    let meta = file.metadata()?;
    if !meta.is_file() {
        return Err(io::Error::other("not a regular file"));
    }
    if meta.permissions().mode() & OPEN_TO_OTHERS != 0 {
        file.set_permissions(std::fs::Permissions::from_mode(LOG_FILE_MODE))?;
    }
    Ok(file)
}

/// `line` with every control character escaped (`\n`, `\r`, `\t`, else `\u{…}`), a final newline
/// kept as the event's end.
pub fn escape(line: &[u8]) -> Vec<u8> {
    let (body, end) = match line.strip_suffix(b"\n") {
        Some(body) => (body, &b"\n"[..]),
        None => (line, &b""[..]),
    };
    let text = String::from_utf8_lossy(body);
    let mut out = String::with_capacity(text.len() + end.len());
    for c in text.chars() {
        match c {
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if c.is_control() || c == '\u{2028}' || c == '\u{2029}' => out.push_str(&c.escape_unicode().to_string()),
            c => out.push(c),
        }
    }
    let mut bytes = out.into_bytes();
    bytes.extend_from_slice(end);
    bytes
}

/// The log file as tracing's writer: each event (formatted whole, then written once) escaped.
#[derive(Debug)]
pub struct LogFile(Mutex<File>);

impl LogFile {
    pub fn new(file: File) -> Self {
        Self(Mutex::new(file))
    }
}

#[derive(Debug)]
pub struct EscapingWriter<'a>(MutexGuard<'a, File>);

impl Write for EscapingWriter<'_> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.0.write_all(&escape(buf))?;
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        self.0.flush()
    }
}

impl<'a> MakeWriter<'a> for LogFile {
    type Writer = EscapingWriter<'a>;

    fn make_writer(&'a self) -> Self::Writer {
        EscapingWriter(self.0.lock().unwrap_or_else(|p| p.into_inner()))
    }
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::PermissionsExt;

    use super::*;

    #[test]
    fn control_characters_are_escaped_and_the_line_end_kept() {
        assert_eq!(escape(b"pool x\nERROR forged\r\t\x1b[31m\n"), b"pool x\\nERROR forged\\r\\t\\u{1b}[31m\n".to_vec());
        assert_eq!(escape("a\u{85}b\u{2028}".as_bytes()), b"a\\u{85}b\\u{2028}".to_vec());
        assert_eq!(escape(b"plain\n"), b"plain\n".to_vec());
    }

    #[test]
    fn the_log_is_created_owner_only_and_a_symlink_is_not_followed() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("cni.log");
        open(&path).expect("create").write_all(b"x\n").expect("write");
        let mode = std::fs::metadata(&path).expect("meta").permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
        let target = dir.path().join("victim");
        std::fs::write(&target, b"keep").expect("victim");
        let link = dir.path().join("link.log");
        std::os::unix::fs::symlink(&target, &link).expect("symlink");
        let e = open(&link).expect_err("a symlink is refused");
        assert_eq!(e.raw_os_error(), Some(libc::ELOOP), "{e}");
        assert_eq!(std::fs::read(&target).expect("victim"), b"keep");
    }

    /// A log an older plugin (or anyone) left readable by others stayed that way: O_CREAT's mode
    /// applies only to a file it creates.
    #[test]
    fn an_existing_log_open_to_others_is_made_owner_only() {
        let dir = tempfile::tempdir().expect("tempdir");
        let mode_of = |p: &Path| std::fs::metadata(p).expect("meta").permissions().mode() & 0o777;
        for old in [0o644, 0o640, 0o604, 0o666] {
            let path = dir.path().join(format!("old-{old:o}.log"));
            std::fs::write(&path, b"earlier\n").expect("old log");
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(old)).expect("chmod");
            open(&path).expect("open").write_all(b"now\n").expect("write");
            assert_eq!(mode_of(&path), 0o600, "a log that was {old:o}");
            assert_eq!(std::fs::read(&path).expect("read"), b"earlier\nnow\n", "appended, not truncated");
        }
        // An owner-only mode is left as it is.
        let path = dir.path().join("private.log");
        std::fs::write(&path, b"").expect("log");
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o700)).expect("chmod");
        open(&path).expect("open");
        assert_eq!(mode_of(&path), 0o700);
    }
}
