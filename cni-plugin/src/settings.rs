//! The node file: node-level settings (state folder, sysfs root, log file, which devices may be
//! handed out) that root writes once per node (`nodeeni-device-plugin install-cni`), so that a network
//! config, which namespace users may be allowed to write, cannot point the plugin at paths of its
//! choosing. Found at [`NODE_FILE`], or where [`NODE_FILE_ENV`] says; a network config never moves it.
//!
//! It is trusted only if root owns it and its folder and neither is writable by group or others, and it
//! is opened without following a symlink; otherwise every call fails naming the problem (its content
//! is ignored, and so is the config: nothing runs on settings that may be forged). No node file at all
//! is standalone use on a host without the daemon, where the config's keys apply.

use std::fs::File;
use std::io::Read;
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use nodeeni_conf::cni::{CniError, NODE_FILE, NODE_FILE_ENV, NetConf, NodeFile, NodeSettings};

/// Group- and world-writable bits.
const WRITABLE_BY_OTHERS: u32 = 0o022;

/// Where the node file is: [`NODE_FILE_ENV`] when set, else [`NODE_FILE`].
pub fn node_file_path(var: impl Fn(&str) -> Option<String>) -> PathBuf {
    var(NODE_FILE_ENV).filter(|v| !v.is_empty()).map_or_else(|| PathBuf::from(NODE_FILE), PathBuf::from)
}

fn refused(path: &Path, why: impl std::fmt::Display) -> CniError {
    CniError::invalid_config(format!("node file {}: {why}; it is ignored until fixed", path.display()))
}

/// Root owns it and only root may write it.
fn check_owner(path: &Path, what: &str, meta: &std::fs::Metadata) -> Result<(), CniError> {
    if meta.uid() != 0 {
        return Err(refused(path, format!("{what} is owned by uid {}, not root", meta.uid())));
    }
    if meta.mode() & WRITABLE_BY_OTHERS != 0 {
        return Err(refused(path, format!("{what} is writable by group or others (mode {:o})", meta.mode() & 0o7777)));
    }
    Ok(())
}

/// The node file, when there is one, checked and parsed.
pub fn read(path: &Path) -> Result<Option<NodeFile>, CniError> {
    let mut file = match File::options().read(true).custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC).open(path) {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) if e.raw_os_error() == Some(libc::ELOOP) => return Err(refused(path, "is a symlink")),
        Err(e) => return Err(refused(path, format!("cannot open: {e}"))),
    };
    let meta = file.metadata().map_err(|e| refused(path, format!("cannot stat: {e}")))?;
    if !meta.is_file() {
        return Err(refused(path, "is not a regular file"));
    }
    check_owner(path, "the file", &meta)?;
    let folder = path.parent().filter(|p| !p.as_os_str().is_empty()).unwrap_or(Path::new("."));
    let folder_meta =
        std::fs::symlink_metadata(folder).map_err(|e| refused(path, format!("cannot stat its folder: {e}")))?;
    check_owner(path, "its folder", &folder_meta)?;
    let mut bytes = Vec::new();
    file.read_to_end(&mut bytes).map_err(|e| refused(path, format!("cannot read: {e}")))?;
    NodeFile::parse(&bytes).map(Some).map_err(|e| refused(path, e))
}

/// The settings for this call: the node file's (read from where the environment says), or the config's.
pub fn resolve(conf: &NetConf, var: impl Fn(&str) -> Option<String>) -> Result<NodeSettings, CniError> {
    let path = node_file_path(var);
    let file = read(&path)?;
    NodeSettings::resolve(file.as_ref().map(|f| (path.as_path(), f)), conf)
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::PermissionsExt;

    use super::*;

    fn write(dir: &Path, body: &str, mode: u32) -> PathBuf {
        let path = dir.join("node.json");
        std::fs::write(&path, body).expect("write");
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(mode)).expect("chmod");
        path
    }

    #[test]
    fn the_environment_moves_the_node_file_and_nothing_else_does() {
        assert_eq!(node_file_path(|_| None), Path::new("/etc/nodeeni/node.json"));
        assert_eq!(node_file_path(|k| (k == NODE_FILE_ENV).then(|| "/x/n.json".into())), Path::new("/x/n.json"));
    }

    #[test]
    fn an_unsafe_node_file_fails_every_call_and_a_missing_one_is_standalone_use() {
        if !nodeeni_tests::root::require_root(
            "an_unsafe_node_file_fails_every_call_and_a_missing_one_is_standalone_use",
        ) {
            return;
        }
        let dir = tempfile::tempdir().expect("tempdir");
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).expect("chmod");
        assert_eq!(read(&dir.path().join("none.json")).expect("absent"), None);
        let good = write(dir.path(), r#"{"stateDir": "/srv/n"}"#, 0o644);
        assert_eq!(read(&good).expect("safe").map(|f| f.state_dir), Some(PathBuf::from("/srv/n")));

        let refused = |path: &Path, words: &str| {
            let e = read(path).expect_err(words);
            assert_eq!(e.code, 7, "{}", e.msg);
            assert!(e.msg.contains(words) && e.msg.contains("ignored"), "{:?} should say {words:?}", e.msg);
        };
        write(dir.path(), r#"{"stateDir": "/srv/n"}"#, 0o664);
        refused(&good, "writable by group or others");
        write(dir.path(), r#"{"stateDir": "/srv/n"}"#, 0o646);
        refused(&good, "writable by group or others");
        write(dir.path(), r#"{"stateDir": "/srv/n"}"#, 0o644);
        std::os::unix::fs::chown(&good, Some(65534), None).expect("chown");
        refused(&good, "owned by uid 65534, not root");
        std::os::unix::fs::chown(&good, Some(0), None).expect("chown");
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o777)).expect("chmod");
        refused(&good, "its folder is writable by group or others");
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).expect("chmod");
        let link = dir.path().join("link.json");
        std::os::unix::fs::symlink(&good, &link).expect("symlink");
        refused(&link, "is a symlink");
        write(dir.path(), r#"{"stateDir": "relative"}"#, 0o644);
        refused(&good, "absolute");
    }
}
