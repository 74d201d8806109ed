//! Installing the `nodeeni` CNI binary on the node (the DaemonSet's init container): written beside
//! its destination under a unique temporary name, made executable and flushed, then renamed over the old
//! one (`nodeeni_state::atomic::replace_file`). A runtime running the plugin at that moment gets the old
//! file or the new one, never half.

use std::path::{Path, PathBuf};

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
    let err = |step| move |source| InstallError { from: from.to_path_buf(), to: to_dir.to_path_buf(), step, source };
    let name = from.file_name().ok_or_else(|| err("source")(std::io::Error::other("no file name")))?;
    let dest = to_dir.join(name);
    let bytes = std::fs::read(from).map_err(err("read"))?;
    replace_file(&dest, &bytes, BINARY_MODE, Durability::PowerLoss).map_err(|e| err(e.step.as_str())(e.source))?;
    Ok(dest)
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
}
