//! Installing the `nodeeni` CNI binary on the node (the DaemonSet's init container): copied beside
//! its destination under a temporary name, made executable and flushed, then renamed over the old
//! one. A runtime running the plugin at that moment gets the old file or the new one, never half.

use std::io::Write;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

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
    let tmp = to_dir.join(format!(".{}.tmp-{}", name.to_string_lossy(), std::process::id()));
    let bytes = std::fs::read(from).map_err(err("read"))?;
    let result = (|| {
        let mut file = std::fs::File::create(&tmp).map_err(err("create temp file"))?;
        file.write_all(&bytes).map_err(err("write"))?;
        file.set_permissions(std::fs::Permissions::from_mode(0o755)).map_err(err("chmod"))?;
        file.sync_all().map_err(err("sync"))?;
        std::fs::rename(&tmp, &dest).map_err(err("rename"))?;
        std::fs::File::open(to_dir).and_then(|d| d.sync_all()).map_err(err("sync folder"))
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    result.map(|()| dest)
}

#[cfg(test)]
mod tests {
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
