//! A real Prometheus server (Debian's `prometheus` package) on a free 127.0.0.1 port, scraping the
//! daemon every second and evaluating rule files every second, with its storage in a temp folder.
//! Killed on drop. Queried over its HTTP API.

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::http;

const PROMETHEUS: &str = "/usr/bin/prometheus";

#[derive(Debug)]
pub struct Prometheus {
    child: Child,
    pub port: u16,
    dir: tempfile::TempDir,
}

/// `text` with every byte but the unreserved ones percent-encoded (a query parameter's value).
pub fn percent_encode(text: &str) -> String {
    let mut out = String::new();
    for b in text.bytes() {
        if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

impl Prometheus {
    /// Starts Prometheus scraping `target` (`host:port`, job `nodeeni`) with `rule_files`; None
    /// (skipped, said on stderr) when it is not installed and CI is not set.
    pub fn start(test: &str, target: &str, rule_files: &[PathBuf]) -> Option<Self> {
        if !Path::new(PROMETHEUS).is_file() {
            assert!(
                std::env::var_os("CI").is_none(),
                "{test}: {PROMETHEUS} is missing; scripts/install-deps installs it"
            );
            eprintln!("SKIPPED {test}: no {PROMETHEUS} (run scripts/install-deps)");
            return None;
        }
        let dir = tempfile::tempdir().expect("tempdir");
        let rules: Vec<String> = rule_files.iter().map(|p| format!("  - {}\n", p.display())).collect();
        let config = format!(
            "global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\nrule_files:\n{}\
             scrape_configs:\n  - job_name: nodeeni\n    static_configs:\n      - targets: ['{target}']\n",
            rules.concat()
        );
        let config_path = dir.path().join("prometheus.yml");
        std::fs::write(&config_path, config).expect("write prometheus.yml");
        let port = TcpListener::bind("127.0.0.1:0").and_then(|l| l.local_addr()).expect("free port").port();
        let mut command = Command::new(PROMETHEUS);
        crate::process::die_with_parent(&mut command);
        let log = std::fs::File::create(dir.path().join("prometheus.log")).expect("log");
        let child = command
            .arg(format!("--config.file={}", config_path.display()))
            .arg(format!("--storage.tsdb.path={}", dir.path().join("data").display()))
            .arg(format!("--web.listen-address=127.0.0.1:{port}"))
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .unwrap_or_else(|e| panic!("start {PROMETHEUS}: {e}"));
        let prometheus = Self { child, port, dir };
        let start = Instant::now();
        while prometheus.get("/-/ready").map(|(s, _)| s) != Ok(200) {
            assert!(start.elapsed() < Duration::from_secs(60), "Prometheus not ready in 60 s\n{}", prometheus.log());
            std::thread::sleep(Duration::from_millis(100));
        }
        Some(prometheus)
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("prometheus.log")).unwrap_or_default()
    }

    /// GET `path` (HTTP/1.0: the answer is the body up to the close, never chunked).
    pub fn get(&self, path: &str) -> Result<(u16, String), String> {
        http::get(self.port, path, Duration::from_secs(10))
    }

    fn api(&self, path: &str) -> Value {
        let (status, body) = self.get(path).unwrap_or_else(|e| panic!("GET {path}: {e}"));
        let v: Value = serde_json::from_str(&body).unwrap_or_else(|e| panic!("GET {path}: {status} {e}: {body}"));
        assert_eq!(v["status"], "success", "GET {path}: {body}");
        v["data"].clone()
    }

    /// An instant query: its result vector, or the error Prometheus gave (a query it cannot parse).
    pub fn query(&self, expr: &str) -> Result<Vec<Value>, String> {
        let path = format!("/api/v1/query?query={}", percent_encode(expr));
        let (status, body) = self.get(&path)?;
        let v: Value = serde_json::from_str(&body).map_err(|e| format!("{status} {e}: {body}"))?;
        if v["status"] != "success" {
            return Err(format!("{}: {}", v["errorType"], v["error"]));
        }
        Ok(v["data"]["result"].as_array().cloned().unwrap_or_default())
    }

    /// The alerts pending or firing now.
    pub fn alerts(&self) -> Vec<Value> {
        self.api("/api/v1/alerts")["alerts"].as_array().cloned().unwrap_or_default()
    }

    /// The start of the last evaluation of every rule group, as Prometheus reports it.
    fn evaluations(&self) -> Vec<String> {
        let groups = self.api("/api/v1/rules")["groups"].as_array().cloned().unwrap_or_default();
        groups.iter().map(|g| g["lastEvaluation"].as_str().unwrap_or_default().to_string()).collect()
    }

    /// Waits until every rule group has been evaluated anew since this call (twice: the first new
    /// one may have started just before), so what the rules say next judged the series seen now.
    pub async fn wait_for_evaluations(&self) {
        for _ in 0..2 {
            let before = self.evaluations();
            crate::poll::eventually(
                "every rule group evaluated again",
                Duration::from_secs(30),
                async || {
                    let now = self.evaluations();
                    (now.len() == before.len() && now.iter().zip(&before).all(|(a, b)| a != b)).then_some(())
                },
                || self.log(),
            )
            .await;
        }
    }

    /// The rules loaded, with their health (a rule that fails to evaluate says so).
    pub fn rules(&self) -> Vec<Value> {
        let groups = self.api("/api/v1/rules")["groups"].as_array().cloned().unwrap_or_default();
        groups.iter().flat_map(|g| g["rules"].as_array().cloned().unwrap_or_default()).collect()
    }
}

impl Drop for Prometheus {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
