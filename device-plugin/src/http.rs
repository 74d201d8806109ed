//! The daemon's HTTP endpoint (loopback by default): `/metrics` in the Prometheus text format,
//! `/healthz` (the pool loop turns), `/readyz` (a pass succeeded and every advertised resource is
//! registered with the kubelet; 503 with the reasons), and `/debug/loglevel` (GET the log filter,
//! PUT a new one: the level changes at run time, without a restart). It takes what it shows — the
//! probes, a metrics renderer, the log filter — not the daemon.

use std::sync::Arc;

use axum::Router;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::IntoResponse;
use axum::routing::get;
use tokio_util::sync::CancellationToken;

use crate::probes::Probes;

/// Renders the metrics exposition text (blocking: it may read the node state).
pub type RenderMetrics = Arc<dyn Fn() -> String + Send + Sync>;

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
    pub metrics: RenderMetrics,
    pub log_level: Option<Arc<dyn LogLevel>>,
}

impl std::fmt::Debug for Endpoints {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Endpoints").field("probes", &self.probes).finish_non_exhaustive()
    }
}

async fn metrics(State(e): State<Endpoints>) -> impl IntoResponse {
    let render = e.metrics.clone();
    let text = tokio::task::spawn_blocking(move || render()).await.unwrap_or_default();
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4; charset=utf-8")], text)
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
    Router::new()
        .route("/metrics", get(metrics))
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .route("/debug/loglevel", get(get_log_level).put(set_log_level))
        .with_state(endpoints)
}

/// Serves until `stop` is cancelled.
pub async fn serve(listener: tokio::net::TcpListener, endpoints: Endpoints, stop: CancellationToken) {
    if let Err(e) =
        axum::serve(listener, router(endpoints)).with_graceful_shutdown(async move { stop.cancelled().await }).await
    {
        tracing::error!(error = %e, "the metrics endpoint failed");
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Mutex;
    use std::time::Duration;

    use axum::body::Body;
    use axum::http::Request;
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
            metrics: Arc::new(|| "nodeeni_up 1\n".to_string()),
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
}
