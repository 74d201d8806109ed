//! A daemon run as a child process, as a node runs it: its log goes to a file, and it is stopped
//! (SIGTERM), killed (SIGKILL) or, on drop, killed and reaped.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;

#[derive(Debug)]
pub struct Process {
    child: Option<Child>,
    pub log: PathBuf,
}

impl Process {
    /// Starts `program args…` with `env`, stdout and stderr into `log`.
    pub fn spawn(program: &Path, args: &[String], env: &[(&str, &str)], log: &Path) -> Self {
        let file = std::fs::OpenOptions::new().create(true).append(true).open(log).expect("log file");
        let mut command = Command::new(program);
        die_with_parent(&mut command);
        let child = command
            .args(args)
            .envs(env.iter().copied())
            .stdout(Stdio::from(file.try_clone().expect("dup log")))
            .stderr(Stdio::from(file))
            .spawn()
            .unwrap_or_else(|e| panic!("start {}: {e}", program.display()));
        Self { child: Some(child), log: log.to_path_buf() }
    }

    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// The log so far.
    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Sends `signal` and waits (bounded) for the exit; kills and reaps it when the time runs out (None).
    pub fn stop_with(&mut self, signal: Signal, timeout: Duration) -> Option<ExitStatus> {
        let pid = self.pid()?;
        let _ = kill(Pid::from_raw(pid as i32), signal);
        let status = self.wait(timeout);
        // Taken either way: a reaped pid may be reused, so it is never signalled again.
        if let Some(mut child) = self.child.take()
            && status.is_none()
        {
            let _ = child.kill();
            let _ = child.wait();
        }
        status
    }

    /// SIGTERM and wait up to 30 s; None when it had to be killed.
    pub fn terminate(&mut self) -> Option<ExitStatus> {
        self.stop_with(Signal::SIGTERM, Duration::from_secs(30))
    }

    /// SIGKILL, as a crash or an OOM kill.
    pub fn kill(&mut self) {
        let _ = self.stop_with(Signal::SIGKILL, Duration::from_secs(5));
    }

    /// Waits (bounded) for the process to exit by itself; None if it still runs after `timeout`.
    pub fn wait(&mut self, timeout: Duration) -> Option<ExitStatus> {
        let start = Instant::now();
        loop {
            if let Some(Ok(Some(status))) = self.child.as_mut().map(Child::try_wait) {
                return Some(status);
            }
            if start.elapsed() > timeout {
                return None;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// True while the process runs.
    pub fn running(&mut self) -> bool {
        self.child.as_mut().is_some_and(|c| matches!(c.try_wait(), Ok(None)))
    }
}

/// The child gets SIGKILL if the thread that started it goes away (a test run interrupted before its
/// destructors ran), so no daemon outlives its test.
pub fn die_with_parent(command: &mut Command) {
    use std::os::unix::process::CommandExt;
    // SAFETY: the closure runs between fork and exec and makes one prctl(2) call, which is
    // async-signal-safe; it touches no memory of the parent.
    unsafe {
        command.pre_exec(|| nix::sys::prctl::set_pdeathsig(Signal::SIGKILL).map_err(std::io::Error::from));
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}
