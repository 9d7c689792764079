//! Prometheus metrics: the recorder behind the `metrics` macros used across
//! the crate, and the gauges that are read from the spool at scrape time
//! (depth, age of the oldest message, dead letters).
//!
//! Series: `postrelay_smtp_sessions_total`, `postrelay_smtp_sessions_active`,
//! `postrelay_smtp_sessions_rejected_total`, `postrelay_smtp_messages_total{result}`,
//! `postrelay_queue_depth`, `postrelay_queue_oldest_age_seconds`,
//! `postrelay_dead_letters` (in failed/ now), `postrelay_dead_letters_total`,
//! `postrelay_delivery_attempts_total{backend,outcome}`,
//! `postrelay_api_latency_seconds{backend}` (histogram),
//! `postrelay_rate_limit_waits_total`.

use std::time::SystemTime;

use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};

use crate::spool::Spool;

const LATENCY_BUCKETS: &[f64] = &[0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0];

/// Installs the global recorder. Call once, before traffic.
pub fn install() -> Result<PrometheusHandle, String> {
    PrometheusBuilder::new()
        .set_buckets_for_metric(
            Matcher::Full("postrelay_api_latency_seconds".into()),
            LATENCY_BUCKETS,
        )
        .map_err(|e| e.to_string())?
        .install_recorder()
        .map_err(|e| e.to_string())
}

/// Refreshes the spool gauges, then renders the text exposition format.
pub fn render(handle: &PrometheusHandle, spool: &Spool) -> String {
    let (depth, oldest) = spool.depth();
    metrics::gauge!("postrelay_queue_depth").set(depth as f64);
    let age = oldest
        .and_then(|t| SystemTime::now().duration_since(t).ok())
        .map(|d| d.as_secs_f64())
        .unwrap_or(0.0);
    metrics::gauge!("postrelay_queue_oldest_age_seconds").set(age);
    metrics::gauge!("postrelay_dead_letters").set(spool.failed_count() as f64);
    handle.run_upkeep();
    handle.render()
}
