//! Network namespaces for tests, named per test and process so parallel runs never collide.

use std::os::fd::AsFd;
use std::path::PathBuf;
use std::process::Command;
use std::sync::atomic::{AtomicU32, Ordering};

use nix::sched::{CloneFlags, setns};

static COUNTER: AtomicU32 = AtomicU32::new(0);

/// A named network namespace under /run/netns, deleted on drop.
#[derive(Debug)]
pub struct TestNs {
    name: String,
}

/// Runs `ip` with `args`; Err with its stderr when it fails.
pub fn ip(args: &[&str]) -> Result<String, String> {
    let out = Command::new("ip").args(args).output().map_err(|e| format!("ip {args:?}: {e}"))?;
    if out.status.success() {
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    } else {
        Err(format!("ip {}: {}", args.join(" "), String::from_utf8_lossy(&out.stderr).trim()))
    }
}

/// Removes namespaces this harness made in processes that no longer exist (a test run interrupted
/// before its destructors ran). Names are `nt-<label>-<pid>-<n>`; only dead pids' are touched.
fn sweep_orphans() {
    let Ok(entries) = std::fs::read_dir("/run/netns") else { return };
    for entry in entries.filter_map(|e| e.ok()) {
        let name = entry.file_name().to_string_lossy().into_owned();
        let Some(rest) = name.strip_prefix("nt-") else { continue };
        let mut parts = rest.rsplitn(3, '-');
        let (Some(_n), Some(pid), Some(_label)) = (parts.next(), parts.next(), parts.next()) else { continue };
        let Ok(pid) = pid.parse::<u32>() else { continue };
        if !std::path::Path::new(&format!("/proc/{pid}")).exists() {
            let _ = ip(&["netns", "del", &name]);
        }
    }
}

static SWEEP: std::sync::Once = std::sync::Once::new();

impl TestNs {
    /// `label` says which test and role (`cni-add-pod`); the name adds the pid and a counter.
    pub fn new(label: &str) -> Self {
        SWEEP.call_once(sweep_orphans);
        let n = COUNTER.fetch_add(1, Ordering::Relaxed);
        let name = format!("nt-{label}-{}-{n}", std::process::id());
        ip(&["netns", "add", &name]).unwrap_or_else(|e| panic!("{e}"));
        let ns = Self { name };
        ns.ip(&["link", "set", "lo", "up"]);
        ns
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    pub fn path(&self) -> PathBuf {
        PathBuf::from("/run/netns").join(&self.name)
    }

    /// `ip -n <ns> args…`, panicking with stderr on failure.
    pub fn ip(&self, args: &[&str]) -> String {
        self.try_ip(args).unwrap_or_else(|e| panic!("{e}"))
    }

    pub fn try_ip(&self, args: &[&str]) -> Result<String, String> {
        let mut full = vec!["-n", self.name.as_str()];
        full.extend_from_slice(args);
        ip(&full)
    }

    /// A command run inside the namespace (`ip netns exec`).
    pub fn exec(&self, program: &str, args: &[&str]) -> std::process::Output {
        let mut full = vec!["netns", "exec", self.name.as_str(), program];
        full.extend_from_slice(args);
        Command::new("ip").args(&full).output().unwrap_or_else(|e| panic!("ip netns exec {program}: {e}"))
    }

    /// Runs `f` on this thread inside the namespace (children spawned inside inherit it).
    pub fn run<T>(&self, f: impl FnOnce() -> T) -> T {
        let home = std::fs::File::open("/proc/thread-self/ns/net").expect("own netns");
        let target = std::fs::File::open(self.path()).expect("open test netns");
        setns(target.as_fd(), CloneFlags::CLONE_NEWNET).expect("enter test netns");
        let out = f();
        setns(home.as_fd(), CloneFlags::CLONE_NEWNET).expect("return from test netns");
        out
    }

    /// The link names in this namespace.
    pub fn link_names(&self) -> Vec<String> {
        self.ip(&["-o", "link", "show"])
            .lines()
            .filter_map(|l| l.split(": ").nth(1))
            .map(|n| n.split('@').next().unwrap_or(n).to_string())
            .collect()
    }

    pub fn has_link(&self, name: &str) -> bool {
        self.try_ip(&["link", "show", "dev", name]).is_ok()
    }

    /// `ip -o addr show dev <name>` addresses as `a.b.c.d/len`.
    pub fn addresses(&self, name: &str) -> Vec<String> {
        self.ip(&["-o", "addr", "show", "dev", name])
            .lines()
            .filter_map(|l| {
                let mut words = l.split_whitespace();
                words.find(|w| *w == "inet" || *w == "inet6")?;
                words.next().map(str::to_string)
            })
            .filter(|a| !a.starts_with("fe80"))
            .collect()
    }

    /// (mtu, up) of a link.
    pub fn mtu_and_up(&self, name: &str) -> (u32, bool) {
        let line = self.ip(&["-o", "link", "show", "dev", name]);
        let mtu = line.split_whitespace().skip_while(|w| *w != "mtu").nth(1).and_then(|m| m.parse().ok()).unwrap_or(0);
        let flags = line.split('<').nth(1).and_then(|s| s.split('>').next()).unwrap_or("");
        (mtu, flags.split(',').any(|f| f == "UP"))
    }

    pub fn mac_of(&self, name: &str) -> String {
        let line = self.ip(&["-o", "link", "show", "dev", name]);
        line.split_whitespace().skip_while(|w| *w != "link/ether").nth(1).unwrap_or_default().to_string()
    }
}

impl Drop for TestNs {
    fn drop(&mut self) {
        let _ = ip(&["netns", "del", &self.name]);
    }
}
