//! The mail log: one line per message state change, keyed by the spool id,
//! with stable field names (id, from, rcpts, size, backend, outcome,
//! api_message_id, attempt, error). Never a secret, never a body.

use std::time::Duration;

use crate::spool::Meta;

/// `peer` is formatted only when the line is written.
pub fn received(id: &str, from: &str, rcpts: usize, size: u64, peer: impl std::fmt::Display) {
    metrics::counter!("postrelay_smtp_messages_total", "result" => "queued").increment(1);
    tracing::info!(id = %id, from = %from, rcpts, size, peer = %peer, outcome = "received", "message received");
}

pub fn delivered(
    meta: &Meta,
    backend: &str,
    api_id: Option<&str>,
    note: Option<&str>,
    part: usize,
    parts: usize,
    rcpts: usize,
) {
    tracing::info!(
        id = %meta.id,
        backend,
        outcome = "accepted",
        api_message_id = api_id.unwrap_or(""),
        attempt = meta.attempts,
        part = part + 1,
        parts,
        rcpts,
        note = note.unwrap_or(""),
        "API accepted the message"
    );
}

pub fn done(meta: &Meta, backend: &str) {
    tracing::info!(id = %meta.id, backend, outcome = "delivered", attempt = meta.attempts, rcpts = meta.envelope.rcpt_to.len(), "message delivered");
}

pub fn retry(meta: &Meta, backend: &str, delay: Duration) {
    tracing::warn!(
        id = %meta.id,
        backend,
        outcome = "retry",
        attempt = meta.attempts,
        retry_in = %humantime::format_duration(Duration::from_secs(delay.as_secs())),
        error = meta.last_error.as_deref().unwrap_or(""),
        "delivery failed, will retry"
    );
}

pub fn held(meta: &Meta, backend: &str, code: Option<&str>, delay: Duration) {
    tracing::error!(
        id = %meta.id,
        backend,
        outcome = "held",
        attempt = meta.attempts,
        code = code.unwrap_or(""),
        retry_in = %humantime::format_duration(delay),
        error = meta.last_error.as_deref().unwrap_or(""),
        "configuration fault: message held until the operator fixes it (a restart retries at once)"
    );
}

pub fn failed(meta: &Meta, backend: &str) {
    let (code, reason) = meta
        .failure
        .as_ref()
        .map(|f| (f.code.as_deref().unwrap_or(""), f.reason.as_str()))
        .unwrap_or(("", ""));
    tracing::error!(id = %meta.id, backend, outcome = "failed", attempt = meta.attempts, code, error = reason, "message dead-lettered");
}
