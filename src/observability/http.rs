//! The admin HTTP listener (`[http] listen`, loopback by default):
//! `GET /healthz` (the process answers), `GET /readyz` (can we take and
//! deliver mail right now: spool writable, disk above `spool.min_free_space`,
//! not draining, no configuration fault from the backend; 503 with a JSON
//! reason otherwise) and `GET /metrics` (Prometheus text format).

use std::sync::Arc;

use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::IntoResponse;
use axum::routing::get;
use axum::{Json, Router};
use metrics_exporter_prometheus::PrometheusHandle;
use serde_json::json;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use super::health::Health;
use crate::spool::Spool;

#[derive(Clone)]
pub struct AdminState {
    pub spool: Arc<Spool>,
    pub health: Arc<Health>,
    pub metrics: Option<PrometheusHandle>,
}

pub fn router(state: AdminState) -> Router {
    Router::new()
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
        .with_state(state)
}

/// Serves until `shutdown`.
pub async fn serve(listener: TcpListener, state: AdminState, shutdown: CancellationToken) {
    let app = router(state);
    if let Err(e) = axum::serve(listener, app)
        .with_graceful_shutdown(async move { shutdown.cancelled().await })
        .await
    {
        tracing::error!(error = %e, "admin listener failed");
    }
}

async fn healthz() -> impl IntoResponse {
    Json(json!({"status": "ok"}))
}

async fn readyz(State(st): State<AdminState>) -> impl IntoResponse {
    let spool = st.spool.clone();
    let disk = tokio::task::spawn_blocking(move || spool.check_writable())
        .await
        .unwrap_or_else(|e| Err(e.to_string()));
    let reason = if st.health.is_draining() {
        Some(("draining", "the daemon is shutting down".to_string()))
    } else if let Err(e) = disk {
        Some(("spool", e))
    } else {
        st.health.fault().map(|f| ("backend", f))
    };
    // A rejected per-user or passthrough credential holds only its own
    // mail: the relay stays ready and names the credential, never the secret.
    let held: Vec<_> = st
        .health
        .credential_faults()
        .into_iter()
        .map(|(credential, reason)| json!({"credential": credential, "reason": reason}))
        .collect();
    match reason {
        None if held.is_empty() => (StatusCode::OK, Json(json!({"status": "ready"}))),
        None => (
            StatusCode::OK,
            Json(json!({"status": "ready", "held_credentials": held})),
        ),
        Some((check, reason)) => (
            StatusCode::SERVICE_UNAVAILABLE,
            Json(
                json!({"status": "unavailable", "check": check, "reason": reason, "held_credentials": held}),
            ),
        ),
    }
}

async fn metrics(State(st): State<AdminState>) -> impl IntoResponse {
    match &st.metrics {
        Some(handle) => (
            StatusCode::OK,
            [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
            super::metrics::render(handle, &st.spool),
        ),
        None => (
            StatusCode::SERVICE_UNAVAILABLE,
            [(header::CONTENT_TYPE, "text/plain")],
            "metrics recorder not installed\n".to_string(),
        ),
    }
}
