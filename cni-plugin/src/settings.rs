//! The node file: node-level settings (state folder, sysfs root, log file, which devices may be
//! handed out) that root writes once per node (`nodeeni-device-plugin install-cni`), so that a network
//! config, which namespace users may be allowed to write, cannot point the plugin at paths of its
//! choosing. Found at [`NODE_FILE`], or where [`NODE_FILE_ENV`] says; a network config never moves it.
//!
//! It is trusted only if root owns it and its folder and neither is writable by group or others, and it
//! is opened without following a symlink; otherwise every call fails naming the problem (its content
//! is ignored, and so is the config: nothing runs on settings that may be forged). No node file at all
//! is standalone use on a host without the daemon, where the config's keys apply, unless the default
//! state folder holds the daemon's node state: then the daemon runs here, and what `install-cni` would
//! write holds until it does (fail closed: a missing node file opens nothing to network configs).

use std::fs::File;
use std::io::Read;
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use nodeeni_conf::cni::{
    CniError, Command, DEFAULT_STATE_DIR, NODE_FILE, NODE_FILE_ENV, NetConf, NodeFile, NodeSettings, NodeSource,
};
use nodeeni_state::node::{PREVIOUS_FILE, STATE_FILE};

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

/// The daemon's node state in `state_dir` (or the previous good copy it keeps beside it), if there is one.
fn daemon_state(state_dir: &Path) -> Option<PathBuf> {
    [STATE_FILE, PREVIOUS_FILE].into_iter().map(|f| state_dir.join(f)).find(|p| std::fs::symlink_metadata(p).is_ok())
}

/// The settings for `command`: the node file's (read from where the environment says); without one,
/// the daemon's defaults where its node state is in the default state folder; else the config's.
pub fn resolve(
    conf: &NetConf,
    command: Command,
    var: impl Fn(&str) -> Option<String>,
) -> Result<NodeSettings, CniError> {
    resolve_at(conf, command, &node_file_path(var), Path::new(DEFAULT_STATE_DIR))
}

/// [`resolve`] with the node file at `path` and the daemon's default state folder at `state_dir`.
fn resolve_at(conf: &NetConf, command: Command, path: &Path, state_dir: &Path) -> Result<NodeSettings, CniError> {
    let file = read(path)?;
    let state = daemon_state(state_dir);
    let source = match (&file, &state) {
        (Some(f), _) => NodeSource::File(path, f),
        (None, Some(state)) => NodeSource::DaemonState(state),
        (None, None) => NodeSource::Standalone,
    };
    NodeSettings::resolve_for(source, conf, command)
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

    fn conf(extra: serde_json::Value) -> NetConf {
        let mut c = serde_json::json!({"cniVersion": "1.1.0", "name": "enis", "type": "nodeeni", "device": "eth1"});
        if let (Some(base), serde_json::Value::Object(more)) = (c.as_object_mut(), extra) {
            base.extend(more);
        }
        NetConf::parse(c.to_string().as_bytes()).expect("config")
    }

    const EVERY: [Command; 5] = [Command::Add, Command::Check, Command::Del, Command::Gc, Command::Status];

    /// No node file, but the daemon's node state in the default state folder: the daemon runs here, and
    /// what install-cni writes holds. Before, this was standalone use: a config's stateDir, sysfsRoot
    /// and logFile were used as root, and any device could be handed out.
    #[test]
    fn without_a_node_file_the_daemons_node_state_makes_its_defaults_hold() {
        let etc = tempfile::tempdir().expect("etc");
        let state = tempfile::tempdir().expect("state");
        let none = etc.path().join("node.json");
        let tenant = conf(serde_json::json!({"stateDir": "/tmp/tenant", "sysfsRoot": "/tmp/tenant-sys"}));
        // No node state either: standalone use, the config's keys apply.
        let s = resolve_at(&tenant, Command::Add, &none, state.path()).expect("standalone");
        assert_eq!(s.state_dir, Path::new("/tmp/tenant"));
        assert!(s.allow_standalone_devices && s.daemon_state.is_none() && s.warnings.is_empty());

        for file in [STATE_FILE, PREVIOUS_FILE] {
            let marker = state.path().join(file);
            std::fs::write(&marker, b"{}").expect("node state");
            for command in [Command::Add, Command::Check] {
                let e = resolve_at(&tenant, command, &none, state.path()).expect_err("refused");
                assert_eq!(e.code, 7, "{}", e.msg);
                assert!(e.msg.starts_with("stateDir: /tmp/tenant is not allowed here"), "{}", e.msg);
                assert!(e.msg.contains(&marker.display().to_string()), "says why: {}", e.msg);
            }
            let s = resolve_at(&conf(serde_json::json!({})), Command::Add, &none, state.path()).expect("no keys");
            assert_eq!(s.state_dir, state.path(), "the folder the node state is in");
            assert_eq!(s.sysfs_root, Path::new("/sys"));
            assert_eq!(s.log_file.as_deref(), Some(Path::new("/var/log/nodeeni-cni.log")));
            assert!(!s.allow_standalone_devices && !s.allow_non_ena_dpdk && s.node_file.is_none());
            assert_eq!(s.daemon_state.as_deref(), Some(marker.as_path()));
            assert!(s.warnings.iter().any(|w| w.contains("daemon runs here")), "logged why: {:?}", s.warnings);
            std::fs::remove_file(&marker).expect("rm");
        }
    }

    /// A config written before the node file existed carries stateDir, sysfsRoot or logFile. Before,
    /// every command refused it, so its pods' DEL (and GC, STATUS) failed forever; now only ADD and
    /// CHECK do, and the rest use the node file's values and warn.
    #[test]
    fn del_gc_and_status_ignore_node_paths_that_add_and_check_refuse() {
        let node = NodeFile { log_file: Some("/var/log/n.log".into()), ..NodeFile::default() };
        let at = Path::new("/etc/nodeeni/node.json");
        let marker = Path::new("/var/lib/nodeeni/node-state.json");
        let old = conf(serde_json::json!({"stateDir": "/old", "sysfsRoot": "/old-sys", "logFile": "/old.log"}));
        for source in [NodeSource::File(at, &node), NodeSource::DaemonState(marker)] {
            for command in EVERY {
                let outcome = NodeSettings::resolve_for(source, &old, command);
                if matches!(command, Command::Add | Command::Check) {
                    let e = outcome.expect_err("refused");
                    assert!(e.msg.starts_with("stateDir: /old is not allowed here"), "{command:?}: {}", e.msg);
                    continue;
                }
                let s = outcome.unwrap_or_else(|e| panic!("{command:?} must not fail: {e}"));
                assert_eq!((s.state_dir.to_str(), s.sysfs_root.to_str()), (Some("/var/lib/nodeeni"), Some("/sys")));
                assert_ne!(s.log_file.as_deref(), Some(Path::new("/old.log")), "{command:?}");
                for key in ["stateDir /old ", "sysfsRoot /old-sys ", "logFile /old.log "] {
                    assert!(
                        s.warnings.iter().any(|w| w.starts_with(key) && w.contains("is ignored")),
                        "{command:?}: {key} warned of: {:?}",
                        s.warnings
                    );
                }
            }
        }
        // Keys equal to the node file's, or a node file that allows them: nothing to warn of.
        let same = conf(serde_json::json!({"stateDir": "/var/lib/nodeeni", "logFile": "/var/log/n.log"}));
        let s = NodeSettings::resolve_for(NodeSource::File(at, &node), &same, Command::Del).expect("same");
        assert!(s.warnings.is_empty(), "{:?}", s.warnings);
        let open = NodeFile { allow_netconf_paths: true, ..node.clone() };
        let s = NodeSettings::resolve_for(NodeSource::File(at, &open), &old, Command::Del).expect("allowed");
        assert_eq!((s.state_dir.to_str(), s.warnings.len()), (Some("/old"), 0));
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
