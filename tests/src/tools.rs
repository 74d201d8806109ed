//! Where the tests find the repository and what scripts/install-deps installs (the cache folder, its
//! venv, the helm and kubectl it links, Debian's tools), and the rule for a tool that is missing:
//! the test says it skips, unless CI is set, where it fails.

use std::path::{Path, PathBuf};
use std::process::Output;

/// The repository's root.
pub fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// scripts/install-deps' cache folder (`NODEENI_CACHE`).
pub fn cache() -> PathBuf {
    std::env::var_os("NODEENI_CACHE").map(PathBuf::from).unwrap_or_else(|| "/var/cache/nodeeni".into())
}

/// The venv scripts/install-deps keeps in the cache folder (`NODEENI_VENV` wins).
pub fn venv() -> PathBuf {
    std::env::var_os("NODEENI_VENV").map(PathBuf::from).unwrap_or_else(|| cache().join("venv"))
}

/// `path` when it is installed; None (the test skips, and says so) without it, unless CI is set.
pub fn installed(path: impl Into<PathBuf>) -> Option<PathBuf> {
    let path = path.into();
    if path.is_file() {
        return Some(path);
    }
    assert!(std::env::var_os("CI").is_none(), "{} is missing; scripts/install-deps installs it", path.display());
    eprintln!("SKIPPED: no {} (run scripts/install-deps)", path.display());
    None
}

/// A tool of the venv (kubernetes-validate, yamllint, python).
pub fn venv_tool(name: &str) -> Option<PathBuf> {
    installed(venv().join("bin").join(name))
}

/// A tool scripts/install-deps links into the cache folder's bin/ (helm, kubectl).
pub fn cached_tool(name: &str) -> Option<PathBuf> {
    installed(cache().join("bin").join(name))
}

/// A command's stdout and stderr, for an assertion's message.
pub fn output_text(out: &Output) -> String {
    format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr))
}
