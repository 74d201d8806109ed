//! The daemon's HTTP endpoint (loopback by default): `/metrics` in the Prometheus text format,
//! `/healthz` (the pool loop turns), `/readyz` (a pass succeeded and every advertised resource is
//! registered with the kubelet; 503 with the reasons), and `/debug/loglevel` (GET the log filter,
//! PUT a new one: the level changes at run time, without a restart). It takes what it shows — the
//! probes, a metrics renderer, the log filter — not the daemon.
//!
//! Whatever clients do, the endpoint stays cheap ([`Limits`]): scrapes within [`MetricsCache`]'s
//! window share one rendering; a client has a bounded time to send its request's headers (an idle
//! keep-alive connection too); connections beyond a cap are closed at once, unanswered; and requests
//! beyond a cap in flight wait for a place.

use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::IntoResponse;
use axum::routing::get;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::graceful::GracefulShutdown;
use hyper_util::service::TowerToHyperService;
use tokio::sync::Semaphore;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tower::limit::GlobalConcurrencyLimitLayer;

use crate::probes::Probes;

/// Renders the metrics exposition text.
pub type RenderMetrics = Arc<dyn Fn() -> String + Send + Sync>;

/// How long scrapes share one rendering.
pub const METRICS_MAX_AGE: Duration = Duration::from_secs(1);

/// One rendering of the metrics shared by every scrape within `max_age` of it: a flood of scrapes
/// costs one rendering a window, and concurrent scrapes of a stale one wait for a single new one.
pub struct MetricsCache {
    render: RenderMetrics,
    max_age: Duration,
    last: tokio::sync::Mutex<Option<(Instant, Bytes)>>,
}

impl std::fmt::Debug for MetricsCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MetricsCache").field("max_age", &self.max_age).finish_non_exhaustive()
    }
}

impl MetricsCache {
    pub fn new(render: RenderMetrics, max_age: Duration) -> Self {
        Self { render, max_age, last: tokio::sync::Mutex::new(None) }
    }

    /// The text rendered within `max_age`, or a new rendering (off the async workers, since a
    /// collector may block).
    pub async fn get(&self) -> Bytes {
        let mut last = self.last.lock().await;
        if let Some((at, text)) = &*last
            && at.elapsed() < self.max_age
        {
            return text.clone();
        }
        let render = self.render.clone();
        let text = Bytes::from(tokio::task::spawn_blocking(move || render()).await.unwrap_or_default());
        *last = Some((Instant::now(), text.clone()));
        text
    }
}

/// The log filter, readable and replaceable at run time.
pub trait LogLevel: Send + Sync {
    fn get(&self) -> String;
    /// Replaces the filter (tracing's EnvFilter syntax); an invalid one is refused with why.
    fn set(&self, filter: &str) -> Result<(), String>;
}

/// What the endpoint serves.
#[derive(Clone)]
pub struct Endpoints {
    pub probes: Arc<Probes>,
    pub metrics: Arc<MetricsCache>,
    pub log_level: Option<Arc<dyn LogLevel>>,
}

impl std::fmt::Debug for Endpoints {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Endpoints").field("probes", &self.probes).finish_non_exhaustive()
    }
}

async fn metrics(State(e): State<Endpoints>) -> impl IntoResponse {
    ([(header::CONTENT_TYPE, crate::metrics::CONTENT_TYPE)], e.metrics.get().await)
}

fn probe(result: Result<(), String>) -> (StatusCode, String) {
    match result {
        Ok(()) => (StatusCode::OK, "ok\n".into()),
        Err(why) => (StatusCode::SERVICE_UNAVAILABLE, format!("{why}\n")),
    }
}

async fn healthz(State(e): State<Endpoints>) -> impl IntoResponse {
    probe(e.probes.live())
}

async fn readyz(State(e): State<Endpoints>) -> impl IntoResponse {
    probe(e.probes.ready())
}

async fn get_log_level(State(e): State<Endpoints>) -> (StatusCode, String) {
    match &e.log_level {
        Some(l) => (StatusCode::OK, format!("{}\n", l.get())),
        None => (StatusCode::NOT_FOUND, "the log level is not adjustable in this process\n".into()),
    }
}

async fn set_log_level(State(e): State<Endpoints>, body: String) -> (StatusCode, String) {
    let Some(l) = &e.log_level else {
        return (StatusCode::NOT_FOUND, "the log level is not adjustable in this process\n".into());
    };
    match l.set(body.trim()) {
        Ok(()) => {
            tracing::info!(filter = body.trim(), "log filter changed");
            (StatusCode::OK, format!("{}\n", l.get()))
        }
        Err(why) => (StatusCode::BAD_REQUEST, format!("{why}\n")),
    }
}

pub fn router(endpoints: Endpoints) -> Router {
    limited_router(endpoints, None, None)
}

/// The routes, with `/metrics` and `/debug/loglevel` sharing `max_in_flight` places. The probes are
/// outside that limit: a flood of scrapes, or slow bodies sent to the log level, must never fail the
/// kubelet's liveness probe and restart the daemon. Every request, probes included, is answered or
/// dropped within `request_timeout`.
fn limited_router(endpoints: Endpoints, max_in_flight: Option<usize>, request_timeout: Option<Duration>) -> Router {
    let mut heavy =
        Router::new().route("/metrics", get(metrics)).route("/debug/loglevel", get(get_log_level).put(set_log_level));
    if let Some(places) = max_in_flight {
        // One limit for the whole endpoint: the layer's clones (one per connection) share its places.
        heavy = heavy.layer(GlobalConcurrencyLimitLayer::new(places));
    }
    let mut all = heavy.merge(Router::new().route("/healthz", get(healthz)).route("/readyz", get(readyz)));
    if let Some(limit) = request_timeout {
        all = all.layer(axum::middleware::from_fn(
            move |req: axum::extract::Request, next: axum::middleware::Next| async move {
                match tokio::time::timeout(limit, next.run(req)).await {
                    Ok(response) => response,
                    Err(_) => (StatusCode::REQUEST_TIMEOUT, "request took too long\n").into_response(),
                }
            },
        ));
    }
    all.with_state(endpoints)
}

/// What one client, or many, can make the endpoint hold.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// A connection whose request headers have not all come in this long after it opened, or after
    /// its last answer (an idle keep-alive), is closed.
    pub header_read_timeout: Duration,
    /// Connections open at once; one more is closed as soon as it is accepted, unanswered.
    pub max_connections: usize,
    /// Scrapes and log-level requests being answered at once, over all connections; more wait for
    /// a place. The probes do not count.
    pub max_in_flight: usize,
    /// A request (its body included) not answered in this long is answered 408.
    pub request_timeout: Duration,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            header_read_timeout: Duration::from_secs(5),
            max_connections: 64,
            max_in_flight: 16,
            request_timeout: Duration::from_secs(10),
        }
    }
}

/// How long a stop waits for answers under way.
const DRAIN: Duration = Duration::from_secs(5);

/// Serves until `stop` is cancelled, within `limits`; then lets answers under way finish (bounded).
pub async fn serve(listener: tokio::net::TcpListener, endpoints: Endpoints, limits: Limits, stop: CancellationToken) {
    let app = limited_router(endpoints, Some(limits.max_in_flight), Some(limits.request_timeout));
    let mut http = hyper::server::conn::http1::Builder::new();
    http.timer(TokioTimer::new()).header_read_timeout(limits.header_read_timeout);
    let connections = Arc::new(Semaphore::new(limits.max_connections));
    let graceful = GracefulShutdown::new();
    // Refusals are logged when they start and when they stop, not once per connection.
    let mut refusing = false;
    loop {
        let (stream, peer) = tokio::select! {
            _ = stop.cancelled() => break,
            accepted = listener.accept() => match accepted {
                Ok(a) => a,
                Err(e) => {
                    // Out of file descriptors, say: pause rather than spin.
                    tracing::warn!(error = %e, "the metrics endpoint cannot accept a connection");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
        };
        let Ok(place) = connections.clone().try_acquire_owned() else {
            if !refusing {
                tracing::warn!(%peer, max = limits.max_connections, "the metrics endpoint is at its connection cap: closing new connections unanswered");
                refusing = true;
            }
            drop(stream);
            continue;
        };
        if refusing {
            tracing::info!("the metrics endpoint accepts connections again");
            refusing = false;
        }
        let conn = http.serve_connection(TokioIo::new(stream), TowerToHyperService::new(app.clone()));
        let conn = graceful.watch(conn);
        tokio::spawn(async move {
            if let Err(e) = conn.await {
                tracing::debug!(%peer, error = %e, "metrics endpoint connection ended");
            }
            drop(place);
        });
    }
    drop(listener);
    if tokio::time::timeout(DRAIN, graceful.shutdown()).await.is_err() {
        tracing::warn!("metrics endpoint connections still open after {DRAIN:?}; leaving them");
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Mutex;
    use std::sync::atomic::{AtomicUsize, Ordering};

    use axum::body::Body;
    use axum::http::Request;
    use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
    use tokio::net::TcpStream;
    use tower::ServiceExt;

    use super::*;

    #[derive(Debug, Default)]
    struct Filter(Mutex<String>);

    impl LogLevel for Filter {
        fn get(&self) -> String {
            self.0.lock().expect("lock").clone()
        }
        fn set(&self, filter: &str) -> Result<(), String> {
            if filter.contains(' ') {
                return Err(format!("{filter:?} is not a filter"));
            }
            *self.0.lock().expect("lock") = filter.into();
            Ok(())
        }
    }

    fn fixed(text: &'static str) -> Arc<MetricsCache> {
        Arc::new(MetricsCache::new(Arc::new(move || text.to_string()), METRICS_MAX_AGE))
    }

    async fn call(app: &Router, method: &str, uri: &str, body: &str) -> (StatusCode, String) {
        let req = Request::builder().method(method).uri(uri).body(Body::from(body.to_string())).expect("request");
        let resp = app.clone().oneshot(req).await.expect("response");
        let status = resp.status();
        let bytes = axum::body::to_bytes(resp.into_body(), 1 << 20).await.expect("body");
        (status, String::from_utf8_lossy(&bytes).into_owned())
    }

    #[tokio::test]
    async fn probes_metrics_and_the_log_level_are_served() {
        let probes = Arc::new(Probes::new(Duration::from_secs(60)));
        let filter = Arc::new(Filter(Mutex::new("info".into())));
        let app = router(Endpoints {
            probes: probes.clone(),
            metrics: fixed("nodeeni_up 1\n"),
            log_level: Some(filter.clone()),
        });
        assert_eq!(call(&app, "GET", "/metrics", "").await, (StatusCode::OK, "nodeeni_up 1\n".into()));
        assert_eq!(call(&app, "GET", "/healthz", "").await.0, StatusCode::OK);
        let (status, why) = call(&app, "GET", "/readyz", "").await;
        assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
        assert!(why.contains("no reconcile pass"), "{why}");
        probes.pass_succeeded();
        assert_eq!(call(&app, "GET", "/readyz", "").await.0, StatusCode::OK);
        assert_eq!(call(&app, "GET", "/debug/loglevel", "").await, (StatusCode::OK, "info\n".into()));
        assert_eq!(call(&app, "PUT", "/debug/loglevel", "nodeeni_ipam=debug,info\n").await.0, StatusCode::OK);
        assert_eq!(filter.get(), "nodeeni_ipam=debug,info");
        assert_eq!(call(&app, "PUT", "/debug/loglevel", "not a filter").await.0, StatusCode::BAD_REQUEST);
        assert_eq!(filter.get(), "nodeeni_ipam=debug,info", "a bad filter changes nothing");
    }

    #[tokio::test(start_paused = true)]
    async fn scrapes_within_the_window_share_one_rendering() {
        let renders = Arc::new(AtomicUsize::new(0));
        let cache = {
            let renders = renders.clone();
            Arc::new(MetricsCache::new(
                Arc::new(move || format!("n {}\n", renders.fetch_add(1, Ordering::SeqCst) + 1)),
                METRICS_MAX_AGE,
            ))
        };
        let scrapes: Vec<_> = (0..100)
            .map(|_| {
                tokio::spawn({
                    let cache = cache.clone();
                    async move { cache.get().await }
                })
            })
            .collect();
        for s in scrapes {
            assert_eq!(s.await.expect("scrape"), "n 1\n");
        }
        assert_eq!(renders.load(Ordering::SeqCst), 1, "100 concurrent scrapes, one rendering");
        tokio::time::advance(METRICS_MAX_AGE / 2).await;
        assert_eq!(cache.get().await, "n 1\n", "still within the window");
        tokio::time::advance(METRICS_MAX_AGE).await;
        assert_eq!(cache.get().await, "n 2\n", "a stale rendering is replaced");
        assert_eq!(renders.load(Ordering::SeqCst), 2);
    }

    /// The endpoint on an ephemeral loopback port, until the returned token is cancelled.
    async fn start(endpoints: Endpoints, limits: Limits) -> (std::net::SocketAddr, CancellationToken) {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        let stop = CancellationToken::new();
        tokio::spawn(serve(listener, endpoints, limits, stop.clone()));
        (addr, stop)
    }

    fn endpoints(metrics: Arc<MetricsCache>) -> Endpoints {
        Endpoints { probes: Arc::new(Probes::new(Duration::from_secs(60))), metrics, log_level: None }
    }

    /// One request on a kept-alive connection: (status, body).
    async fn get_on(conn: &mut BufReader<TcpStream>, path: &str) -> std::io::Result<(u16, String)> {
        conn.get_mut().write_all(format!("GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n").as_bytes()).await?;
        let mut status_line = String::new();
        conn.read_line(&mut status_line).await?;
        let status = status_line.split(' ').nth(1).and_then(|c| c.parse().ok());
        let status = status.ok_or_else(|| std::io::Error::other(format!("no status line: {status_line:?}")))?;
        let mut length = 0;
        loop {
            let mut line = String::new();
            conn.read_line(&mut line).await?;
            if line == "\r\n" || line.is_empty() {
                break;
            }
            if let Some((name, value)) = line.split_once(':')
                && name.eq_ignore_ascii_case("content-length")
            {
                length = value.trim().parse().map_err(std::io::Error::other)?;
            }
        }
        let mut body = vec![0; length];
        conn.read_exact(&mut body).await?;
        Ok((status, String::from_utf8_lossy(&body).into_owned()))
    }

    async fn connect(addr: std::net::SocketAddr) -> BufReader<TcpStream> {
        BufReader::new(TcpStream::connect(addr).await.expect("connect"))
    }

    /// Reads until the server closes the connection: what it sent, or the error (a reset) it ended with.
    async fn read_to_close(conn: &mut TcpStream) -> Result<Vec<u8>, std::io::Error> {
        let mut got = Vec::new();
        conn.read_to_end(&mut got).await.map(|_| got)
    }

    /// The daemon's wiring of /metrics (its registry with the node-state snapshot and the EC2
    /// collector, behind the cache) serves a flood of scrapes while the node-state lock is held
    /// exclusively, as the CNI holds it: no scrape takes that lock, each answers at once with the
    /// snapshot's figures.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_flood_of_scrapes_never_takes_the_node_state_lock() {
        use nodeeni_state::node::{Lifecycle, NodeState, NodeStore, StoreError};

        use crate::metrics::{Ec2Collector, Metrics, PoolSnapshot};

        let dir = tempfile::tempdir().expect("tempdir");
        let store = NodeStore::new(dir.path());
        let snapshot = Arc::new(PoolSnapshot::default());
        let mut metrics = Metrics::new();
        metrics.collect(snapshot.clone());
        metrics.collect(Ec2Collector(Arc::new(nodeeni_ipam::resilience::Resilient::new(
            Default::default(),
            Default::default(),
            &Default::default(),
        ))));
        let record = nodeeni_state::node::EniRecord::new("fast", nodeeni_conf::Mode::Kernel, Lifecycle::Ready);
        snapshot.refresh(&NodeState { enis: vec![record.clone(), record], ..NodeState::default() }, 0);
        let metrics = Arc::new(metrics);
        let render: RenderMetrics = Arc::new(move || metrics.render());
        let (addr, stop) =
            start(endpoints(Arc::new(MetricsCache::new(render, METRICS_MAX_AGE))), Limits::default()).await;

        // The test holds the node-state lock exclusively (through the store, as a CNI claim does)
        // from before the first scrape until after the last.
        let (held_tx, held_rx) = tokio::sync::oneshot::channel();
        let (release_tx, release_rx) = std::sync::mpsc::channel::<()>();
        let holder = {
            let store = store.clone();
            tokio::task::spawn_blocking(move || {
                store.update(Duration::from_secs(5), |_| {
                    let _ = held_tx.send(());
                    let _ = release_rx.recv();
                    Ok::<_, StoreError>(())
                })
            })
        };
        held_rx.await.expect("the lock is held");
        assert!(store.load(Duration::from_millis(50)).is_err(), "the node state is locked exclusively");

        let started = std::time::Instant::now();
        let clients: Vec<_> = (0..50)
            .map(|_| {
                tokio::spawn(async move {
                    let mut conn = connect(addr).await;
                    let mut slowest = Duration::ZERO;
                    for _ in 0..4 {
                        let t = std::time::Instant::now();
                        let (status, body) = get_on(&mut conn, "/metrics").await.expect("scrape");
                        slowest = slowest.max(t.elapsed());
                        assert_eq!(status, 200, "{body}");
                        assert!(body.contains("nodeeni_pool_enis{pool=\"fast\",state=\"ready\"} 2\n"), "{body}");
                    }
                    slowest
                })
            })
            .collect();
        let mut slowest = Duration::ZERO;
        for c in clients {
            slowest = slowest.max(c.await.expect("client"));
        }
        let flood = started.elapsed();
        release_tx.send(()).expect("release");
        holder.await.expect("holder").expect("the lock was held throughout");
        stop.cancel();
        assert!(slowest < Duration::from_secs(1), "the slowest of 200 scrapes took {slowest:?}");
        assert!(flood < Duration::from_secs(5), "200 scrapes over 50 connections took {flood:?}");
    }

    /// A client that sends no request, or only part of its headers, is disconnected once the header
    /// timeout has passed, without an answer.
    #[tokio::test]
    async fn a_client_that_sends_no_headers_is_disconnected_after_the_timeout() {
        let timeout = Duration::from_millis(300);
        let limits = Limits { header_read_timeout: timeout, ..Limits::default() };
        let (addr, stop) = start(endpoints(fixed("")), limits).await;
        for sent in ["", "GET /metrics HTTP/1.1\r\nHost: 127.0.0.1\r\n"] {
            let mut conn = TcpStream::connect(addr).await.expect("connect");
            conn.write_all(sent.as_bytes()).await.expect("write");
            let t = std::time::Instant::now();
            let got = tokio::time::timeout(Duration::from_secs(10), read_to_close(&mut conn))
                .await
                .expect("closed by the server");
            let waited = t.elapsed();
            assert!(waited >= timeout - Duration::from_millis(50), "closed after {waited:?}, before the timeout");
            assert!(waited < timeout * 10, "closed only after {waited:?}");
            let got = got.unwrap_or_default();
            assert!(!got.starts_with(b"HTTP/1.1 200"), "{sent:?} was answered: {}", String::from_utf8_lossy(&got));
        }
        // An idle keep-alive connection too, after its answer.
        let mut conn = connect(addr).await;
        assert_eq!(get_on(&mut conn, "/healthz").await.expect("answer").0, 200);
        let got = tokio::time::timeout(Duration::from_secs(10), read_to_close(conn.get_mut())).await;
        assert!(got.is_ok(), "an idle keep-alive connection is closed");
        stop.cancel();
    }

    /// Connections beyond the cap are closed at once, unanswered; once one closes, a new one is served.
    #[tokio::test]
    async fn connections_beyond_the_cap_are_refused() {
        let limits = Limits { header_read_timeout: Duration::from_secs(30), max_connections: 2, ..Limits::default() };
        let (addr, stop) = start(endpoints(fixed("")), limits).await;
        // Two connections served and kept alive: the cap.
        let mut first = connect(addr).await;
        let mut second = connect(addr).await;
        assert_eq!(get_on(&mut first, "/healthz").await.expect("first").0, 200);
        assert_eq!(get_on(&mut second, "/healthz").await.expect("second").0, 200);

        let mut third = TcpStream::connect(addr).await.expect("the kernel accepts the connection");
        let _ = third.write_all(b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n").await;
        let got = tokio::time::timeout(Duration::from_secs(5), read_to_close(&mut third))
            .await
            .expect("closed at once, well before the header timeout");
        assert!(got.unwrap_or_default().is_empty(), "a connection beyond the cap gets no answer");

        // One of the two goes: its place is free again (the server sees it close, then frees it).
        drop(first);
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            let mut conn = connect(addr).await;
            match get_on(&mut conn, "/healthz").await {
                Ok((status, _)) => {
                    assert_eq!(status, 200);
                    break;
                }
                Err(e) => assert!(Instant::now() < deadline, "no place freed after a connection closed: {e}"),
            }
            tokio::task::yield_now().await;
        }
        assert_eq!(get_on(&mut second, "/healthz").await.expect("the second is still served").0, 200);
        stop.cancel();
    }

    /// Scrapes beyond the cap in flight wait for a place, and the probes never do: with the one place
    /// taken by a slow rendering, a log-level request sent first is still waiting when a probe sent
    /// after it has been answered.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn the_cap_in_flight_holds_scrapes_and_never_the_probes() {
        let (release_tx, release_rx) = std::sync::mpsc::channel::<()>();
        let release_rx = Mutex::new(release_rx);
        let (rendering_tx, mut rendering_rx) = tokio::sync::mpsc::unbounded_channel();
        let render: RenderMetrics = Arc::new(move || {
            let _ = rendering_tx.send(());
            let _ = release_rx.lock().expect("lock").recv();
            "slow 1\n".to_string()
        });
        let limits = Limits { max_in_flight: 1, ..Limits::default() };
        let (addr, stop) = start(endpoints(Arc::new(MetricsCache::new(render, METRICS_MAX_AGE))), limits).await;

        let scrape = tokio::spawn(async move { get_on(&mut connect(addr).await, "/metrics").await });
        rendering_rx.recv().await.expect("the scrape holds the one place");
        let waiting = tokio::spawn(async move { get_on(&mut connect(addr).await, "/debug/loglevel").await });
        for probe in ["/healthz", "/readyz"] {
            let answer =
                tokio::time::timeout(Duration::from_secs(5), async { get_on(&mut connect(addr).await, probe).await })
                    .await
                    .unwrap_or_else(|_| panic!("{probe} waited behind the scrape's place"));
            let (status, _) = answer.expect("answered while the place is taken");
            assert!(status == 200 || status == 503, "{probe}: {status}");
        }
        assert!(!waiting.is_finished(), "the log-level request got a place the scrape holds");
        release_tx.send(()).expect("release");
        assert_eq!(scrape.await.expect("scrape").expect("answer"), (200, "slow 1\n".into()));
        assert_eq!(waiting.await.expect("joined").expect("answer").0, 404, "answered once the place is free");
        stop.cancel();
    }

    /// A body that never finishes coming does not hold its place for ever.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_request_whose_body_never_comes_is_answered_408() {
        let limits = Limits { request_timeout: Duration::from_millis(300), ..Limits::default() };
        let (addr, stop) = start(endpoints(fixed("x 1\n")), limits).await;
        let mut conn = connect(addr).await;
        conn.get_mut()
            .write_all(b"PUT /debug/loglevel HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\ninfo")
            .await
            .expect("send");
        let mut status_line = String::new();
        tokio::time::timeout(Duration::from_secs(10), conn.read_line(&mut status_line))
            .await
            .expect("answered, not held")
            .expect("read");
        assert!(status_line.starts_with("HTTP/1.1 408"), "{status_line}");
        stop.cancel();
    }
}
