//! The daemon's HTTP endpoint (loopback by default): `/metrics` in the Prometheus text format,
//! `/healthz` (the reconcile loop turns) and `/readyz` (a pass succeeded and every advertised resource
//! is registered with the kubelet). Probes answer 503 with the reason.

use std::sync::Arc;

use axum::Router;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::IntoResponse;
use axum::routing::get;
use tokio::sync::Notify;

use crate::daemon::Shared;

async fn metrics(State(shared): State<Arc<Shared>>) -> impl IntoResponse {
    let text = {
        let shared = shared.clone();
        tokio::task::spawn_blocking(move || shared.metrics.render(Some(&shared.store), Some(&shared.ec2.resilience)))
            .await
            .unwrap_or_default()
    };
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4; charset=utf-8")], text)
}

fn probe(result: Result<(), String>) -> (StatusCode, String) {
    match result {
        Ok(()) => (StatusCode::OK, "ok\n".into()),
        Err(why) => (StatusCode::SERVICE_UNAVAILABLE, format!("{why}\n")),
    }
}

async fn healthz(State(shared): State<Arc<Shared>>) -> impl IntoResponse {
    probe(shared.probes.live())
}

async fn readyz(State(shared): State<Arc<Shared>>) -> impl IntoResponse {
    probe(shared.probes.ready())
}

/// Serves until `stop` is notified.
pub async fn serve(listener: tokio::net::TcpListener, shared: Arc<Shared>, stop: Arc<Notify>) {
    let app = Router::new()
        .route("/metrics", get(metrics))
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .with_state(shared);
    if let Err(e) = axum::serve(listener, app).with_graceful_shutdown(async move { stop.notified().await }).await {
        tracing::error!(error = %e, "the metrics endpoint failed");
    }
}
