//! Installing the `nodeeni` CNI binary on the node (the DaemonSet's init container): written beside
//! its destination under a unique temporary name, made executable and flushed, then renamed over the old
//! one (`nodeeni_state::atomic::replace_file`). A runtime running the plugin at that moment gets the old
//! file or the new one, never half.
//!
//! It also writes the plugin's node file (`nodeeni_conf::cni::NodeFile`) where there is none: root's,
//! 0644, the daemon's state folder, the defaults otherwise, and nothing left to network configs (no
//! `stateDir`, `sysfsRoot` or `logFile` from a config, no standalone devices, DPDK on ENA devices only).
//! One already there is kept: it is the operator's to change. [`install_cni`] writes the node file
//! before the binary, so a plugin never runs here without it (fail closed: if the file cannot be
//! written, the binary is not installed either).

use std::os::unix::fs::DirBuilderExt;
use std::path::{Path, PathBuf};

use nodeeni_conf::cni::NodeFile;
use nodeeni_state::atomic::{Durability, replace_file};

/// CNI plugins are executables the runtime runs as root; others may read and run them.
const BINARY_MODE: u32 = 0o755;

#[derive(Debug, thiserror::Error)]
#[error("installing {from} into {to}: {step}: {source}")]
pub struct InstallError {
    from: PathBuf,
    to: PathBuf,
    step: &'static str,
    source: std::io::Error,
}

/// Installs `from` into folder `to_dir` under the same file name; returns the installed path.
pub fn install_binary(from: &Path, to_dir: &Path) -> Result<PathBuf, InstallError> {
    let name = from.file_name().ok_or_else(|| InstallError {
        from: from.to_path_buf(),
        to: to_dir.to_path_buf(),
        step: "source",
        source: std::io::Error::other("no file name"),
    })?;
    install_binary_as(from, to_dir, Path::new(name))
}

/// Installs `from` into folder `to_dir` as `name`.
pub fn install_binary_as(from: &Path, to_dir: &Path, name: &Path) -> Result<PathBuf, InstallError> {
    let err = |step| move |source| InstallError { from: from.to_path_buf(), to: to_dir.to_path_buf(), step, source };
    let dest = to_dir.join(name);
    let bytes = std::fs::read(from).map_err(err("read"))?;
    replace_file(&dest, &bytes, BINARY_MODE, Durability::PowerLoss).map_err(|e| err(e.step.as_str())(e.source))?;
    Ok(dest)
}

/// The name the CNI binary answers to as the host-pool IPAM plugin.
pub const IPAM_PLUGIN_NAME: &str = "nodeeni-ipam";

/// Root may write the node file; everyone may read it.
const NODE_FILE_MODE: u32 = 0o644;

/// The CNI's log file, as the shipped network attachments name it.
pub const CNI_LOG_FILE: &str = nodeeni_conf::cni::DEFAULT_LOG_FILE;

/// What the node file says on a node where the daemon runs with the default state folder.
pub fn node_file_defaults() -> NodeFile {
    NodeFile::installed(PathBuf::from(nodeeni_conf::cni::DEFAULT_STATE_DIR))
}

#[derive(Debug, thiserror::Error)]
pub enum NodeFileError {
    #[error("node file {path}: {step}: {source}")]
    Io { path: PathBuf, step: &'static str, source: std::io::Error },
    #[error("node file {path} is there but does not read ({why}); fix or remove it")]
    Invalid { path: PathBuf, why: String },
}

/// Whether [`write_node_file`] wrote the file or kept the one there.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NodeFileOutcome {
    Written,
    Kept,
}

/// Writes `file` at `path` (its folder made 0755 if missing) unless a valid node file is there.
pub fn write_node_file(path: &Path, file: &NodeFile) -> Result<NodeFileOutcome, NodeFileError> {
    let err = |step| move |source| NodeFileError::Io { path: path.to_path_buf(), step, source };
    match std::fs::read(path) {
        Ok(bytes) => {
            return NodeFile::parse(&bytes)
                .map(|_| NodeFileOutcome::Kept)
                .map_err(|why| NodeFileError::Invalid { path: path.to_path_buf(), why });
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(err("read")(e)),
    }
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::DirBuilder::new().recursive(true).mode(0o755).create(dir).map_err(err("create folder"))?;
    }
    let bytes = serde_json::to_vec_pretty(file).map_err(|e| err("encode")(std::io::Error::other(e)))?;
    replace_file(path, &bytes, NODE_FILE_MODE, Durability::PowerLoss).map_err(|e| err(e.step.as_str())(e.source))?;
    Ok(NodeFileOutcome::Written)
}

/// What [`install_cni`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CniInstalled {
    pub binary: PathBuf,
    /// The same executable as the `nodeeni-ipam` IPAM plugin (host pools' addresses).
    pub ipam_binary: PathBuf,
    pub node_file: NodeFileOutcome,
    /// A kept node file whose `stateDir` is not the daemon's: the plugin will not see the daemon's
    /// node state (the operator's file is not overwritten, but they should know).
    pub warning: Option<String>,
}

#[derive(Debug, thiserror::Error)]
pub enum CniInstallError {
    #[error(transparent)]
    NodeFile(#[from] NodeFileError),
    #[error(transparent)]
    Binary(#[from] InstallError),
}

/// `install-cni`: the node file at `node_file` where there is none (for a daemon whose state folder
/// is `state_dir`), then the binary `from` into `to_dir`. The node file comes first: a plugin
/// installed without one would take node paths and standalone devices from network configs.
pub fn install_cni(
    from: &Path,
    to_dir: &Path,
    node_file: &Path,
    state_dir: &Path,
) -> Result<CniInstalled, CniInstallError> {
    let outcome = write_node_file(node_file, &NodeFile::installed(state_dir.to_path_buf()))?;
    let warning = match outcome {
        NodeFileOutcome::Written => None,
        NodeFileOutcome::Kept => std::fs::read(node_file)
            .ok()
            .and_then(|bytes| NodeFile::parse(&bytes).ok())
            .filter(|kept| kept.state_dir != state_dir)
            .map(|kept| {
                format!(
                    "the node file {} keeps stateDir {}, not the daemon's {}: the CNI will not find the daemon's node \
                     state; fix the file",
                    node_file.display(),
                    kept.state_dir.display(),
                    state_dir.display()
                )
            }),
    };
    let binary = install_binary(from, to_dir)?;
    // The IPAM plugin is this executable under its own name (a copy: a CNI folder may be a mount
    // where a symlink would point outside it).
    let ipam_binary = install_binary_as(from, to_dir, Path::new(IPAM_PLUGIN_NAME))?;
    Ok(CniInstalled { binary, ipam_binary, node_file: outcome, warning })
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::PermissionsExt;

    use super::*;

    #[test]
    fn replaces_the_binary_executable_and_leaves_no_temp_file() {
        let src = tempfile::tempdir().expect("src");
        let dst = tempfile::tempdir().expect("dst");
        let from = src.path().join("nodeeni");
        std::fs::write(&from, b"new").expect("write");
        std::fs::write(dst.path().join("nodeeni"), b"old").expect("old");
        let installed = install_binary(&from, dst.path()).expect("install");
        assert_eq!(std::fs::read(&installed).expect("read"), b"new");
        let mode = std::fs::metadata(&installed).expect("meta").permissions().mode();
        assert_eq!(mode & 0o777, 0o755);
        let names: Vec<String> = std::fs::read_dir(dst.path())
            .expect("ls")
            .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
            .collect();
        assert_eq!(names, vec!["nodeeni".to_string()]);
    }

    #[test]
    fn a_missing_destination_is_an_error_naming_the_step() {
        let src = tempfile::tempdir().expect("src");
        let from = src.path().join("nodeeni");
        std::fs::write(&from, b"x").expect("write");
        let e = install_binary(&from, Path::new("/nonexistent/opt/cni/bin")).expect_err("no folder");
        assert!(e.to_string().contains("create temp file"), "{e}");
    }

    #[test]
    fn the_node_file_is_written_root_only_writable_once_and_then_kept() {
        let dir = tempfile::tempdir().expect("dir");
        let path = dir.path().join("etc/nodeeni/node.json");
        assert_eq!(write_node_file(&path, &node_file_defaults()).expect("write"), NodeFileOutcome::Written);
        let mode = std::fs::metadata(&path).expect("meta").permissions().mode();
        assert_eq!(mode & 0o777, 0o644);
        let written = NodeFile::parse(&std::fs::read(&path).expect("read")).expect("reads as a node file");
        assert_eq!(written, node_file_defaults());
        assert!(!written.allow_netconf_paths && !written.allow_standalone_devices && !written.allow_non_ena_dpdk);
        // An operator's edit survives the next install.
        std::fs::write(&path, br#"{"allowStandaloneDevices": true}"#).expect("edit");
        assert_eq!(write_node_file(&path, &node_file_defaults()).expect("keep"), NodeFileOutcome::Kept);
        assert_eq!(std::fs::read(&path).expect("read"), br#"{"allowStandaloneDevices": true}"#);
        std::fs::write(&path, b"{ nope").expect("break");
        let e = write_node_file(&path, &node_file_defaults()).expect_err("invalid");
        assert!(e.to_string().contains("does not read"), "{e}");
    }

    /// Before, install-cni installed the binary first: when the node file could not be written, the
    /// new plugin was in place with no node file, taking node paths from network configs.
    #[test]
    fn no_binary_is_installed_when_the_node_file_cannot_be_written() {
        let src = tempfile::tempdir().expect("src");
        let dst = tempfile::tempdir().expect("dst");
        let from = src.path().join("nodeeni");
        std::fs::write(&from, b"new").expect("write");
        // The node file's folder would be under a regular file: it cannot be created.
        let blocker = src.path().join("etc");
        std::fs::write(&blocker, b"").expect("blocker");
        let node_file = blocker.join("nodeeni/node.json");
        let e = install_cni(&from, dst.path(), &node_file, Path::new("/var/lib/nodeeni")).expect_err("no node file");
        assert!(matches!(e, CniInstallError::NodeFile(_)), "{e}");
        assert!(!dst.path().join("nodeeni").exists(), "the binary waits for its node file");

        let node_file = src.path().join("etc2/node.json");
        let done = install_cni(&from, dst.path(), &node_file, Path::new("/var/lib/nodeeni")).expect("install");
        assert_eq!((done.node_file, done.warning), (NodeFileOutcome::Written, None));
        assert_eq!(std::fs::read(&done.binary).expect("installed"), b"new");
        assert_eq!(done.ipam_binary, dst.path().join("nodeeni-ipam"), "the IPAM plugin beside it");
        assert_eq!(std::fs::read(&done.ipam_binary).expect("installed"), b"new", "the same executable");
    }

    /// The daemon's state folder, when not the default, goes into the node file (else the plugin
    /// would look for the node state where there is none); a kept file that says otherwise is warned of.
    #[test]
    fn the_node_file_carries_the_daemons_state_folder() {
        let src = tempfile::tempdir().expect("src");
        let dst = tempfile::tempdir().expect("dst");
        let from = src.path().join("nodeeni");
        std::fs::write(&from, b"new").expect("write");
        let node_file = src.path().join("etc/node.json");
        let done = install_cni(&from, dst.path(), &node_file, Path::new("/srv/nodeeni")).expect("install");
        assert_eq!(done.node_file, NodeFileOutcome::Written);
        let written = NodeFile::parse(&std::fs::read(&node_file).expect("read")).expect("node file");
        assert_eq!(written, NodeFile { state_dir: "/srv/nodeeni".into(), ..node_file_defaults() });
        let again = install_cni(&from, dst.path(), &node_file, Path::new("/var/lib/nodeeni")).expect("install");
        assert_eq!(again.node_file, NodeFileOutcome::Kept);
        let warning = again.warning.expect("a kept file with another stateDir is warned of");
        assert!(warning.contains("/srv/nodeeni") && warning.contains("/var/lib/nodeeni"), "{warning}");
    }
}
