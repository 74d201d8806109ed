//! Privileged tests: run as root; skip (saying so) when not root by hand; fail when `CI` is set, so
//! nothing is skipped unseen.

/// True when the test may go on. Panics under CI without root.
pub fn require_root(test: &str) -> bool {
    if nix::unistd::geteuid().is_root() {
        return true;
    }
    if std::env::var_os("CI").is_some() {
        panic!("{test} needs root, and CI is set: refusing to skip");
    }
    eprintln!("SKIPPED {test}: needs root (run as root, or under CI where it is required)");
    false
}
