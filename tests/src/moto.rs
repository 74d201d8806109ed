//! moto, the EC2 emulator, as a server on a free 127.0.0.1 port, from the venv scripts/install-deps
//! keeps. Killed on drop.

use std::net::{TcpListener, TcpStream};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

#[derive(Debug)]
pub struct Moto {
    child: Child,
    pub endpoint: String,
}

use crate::tools::venv;

impl Moto {
    /// Starts moto; None (skipped, said on stderr) when the venv is missing and CI is not set.
    pub fn start(test: &str) -> Option<Self> {
        // moto's own server, started through tests/moto-server.py (it adds the `status` filter).
        let server = venv().join("bin/moto_server");
        let python = venv().join("bin/python3");
        let wrapper = crate::tools::repo().join("tests/moto-server.py");
        if !server.is_file() {
            if std::env::var_os("CI").is_some() {
                panic!("{test}: {} is missing; scripts/install-deps installs it", server.display());
            }
            eprintln!("SKIPPED {test}: no moto at {} (run scripts/install-deps)", server.display());
            return None;
        }
        let port = TcpListener::bind("127.0.0.1:0").and_then(|l| l.local_addr()).expect("free port").port();
        let mut command = Command::new(&python);
        crate::process::die_with_parent(&mut command);
        let child = command
            .arg(&wrapper)
            .args(["-H", "127.0.0.1", "-p", &port.to_string()])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("start {}: {e}", server.display()));
        let moto = Self { child, endpoint: format!("http://127.0.0.1:{port}") };
        let start = Instant::now();
        while TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(start.elapsed() < Duration::from_secs(30), "moto did not listen on {port} within 30 s");
            std::thread::sleep(Duration::from_millis(50));
        }
        Some(moto)
    }
}

impl Drop for Moto {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
