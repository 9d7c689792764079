//! The admin HTTP listener (`[http] listen`, loopback by default):
//! `GET /healthz` (the process answers), `GET /readyz` (can we take and
//! deliver mail right now: spool writable, disk above `spool.min_free_space`,
//! not draining, no configuration fault from the backend; 503 with a JSON
//! reason otherwise) and `GET /metrics` (Prometheus text format).

use std::sync::{Arc, Mutex};
use std::time::Duration;

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
use super::http_limits::Capped;
use crate::spool::Spool;

#[derive(Clone)]
pub struct AdminState {
    pub spool: Arc<Spool>,
    pub health: Arc<Health>,
    pub metrics: Option<PrometheusHandle>,
    /// The spool's last writability check, refreshed in the background:
    /// a request never writes to the disk.
    pub disk: Arc<Mutex<Result<(), String>>>,
}

/// How often the spool's writability is checked for `/readyz`.
pub const DISK_CHECK_PERIOD: Duration = Duration::from_secs(5);

/// The admin listener's limits (`[http]`).
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    pub max_connections: usize,
    pub header_read_timeout: Duration,
}

pub fn router(state: AdminState) -> Router {
    Router::new()
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
        .with_state(state)
}

/// Checks the spool now, then every [`DISK_CHECK_PERIOD`] until `shutdown`.
async fn refresh_disk(state: AdminState, shutdown: CancellationToken) {
    loop {
        let spool = state.spool.clone();
        let checked = tokio::task::spawn_blocking(move || spool.check_writable())
            .await
            .unwrap_or_else(|e| Err(e.to_string()));
        *state.disk.lock().unwrap_or_else(|p| p.into_inner()) = checked;
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tokio::time::sleep(DISK_CHECK_PERIOD) => {}
        }
    }
}

/// Serves until `shutdown`, within `limits`.
pub async fn serve(
    listener: TcpListener,
    state: AdminState,
    limits: Limits,
    shutdown: CancellationToken,
) {
    let spool = state.spool.clone();
    *state.disk.lock().unwrap_or_else(|p| p.into_inner()) =
        tokio::task::spawn_blocking(move || spool.check_writable())
            .await
            .unwrap_or_else(|e| Err(e.to_string()));
    tokio::spawn(refresh_disk(state.clone(), shutdown.clone()));
    let app = router(state);
    let listener = Capped::new(listener, limits.max_connections, limits.header_read_timeout);
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
    let disk = st.disk.lock().unwrap_or_else(|p| p.into_inner()).clone();
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
