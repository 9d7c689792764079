//! Acting on a [`Decision`]: the one place a decision becomes spool state,
//! health, metrics and a mail-log line; [`blocking`], the one helper that
//! runs a blocking spool call off the async workers; and the in-flight
//! marker every API call carries until its outcome is recorded.
//!
//! Invariant: the claim is handed back to the spool on every path (recorded,
//! or released when recording fails), so no entry stays in flight.

use std::time::Duration;

use tokio::time::Instant;

use super::Engine;
use super::decide::Decision;
use crate::observability::maillog;
use crate::spool::Claim;
use crate::spool::{Failure, InFlight, Meta, SpoolError};

/// Runs `work` on the blocking pool. `Err` carries the panic's text; the
/// panic is logged here with `what`. Values moved into `work` (a claim) are
/// dropped by the panic, which releases a claim.
pub async fn blocking<T: Send + 'static>(
    what: &'static str,
    work: impl FnOnce() -> T + Send + 'static,
) -> Result<T, String> {
    tokio::task::spawn_blocking(work).await.map_err(|e| {
        tracing::error!(error = %e, "{what} panicked");
        e.to_string()
    })
}

/// [`blocking`] for a spool call: a spool error or a panic, as text.
async fn spool_call(
    what: &'static str,
    work: impl FnOnce() -> Result<(), SpoolError> + Send + 'static,
) -> Result<(), String> {
    blocking(what, work).await?.map_err(|e| e.to_string())
}

impl Engine {
    /// Marks `ids` in flight for one API call; keep the guard until their
    /// outcome is recorded. A restart that finds the marker logs them as
    /// "may duplicate". The marker is one small unsynced file, written
    /// inline: it costs less than a hand-off to the blocking pool. When it
    /// cannot be written the call goes ahead (the marker drives a log line,
    /// not delivery).
    pub(super) fn mark_in_flight(&self, ids: &[&str]) -> Option<InFlight> {
        match self.spool.in_flight(ids) {
            Ok(marker) => Some(marker),
            Err(e) => {
                tracing::warn!(error = %e, "cannot write an in-flight marker; sending anyway");
                None
            }
        }
    }

    pub(super) async fn apply(&self, claim: Claim, mut meta: Meta, decision: Decision) {
        let backend = self.sender.name();
        let id = claim.id().to_string();
        let now = Instant::now();
        let spool = self.spool.clone();
        let result = match decision {
            Decision::Complete => {
                self.apply_completed(vec![(claim, meta)]).await;
                Ok(())
            }
            Decision::Reschedule { at, reason } => {
                meta.last_error = Some(reason);
                meta.held = false;
                maillog::retry(&meta, backend, at.saturating_duration_since(now));
                self.reschedule(claim, meta, at).await
            }
            Decision::Hold { at, code, reason } => {
                meta.last_error = Some(reason);
                meta.held = true;
                maillog::held(
                    &meta,
                    backend,
                    code.as_deref(),
                    round(at.saturating_duration_since(now)),
                );
                self.reschedule(claim, meta, at).await
            }
            Decision::DeadLetter { code, reason } => {
                meta.failure = Some(Failure {
                    code,
                    reason,
                    failed_at: std::time::SystemTime::now(),
                });
                self.ages.forget(&id);
                let m = meta.clone();
                let moved = spool_call("spool mover", move || spool.dead_letter(claim, &m)).await;
                moved
                    .map(|()| {
                        metrics::counter!("postrelay_dead_letters_total").increment(1);
                        maillog::failed(&meta, backend);
                    })
                    .map_err(|e| format!("cannot move message to failed/; it stays queued: {e}"))
            }
            Decision::Release { at } => {
                spool.release(claim, at);
                Ok(())
            }
        };
        if let Err(e) = result {
            tracing::error!(id, error = %e, "cannot record the delivery result");
        }
    }

    /// Records delivered messages: out of the spool with one blocking
    /// call, their tombstones (or file removals) sharing each write and
    /// sync, then one mail-log line each.
    pub(super) async fn apply_completed(&self, done: Vec<(Claim, Meta)>) {
        if done.is_empty() {
            return;
        }
        let backend = self.sender.name();
        let mut claims = Vec::with_capacity(done.len());
        let mut metas = Vec::with_capacity(done.len());
        for (claim, meta) in done {
            if self.credentials.resolve(&meta.credential).is_none() {
                self.health.clear_fault();
            }
            self.ages.forget(claim.id());
            claims.push(claim);
            metas.push(meta);
        }
        let spool = self.spool.clone();
        let removed = blocking("spool remover", move || spool.complete_all(claims)).await;
        for (i, meta) in metas.iter().enumerate() {
            let failed = match &removed {
                Ok(answers) => answers[i].as_ref().err().map(ToString::to_string),
                Err(panic) => Some(panic.clone()),
            };
            match failed {
                None => maillog::done(meta, backend),
                Some(e) => {
                    let id = meta.id.as_str();
                    let e = format!(
                        "delivered, but cannot remove from spool: it may be sent again: {e}"
                    );
                    tracing::error!(id, error = %e, "cannot record the delivery result");
                }
            }
        }
    }

    async fn reschedule(&self, claim: Claim, meta: Meta, at: Instant) -> Result<(), String> {
        let spool = self.spool.clone();
        spool_call("spool writer", move || spool.reschedule(claim, &meta, at)).await
    }
}

/// A retry delay as logged: whole seconds.
fn round(d: Duration) -> Duration {
    Duration::from_secs(d.as_secs())
}
