//! The workspace's binaries, for tests that run them as a node would (the daemon as a process, the
//! CNI through libcni). `cargo test --workspace` builds them before any test runs.

use std::path::PathBuf;

/// The profile folder the running binary was built into (`target/debug`): a test runs from
/// `target/debug/deps/`, a binary (the demo, a benchmark) from `target/<profile>/`.
pub fn target_dir() -> PathBuf {
    let exe = std::env::current_exe().expect("current exe");
    let dir = exe.parent().expect("exe folder");
    if dir.file_name().is_some_and(|n| n == "deps") { dir.parent().unwrap_or(dir) } else { dir }.to_path_buf()
}

/// The path of workspace binary `name`, which must have been built.
pub fn path(name: &str) -> PathBuf {
    let p = target_dir().join(name);
    assert!(
        p.is_file(),
        "{} is missing: build the workspace first (`cargo test --workspace` or `cargo build --workspace`)",
        p.display()
    );
    p
}

/// The libcni driver: the one scripts/test built (NODEENI_LIBCNI_DRIVER), or built here from its
/// source. None (said on stderr) when Go or Debian's libcni is missing and CI is not set.
pub fn libcni_driver() -> Option<PathBuf> {
    if let Some(p) = std::env::var_os("NODEENI_LIBCNI_DRIVER").map(PathBuf::from)
        && p.is_file()
    {
        return Some(p);
    }
    let out = target_dir().join("libcni-driver");
    let script = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("libcni-driver/build");
    let built =
        std::process::Command::new("bash").arg(&script).arg(&out).status().map(|s| s.success()).unwrap_or(false);
    if built {
        return Some(out);
    }
    if std::env::var_os("CI").is_some() {
        panic!("the libcni driver could not be built (needs golang-go and golang-github-appc-cni-dev)");
    }
    eprintln!("SKIPPED: libcni driver unavailable (run scripts/install-deps)");
    None
}

/// CNI_PATH for runs through libcni: our plugin first, then Debian's reference plugins.
pub fn cni_path() -> String {
    format!("{}:/usr/lib/cni", target_dir().display())
}
