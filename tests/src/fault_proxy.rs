//! An HTTP proxy between the AWS SDK and moto that injects faults: EC2 throttling errors, 500s, delays
//! and connection resets, chosen per request (by its number, and its EC2 action if asked) by a
//! schedule. Faults are injected before forwarding, so a faulted request never reaches moto. One
//! request per connection (`Connection: close`).

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use crate::http;

/// What to do with one request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fault {
    Forward,
    /// 503 RequestLimitExceeded, as EC2 throttles.
    Throttle,
    /// 500 InternalError.
    ServerError,
    /// Forward after a pause.
    Delay(Duration),
    /// Close the connection without answering.
    Reset,
}

/// What to do with request number n, whose EC2 action (`Action=` of the form body) is given.
type Schedule = dyn Fn(u64, &str) -> Fault + Send + Sync;

/// The EC2 action of a Query API request's form body (`Action=CreateNetworkInterface&…`), "" when none.
fn action_of(body: &[u8]) -> String {
    let body = String::from_utf8_lossy(body);
    body.split('&').find_map(|kv| kv.strip_prefix("Action=")).unwrap_or("").to_string()
}

#[derive(Debug)]
pub struct FaultProxy {
    pub endpoint: String,
    stop: Arc<AtomicBool>,
    pub requests: Arc<AtomicU64>,
}

fn ec2_error(status: &str, code: &str) -> Vec<u8> {
    let body = format!(
        "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<Response><Errors><Error><Code>{code}</Code><Message>injected by the test proxy</Message></Error></Errors><RequestID>fault</RequestID></Response>"
    );
    format!(
        "HTTP/1.1 {status}\r\nContent-Type: text/xml\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )
    .into_bytes()
}

/// One request re-encoded for upstream with `Connection: close`.
fn for_upstream(request: &http::Request) -> Vec<u8> {
    let mut lines: Vec<&str> =
        request.head.split("\r\n").filter(|l| !l.to_ascii_lowercase().starts_with("connection:")).collect();
    lines.push("Connection: close");
    let mut out = (lines.join("\r\n") + "\r\n\r\n").into_bytes();
    out.extend_from_slice(&request.body);
    out
}

fn serve(mut client: TcpStream, upstream: &str, n: u64, schedule: &Schedule) {
    let Some(request) = http::read_request(&mut client) else { return };
    match schedule(n, &action_of(&request.body)) {
        Fault::Throttle => {
            let _ = client.write_all(&ec2_error("503 Service Unavailable", "RequestLimitExceeded"));
            return;
        }
        Fault::ServerError => {
            let _ = client.write_all(&ec2_error("500 Internal Server Error", "InternalError"));
            return;
        }
        Fault::Reset => return,
        Fault::Delay(d) => std::thread::sleep(d),
        Fault::Forward => {}
    }
    let Ok(mut up) = TcpStream::connect(upstream) else { return };
    if up.write_all(&for_upstream(&request)).is_err() {
        return;
    }
    let mut response = Vec::new();
    let _ = up.read_to_end(&mut response);
    let _ = client.write_all(&response);
}

impl FaultProxy {
    /// Proxies to `upstream` (`127.0.0.1:port`, or moto's `http://127.0.0.1:port`), asking `schedule`
    /// what to do with request number n.
    pub fn start(upstream: &str, schedule: impl Fn(u64) -> Fault + Send + Sync + 'static) -> Self {
        Self::start_by_action(upstream, move |n, _| schedule(n))
    }

    /// As [`Self::start`], the schedule also told each request's EC2 action (to fail only some calls).
    pub fn start_by_action(upstream: &str, schedule: impl Fn(u64, &str) -> Fault + Send + Sync + 'static) -> Self {
        let upstream = upstream.trim_start_matches("http://").trim_end_matches('/');
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind proxy");
        let port = listener.local_addr().expect("addr").port();
        listener.set_nonblocking(true).expect("nonblocking");
        let stop = Arc::new(AtomicBool::new(false));
        let requests = Arc::new(AtomicU64::new(0));
        let schedule: Arc<Schedule> = Arc::new(schedule);
        let upstream = upstream.to_string();
        {
            let (stop, requests) = (stop.clone(), requests.clone());
            std::thread::spawn(move || {
                while !stop.load(Ordering::Relaxed) {
                    match listener.accept() {
                        Ok((client, _)) => {
                            let _ = client.set_nonblocking(false);
                            let n = requests.fetch_add(1, Ordering::SeqCst);
                            let (upstream, schedule) = (upstream.clone(), schedule.clone());
                            std::thread::spawn(move || serve(client, &upstream, n, schedule.as_ref()));
                        }
                        Err(_) => std::thread::sleep(Duration::from_millis(2)),
                    }
                }
            });
        }
        Self { endpoint: format!("http://127.0.0.1:{port}"), stop, requests }
    }
}

impl Drop for FaultProxy {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}
