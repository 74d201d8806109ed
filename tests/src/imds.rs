//! An IMDSv2 stand-in on a free 127.0.0.1 port: PUT /latest/api/token hands out a session token, and
//! metadata is served only to requests carrying it (as IMDSv2 requires). Counts what it served.

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::net::TcpListener;
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};

const TOKEN: &str = "imds-test-token";

#[derive(Debug)]
pub struct Imds {
    pub endpoint: String,
    /// Metadata requests answered (with a valid token).
    pub served: Arc<AtomicU32>,
    /// Metadata requests refused for lack of a token.
    pub refused: Arc<AtomicU32>,
}

impl Imds {
    /// Serves `metadata` (path under /latest/meta-data/ → value).
    pub fn start(metadata: BTreeMap<String, String>) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind imds");
        let port = listener.local_addr().expect("addr").port();
        let (served, refused) = (Arc::new(AtomicU32::new(0)), Arc::new(AtomicU32::new(0)));
        let (s, r) = (served.clone(), refused.clone());
        std::thread::spawn(move || {
            for conn in listener.incoming() {
                let Ok(mut conn) = conn else { continue };
                let mut buf = vec![0u8; 8192];
                let n = conn.read(&mut buf).unwrap_or(0);
                let req = String::from_utf8_lossy(&buf[..n]).into_owned();
                let mut lines = req.lines();
                let first = lines.next().unwrap_or_default().to_string();
                let mut parts = first.split_whitespace();
                let (method, path) = (parts.next().unwrap_or_default(), parts.next().unwrap_or_default());
                let has_token = lines.clone().any(|l| {
                    l.to_ascii_lowercase().starts_with("x-aws-ec2-metadata-token:") && l.trim_end().ends_with(TOKEN)
                });
                let (status, body) = if method == "PUT" && path == "/latest/api/token" {
                    ("200 OK", TOKEN.to_string())
                } else if !has_token {
                    r.fetch_add(1, Ordering::SeqCst);
                    ("401 Unauthorized", String::new())
                } else if let Some(v) = path.strip_prefix("/latest/meta-data/").and_then(|p| metadata.get(p)) {
                    s.fetch_add(1, Ordering::SeqCst);
                    ("200 OK", v.clone())
                } else {
                    ("404 Not Found", String::new())
                };
                let head = format!(
                    "HTTP/1.1 {status}\r\nContent-Length: {}\r\nx-aws-ec2-metadata-token-ttl-seconds: 21600\r\nConnection: close\r\n\r\n",
                    body.len()
                );
                let _ = conn.write_all(head.as_bytes());
                let _ = conn.write_all(body.as_bytes());
            }
        });
        Self { endpoint: format!("http://127.0.0.1:{port}"), served, refused }
    }
}
