//! Traces: every `tracing` span (a reconcile pass, each slot, each EC2 call, each kubelet RPC) sent
//! to an OpenTelemetry collector over OTLP/HTTP with the JSON encoding, when an endpoint is set. Off
//! by default: without an endpoint the layer is not installed, so spans cost what they cost without
//! it.
//!
//! The layer keeps each span's ids, times, fields and events in the span's extensions; a closed span
//! goes to a bounded queue that one exporter thread drains in batches. A full queue drops spans
//! (counted and said) rather than slow the daemon; a collector that is down loses its batches.

use std::collections::hash_map::RandomState;
use std::fmt::Write as _;
use std::hash::{BuildHasher, Hasher};
use std::io::{Read, Write};
use std::net::TcpStream;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{Receiver, RecvTimeoutError, SyncSender, TrySendError, sync_channel};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use serde_json::{Value, json};
use tracing::field::{Field, Visit};
use tracing::span::{Attributes, Id, Record};
use tracing::{Event, Subscriber};
use tracing_subscriber::Layer;
use tracing_subscriber::layer::Context;
use tracing_subscriber::registry::LookupSpan;

/// Spans waiting for the exporter; more are dropped.
const QUEUE: usize = 4096;
/// A batch is sent when this many spans wait, or every `FLUSH`.
const BATCH: usize = 512;
const FLUSH: Duration = Duration::from_secs(1);
const SEND_TIMEOUT: Duration = Duration::from_secs(5);
/// Events kept per span (a retry storm keeps its first ones).
const EVENTS_PER_SPAN: usize = 32;

#[derive(Debug, thiserror::Error)]
pub enum TracesError {
    #[error("OTLP endpoint {0:?}: only http://host:port[/path] is supported (use a local collector for TLS)")]
    Endpoint(String),
}

/// Where batches go: host:port and the path (`/v1/traces` unless the endpoint names one).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Endpoint {
    pub authority: String,
    pub path: String,
}

impl Endpoint {
    /// `http://host:port` gets OTLP's `/v1/traces`; a path given is used as is.
    pub fn parse(url: &str) -> Result<Self, TracesError> {
        let bad = || TracesError::Endpoint(url.to_string());
        let rest = url.strip_prefix("http://").ok_or_else(bad)?;
        let (authority, path) = match rest.find('/') {
            Some(i) => (&rest[..i], &rest[i..]),
            None => (rest, ""),
        };
        let valid = |c: char| c.is_ascii_alphanumeric() || ".-:[]".contains(c);
        if authority.is_empty() || !authority.chars().all(valid) || path.chars().any(|c| c.is_whitespace()) {
            return Err(bad());
        }
        let path = if path.is_empty() || path == "/" { "/v1/traces".to_string() } else { path.to_string() };
        Ok(Self { authority: authority.to_string(), path })
    }
}

/// A span's fields or an event's: (name, value as text).
pub type KeyValues = Vec<(String, String)>;

/// A finished span, as OTLP needs it.
#[derive(Debug, Clone)]
pub struct SpanData {
    pub trace_id: u128,
    pub span_id: u64,
    pub parent: Option<u64>,
    pub name: &'static str,
    pub start: SystemTime,
    pub end: SystemTime,
    pub attributes: KeyValues,
    pub events: Vec<(SystemTime, String, KeyValues)>,
}

/// Random ids from the process's randomly keyed hasher and a counter (unique, not secret).
fn random_u64() -> u64 {
    static KEYS: OnceLock<RandomState> = OnceLock::new();
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let mut h = KEYS.get_or_init(RandomState::new).build_hasher();
    h.write_u64(COUNTER.fetch_add(1, Ordering::Relaxed));
    h.finish().max(1)
}

struct Fields<'a>(&'a mut Vec<(String, String)>);

impl Visit for Fields<'_> {
    fn record_str(&mut self, field: &Field, value: &str) {
        self.0.push((field.name().to_string(), value.to_string()));
    }
    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        self.0.push((field.name().to_string(), format!("{value:?}")));
    }
}

/// The layer: records spans, hands closed ones to `sink`.
#[derive(Debug)]
pub struct OtlpLayer {
    sink: SyncSender<SpanData>,
    dropped: Arc<AtomicU64>,
}

impl OtlpLayer {
    /// A layer whose spans go to `sink` (the exporter's queue, or a test's).
    pub fn to_sink(sink: SyncSender<SpanData>) -> Self {
        Self { sink, dropped: Arc::new(AtomicU64::new(0)) }
    }

    /// A layer exporting to `endpoint` from a background thread named `nodeeni-otlp`.
    pub fn export(endpoint: Endpoint, service: &str) -> Self {
        let (tx, rx) = sync_channel(QUEUE);
        let layer = Self::to_sink(tx);
        let (dropped, service) = (layer.dropped.clone(), service.to_string());
        let spawned = std::thread::Builder::new()
            .name("nodeeni-otlp".into())
            .spawn(move || exporter(rx, &endpoint, &service, &dropped));
        if let Err(e) = spawned {
            eprintln!("cannot start the OTLP exporter thread: {e}");
        }
        layer
    }
}

impl<S> Layer<S> for OtlpLayer
where
    S: Subscriber + for<'a> LookupSpan<'a>,
{
    fn on_new_span(&self, attrs: &Attributes<'_>, id: &Id, ctx: Context<'_, S>) {
        let Some(span) = ctx.span(id) else { return };
        let parent = span.parent().and_then(|p| p.extensions().get::<SpanData>().map(|d| (d.trace_id, d.span_id)));
        let mut attributes = Vec::new();
        attrs.record(&mut Fields(&mut attributes));
        let now = SystemTime::now();
        let data = SpanData {
            trace_id: parent
                .map(|(t, _)| t)
                .unwrap_or_else(|| (u128::from(random_u64()) << 64) | u128::from(random_u64())),
            span_id: random_u64(),
            parent: parent.map(|(_, s)| s),
            name: attrs.metadata().name(),
            start: now,
            end: now,
            attributes,
            events: Vec::new(),
        };
        span.extensions_mut().insert(data);
    }

    fn on_record(&self, id: &Id, values: &Record<'_>, ctx: Context<'_, S>) {
        if let Some(span) = ctx.span(id)
            && let Some(data) = span.extensions_mut().get_mut::<SpanData>()
        {
            let mut fresh = Vec::new();
            values.record(&mut Fields(&mut fresh));
            // A field recorded again (an EC2 call's attempt) keeps its last value.
            data.attributes.retain(|(k, _)| !fresh.iter().any(|(f, _)| f == k));
            data.attributes.extend(fresh);
        }
    }

    fn on_event(&self, event: &Event<'_>, ctx: Context<'_, S>) {
        let Some(span) = ctx.event_span(event) else { return };
        let mut extensions = span.extensions_mut();
        let Some(data) = extensions.get_mut::<SpanData>() else { return };
        if data.events.len() >= EVENTS_PER_SPAN {
            return;
        }
        let mut fields = vec![("level".to_string(), event.metadata().level().to_string())];
        event.record(&mut Fields(&mut fields));
        let message = fields
            .iter()
            .position(|(k, _)| k == "message")
            .map(|i| fields.remove(i).1)
            .unwrap_or_else(|| event.metadata().name().to_string());
        data.events.push((SystemTime::now(), message, fields));
    }

    fn on_close(&self, id: Id, ctx: Context<'_, S>) {
        let Some(span) = ctx.span(&id) else { return };
        let Some(mut data) = span.extensions_mut().remove::<SpanData>() else { return };
        data.end = SystemTime::now();
        if let Err(TrySendError::Full(_)) = self.sink.try_send(data) {
            self.dropped.fetch_add(1, Ordering::Relaxed);
        }
    }
}

fn nanos(t: SystemTime) -> String {
    t.duration_since(UNIX_EPOCH).map(|d| d.as_nanos()).unwrap_or(0).to_string()
}

fn key_values(pairs: &[(String, String)]) -> Value {
    pairs.iter().map(|(k, v)| json!({"key": k, "value": {"stringValue": v}})).collect()
}

/// OTLP's span kind: the kubelet's RPCs are served (2, server) or made (Register: 3, client), EC2
/// calls are made (3), the rest internal (1).
fn kind(data: &SpanData) -> u8 {
    match data.name {
        "ec2" => 3,
        "rpc" if data.attributes.iter().any(|(k, v)| k == "method" && v == "Register") => 3,
        "rpc" => 2,
        _ => 1,
    }
}

/// An ExportTraceServiceRequest in OTLP's JSON encoding (ids as hex, times as decimal strings).
pub fn export_request(spans: &[SpanData], service: &str) -> Value {
    let spans: Vec<Value> = spans
        .iter()
        .map(|s| {
            let mut span = json!({
                "traceId": format!("{:032x}", s.trace_id),
                "spanId": format!("{:016x}", s.span_id),
                "name": s.name,
                "kind": kind(s),
                "startTimeUnixNano": nanos(s.start),
                "endTimeUnixNano": nanos(s.end),
                "attributes": key_values(&s.attributes),
                "events": s.events.iter().map(|(t, name, attrs)| json!({
                    "timeUnixNano": nanos(*t), "name": name, "attributes": key_values(attrs),
                })).collect::<Vec<_>>(),
            });
            if let Some(p) = s.parent {
                span["parentSpanId"] = json!(format!("{p:016x}"));
            }
            span
        })
        .collect();
    json!({"resourceSpans": [{
        "resource": {"attributes": [{"key": "service.name", "value": {"stringValue": service}}]},
        "scopeSpans": [{"scope": {"name": "nodeeni", "version": env!("CARGO_PKG_VERSION")}, "spans": spans}],
    }]})
}

/// POSTs one batch; the collector's status, or why it could not be asked.
fn send(endpoint: &Endpoint, body: &[u8]) -> Result<u16, String> {
    // A collector that does not answer the connect (a black hole) must not hold a batch for minutes;
    // each address the name resolves to is tried in turn (localhost: ::1, then 127.0.0.1).
    let mut last = format!("{} resolves to no address", endpoint.authority);
    let mut connected = None;
    for addr in std::net::ToSocketAddrs::to_socket_addrs(&endpoint.authority).map_err(|e| e.to_string())? {
        match TcpStream::connect_timeout(&addr, SEND_TIMEOUT) {
            Ok(s) => {
                connected = Some(s);
                break;
            }
            Err(e) => last = format!("{addr}: {e}"),
        }
    }
    let mut s = connected.ok_or(last)?;
    s.set_read_timeout(Some(SEND_TIMEOUT)).map_err(|e| e.to_string())?;
    s.set_write_timeout(Some(SEND_TIMEOUT)).map_err(|e| e.to_string())?;
    let mut head = String::new();
    let _ = write!(
        head,
        "POST {} HTTP/1.1\r\nHost: {}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        endpoint.path,
        endpoint.authority,
        body.len()
    );
    s.write_all(head.as_bytes()).and_then(|()| s.write_all(body)).map_err(|e| e.to_string())?;
    let mut status = [0u8; 12];
    s.read_exact(&mut status).map_err(|e| e.to_string())?;
    std::str::from_utf8(&status[9..12]).ok().and_then(|c| c.parse().ok()).ok_or_else(|| "no HTTP status".to_string())
}

fn exporter(rx: Receiver<SpanData>, endpoint: &Endpoint, service: &str, dropped: &AtomicU64) {
    let mut batch = Vec::new();
    let mut deadline = Instant::now() + FLUSH;
    let mut failing = false;
    loop {
        let wait = deadline.saturating_duration_since(Instant::now());
        let closed = match rx.recv_timeout(wait) {
            Ok(span) => {
                batch.push(span);
                false
            }
            Err(RecvTimeoutError::Timeout) => false,
            Err(RecvTimeoutError::Disconnected) => true,
        };
        if batch.len() < BATCH && Instant::now() < deadline && !closed {
            continue;
        }
        deadline = Instant::now() + FLUSH;
        if !batch.is_empty() {
            let body = export_request(&batch, service).to_string();
            match send(endpoint, body.as_bytes()) {
                Ok(200..=299) => failing = false,
                // Said once per outage: the log is not to fill with it.
                outcome if !failing => {
                    failing = true;
                    tracing::warn!(
                        endpoint = endpoint.authority,
                        ?outcome,
                        spans = batch.len(),
                        "OTLP export failed; spans dropped until the collector answers"
                    );
                }
                _ => {}
            }
            batch.clear();
        }
        let lost = dropped.swap(0, Ordering::Relaxed);
        if lost > 0 {
            tracing::warn!(spans = lost, "OTLP export queue full; spans dropped");
        }
        if closed {
            return;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tracing_subscriber::layer::SubscriberExt;

    #[test]
    fn endpoints_take_otlps_path_unless_they_name_one() {
        assert_eq!(
            Endpoint::parse("http://127.0.0.1:4318").expect("ok"),
            Endpoint { authority: "127.0.0.1:4318".into(), path: "/v1/traces".into() }
        );
        assert_eq!(Endpoint::parse("http://collector:4318/").expect("ok").path, "/v1/traces");
        assert_eq!(Endpoint::parse("http://collector:4318/otlp/v1/traces").expect("ok").path, "/otlp/v1/traces");
        for bad in ["https://collector:4318", "collector:4318", "http://", "http://a b:1", "http://h:1/\r\nX: y"] {
            assert!(Endpoint::parse(bad).is_err(), "{bad:?} refused");
        }
    }

    /// A pass with a slot and an EC2 call under it: one trace, parents as nested, a field recorded
    /// later kept at its last value, an event on its span; spans of another pass start another trace.
    #[test]
    fn spans_nest_into_one_trace_with_their_fields_and_events() {
        let (tx, rx) = sync_channel(64);
        let subscriber = tracing_subscriber::registry().with(OtlpLayer::to_sink(tx));
        tracing::subscriber::with_default(subscriber, || {
            for _ in 0..2 {
                let pass = tracing::info_span!("pass", instance = "i-0123");
                let _p = pass.enter();
                let slot = tracing::info_span!("slot", pool = "fast", device_index = 1);
                let _s = slot.enter();
                let ec2 = tracing::info_span!("ec2", op = "CreateNetworkInterface", attempt = tracing::field::Empty);
                let _e = ec2.enter();
                ec2.record("attempt", 1);
                tracing::warn!(class = "throttled", "EC2 call failed; retrying");
                ec2.record("attempt", 2);
            }
        });
        let spans: Vec<SpanData> = rx.try_iter().collect();
        assert_eq!(spans.len(), 6, "{spans:?}");
        let by = |name: &str, i: usize| spans.iter().filter(|s| s.name == name).nth(i).expect(name).clone();
        let (pass, slot, ec2) = (by("pass", 0), by("slot", 0), by("ec2", 0));
        assert_eq!((pass.parent, slot.parent, ec2.parent), (None, Some(pass.span_id), Some(slot.span_id)));
        assert!(pass.trace_id == slot.trace_id && slot.trace_id == ec2.trace_id, "one trace");
        assert_ne!(by("pass", 1).trace_id, pass.trace_id, "the next pass is another trace");
        assert!(ec2.attributes.contains(&("attempt".into(), "2".into())), "{:?}", ec2.attributes);
        assert_eq!(ec2.attributes.iter().filter(|(k, _)| k == "attempt").count(), 1);
        assert!(ec2.attributes.contains(&("op".into(), "CreateNetworkInterface".into())));
        let (_, message, fields) = &ec2.events[0];
        assert_eq!(message, "EC2 call failed; retrying");
        assert!(
            fields.contains(&("class".into(), "throttled".into())) && fields.contains(&("level".into(), "WARN".into()))
        );
        assert!(ec2.start <= ec2.end && pass.start <= slot.start);

        let request = export_request(&spans, "nodeeni-device-plugin");
        let out = request["resourceSpans"][0]["scopeSpans"][0]["spans"].as_array().expect("spans");
        let ec2_out = out.iter().find(|s| s["name"] == "ec2").expect("ec2");
        assert_eq!(ec2_out["kind"], 3);
        assert_eq!(ec2_out["traceId"].as_str().map(str::len), Some(32));
        assert_eq!(ec2_out["parentSpanId"], format!("{:016x}", slot.span_id));
        assert!(out.iter().find(|s| s["name"] == "pass").expect("pass").get("parentSpanId").is_none());
        assert_eq!(
            request["resourceSpans"][0]["resource"]["attributes"][0]["value"]["stringValue"],
            "nodeeni-device-plugin"
        );
    }

    #[test]
    fn a_full_queue_drops_spans_instead_of_blocking() {
        let (tx, rx) = sync_channel(1);
        let layer = OtlpLayer::to_sink(tx);
        let dropped = layer.dropped.clone();
        let subscriber = tracing_subscriber::registry().with(layer);
        tracing::subscriber::with_default(subscriber, || {
            for _ in 0..3 {
                let _s = tracing::info_span!("pass").entered();
            }
        });
        assert_eq!(rx.try_iter().count(), 1);
        assert_eq!(dropped.load(Ordering::Relaxed), 2);
    }
}
