//! The little HTTP/1.1 the stand-ins need, in one place: reading one request off a socket (the fault
//! proxy, the OTLP receiver) and a one-shot GET (the daemon's /metrics, Prometheus' API).

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;

/// One request as read off the wire.
#[derive(Debug)]
pub struct Request {
    /// The head as sent: request line and headers, without the blank line that ends it.
    pub head: String,
    pub body: Vec<u8>,
}

impl Request {
    pub fn request_line(&self) -> &str {
        self.head.lines().next().unwrap_or("")
    }
}

/// Reads one request (head, then a body of its Content-Length). None when the peer closes early or
/// the read fails.
pub fn read_request(stream: &mut TcpStream) -> Option<Request> {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 16384];
    let head_end = loop {
        let n = stream.read(&mut chunk).ok()?;
        if n == 0 {
            return None;
        }
        buf.extend_from_slice(&chunk[..n]);
        if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break i + 4;
        }
    };
    let head = String::from_utf8_lossy(&buf[..head_end - 4]).into_owned();
    let length = head
        .lines()
        .find_map(|l| {
            let (k, v) = l.split_once(':')?;
            k.trim().eq_ignore_ascii_case("content-length").then(|| v.trim().parse::<usize>().ok())?
        })
        .unwrap_or(0);
    while buf.len() < head_end + length {
        let n = stream.read(&mut chunk).ok()?;
        if n == 0 {
            return None;
        }
        buf.extend_from_slice(&chunk[..n]);
    }
    Some(Request { head, body: buf[head_end..head_end + length].to_vec() })
}

/// `GET path` on 127.0.0.1:port as HTTP/1.0, so the body comes whole (never chunked): (status, body).
pub fn get(port: u16, path: &str, timeout: Duration) -> Result<(u16, String), String> {
    let mut s = TcpStream::connect(("127.0.0.1", port)).map_err(|e| e.to_string())?;
    s.set_read_timeout(Some(timeout)).map_err(|e| e.to_string())?;
    write!(s, "GET {path} HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n").map_err(|e| e.to_string())?;
    let mut raw = String::new();
    s.read_to_string(&mut raw).map_err(|e| e.to_string())?;
    let status = raw.split(' ').nth(1).and_then(|c| c.parse().ok()).ok_or(format!("no status line: {raw}"))?;
    let body = raw.split_once("\r\n\r\n").map(|(_, b)| b.to_string()).unwrap_or_default();
    Ok((status, body))
}
