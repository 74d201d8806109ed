//! An OTLP/HTTP receiver stand-in: accepts `POST /v1/traces` with the JSON encoding, as a collector
//! does, and keeps every span it was sent (flattened out of resourceSpans / scopeSpans, each with
//! its resource's `service.name`). Answers 200 `{}`; anything else 404.

use std::io::Write;
use std::net::TcpListener;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::Value;

use crate::http::read_request;

#[derive(Debug)]
pub struct OtlpReceiver {
    pub endpoint: String,
    spans: Arc<Mutex<Vec<Value>>>,
    stop: Arc<AtomicBool>,
}

fn spans_of(request: &Value) -> Vec<Value> {
    let mut out = Vec::new();
    for rs in request["resourceSpans"].as_array().into_iter().flatten() {
        let service = rs["resource"]["attributes"]
            .as_array()
            .into_iter()
            .flatten()
            .find(|a| a["key"] == "service.name")
            .map(|a| a["value"]["stringValue"].clone())
            .unwrap_or(Value::Null);
        for ss in rs["scopeSpans"].as_array().into_iter().flatten() {
            for span in ss["spans"].as_array().into_iter().flatten() {
                let mut span = span.clone();
                span["service"] = service.clone();
                out.push(span);
            }
        }
    }
    out
}

impl OtlpReceiver {
    pub fn start() -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
        let port = listener.local_addr().expect("addr").port();
        listener.set_nonblocking(true).expect("nonblocking");
        let spans = Arc::new(Mutex::new(Vec::new()));
        let stop = Arc::new(AtomicBool::new(false));
        {
            let (spans, stop) = (spans.clone(), stop.clone());
            std::thread::spawn(move || {
                while !stop.load(Ordering::Relaxed) {
                    let Ok((mut s, _)) = listener.accept() else {
                        std::thread::sleep(Duration::from_millis(5));
                        continue;
                    };
                    let _ = s.set_nonblocking(false);
                    let _ = s.set_read_timeout(Some(Duration::from_secs(5)));
                    let Some(request) = read_request(&mut s) else { continue };
                    let ok = request.request_line().starts_with("POST /v1/traces ");
                    let parsed = serde_json::from_slice::<Value>(&request.body).ok().filter(|_| ok);
                    let reply = match &parsed {
                        Some(request) => {
                            spans.lock().unwrap_or_else(std::sync::PoisonError::into_inner).extend(spans_of(request));
                            "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 2\r\nConnection: close\r\n\r\n{}"
                        }
                        None => "HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
                    };
                    let _ = s.write_all(reply.as_bytes());
                }
            });
        }
        Self { endpoint: format!("http://127.0.0.1:{port}"), spans, stop }
    }

    /// Every span received so far.
    pub fn spans(&self) -> Vec<Value> {
        self.spans.lock().unwrap_or_else(std::sync::PoisonError::into_inner).clone()
    }
}

impl Drop for OtlpReceiver {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}
