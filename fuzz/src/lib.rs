//! What the fuzz targets share: a scratch folder for the parsers that read files, and the CNI
//! plugin's kubelet-checkpoint reader (the plugin is a binary crate: its module is compiled here as is).

use std::path::{Path, PathBuf};
use std::sync::OnceLock;

/// `cni-plugin/src/kubelet.rs`, unchanged: the fuzzer reaches the binary's parser without a library.
#[path = "../../cni-plugin/src/kubelet.rs"]
pub mod kubelet;

/// A folder of this process's own, on tmpfs where there is one (the stores fsync), removed never: a
/// fuzzing process runs until killed, and each target empties it between inputs.
pub fn scratch() -> &'static Path {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        let base = Path::new("/dev/shm");
        let dir = if base.is_dir() { tempfile::tempdir_in(base) } else { tempfile::tempdir() };
        dir.expect("a scratch folder").keep()
    })
}

/// Removes everything in `dir` (not `dir` itself), so each input starts from an empty folder.
pub fn empty(dir: &Path) {
    if let Ok(entries) = std::fs::read_dir(dir) {
        for e in entries.flatten() {
            let p = e.path();
            let _ = if p.is_dir() { std::fs::remove_dir_all(&p) } else { std::fs::remove_file(&p) };
        }
    }
}
