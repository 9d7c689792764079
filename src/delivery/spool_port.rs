//! A thin adapter that gives today's spool the engine-facing shape of the
//! spool API (claims, `tokio::time::Instant` due times, per-recipient helpers
//! on `Meta`), so the engine is written against that API alone. Delete this
//! file when the spool offers the API itself: `Port` becomes `Arc<Spool>`,
//! `Claim` becomes `spool::Claim`, and `MetaExt` becomes `Meta`'s own methods.
//!
//! Invariant: a `Claim` never leaks; dropped without being handed back it
//! releases its entry, due at once, with a warning.

use std::sync::Arc;
use std::time::SystemTime;

use tokio::time::Instant;

use crate::message::address;
use crate::spool::{Failure, Meta, Spool, SpoolError};

/// The spool with wall times converted through one (Instant, SystemTime)
/// anchor taken at start, so due times follow the tokio clock.
#[derive(Clone)]
pub struct Port(Arc<Inner>);

struct Inner {
    spool: Arc<Spool>,
    anchor: (Instant, SystemTime),
}

impl Port {
    pub fn new(spool: Arc<Spool>) -> Port {
        Port(Arc::new(Inner {
            spool,
            anchor: (Instant::now(), SystemTime::now()),
        }))
    }

    pub fn claim_due(&self, now: Instant, max: usize) -> Vec<Claim> {
        // Today's spool stamps new mail with the wall clock itself: after a
        // forward wall jump that is later than the anchored time.
        let now_wall = self.0.wall(now).max(SystemTime::now());
        let ids = self.0.spool.claim_due(now_wall, max);
        ids.into_iter()
            .map(|id| Claim {
                id,
                port: Some(self.0.clone()),
            })
            .collect()
    }

    pub fn next_due(&self) -> Option<Instant> {
        self.0.spool.next_due().map(|t| self.0.instant(t))
    }

    pub async fn changed(&self) {
        self.0.spool.changed().await
    }

    pub fn load(&self, claim: &Claim) -> Result<(Meta, Vec<u8>), SpoolError> {
        self.0.spool.load(&claim.id)
    }

    pub fn save_progress(&self, _claim: &Claim, meta: &Meta) -> Result<(), SpoolError> {
        self.0.spool.save(meta)
    }

    pub fn reschedule(&self, claim: Claim, meta: &Meta, due: Instant) -> Result<(), SpoolError> {
        let mut meta = meta.clone();
        meta.next_attempt_at = self.0.wall(due);
        claim.defuse();
        self.0.spool.reschedule(&meta)
    }

    pub fn complete(&self, claim: Claim) -> Result<(), SpoolError> {
        let id = claim.defuse();
        self.0.spool.complete(&id)
    }

    /// On failure the claim is dropped, which gives the entry back.
    pub fn dead_letter(&self, claim: Claim, meta: &Meta) -> Result<(), SpoolError> {
        self.0.spool.dead_letter(meta)?;
        claim.defuse();
        Ok(())
    }

    pub fn release(&self, claim: Claim, due: Instant) {
        let id = claim.defuse();
        self.0.spool.release(&id, self.0.wall(due));
    }
}

impl Inner {
    fn wall(&self, t: Instant) -> SystemTime {
        let (i0, w0) = self.anchor;
        match t.checked_duration_since(i0) {
            Some(ahead) => w0 + ahead,
            None => w0 - (i0 - t),
        }
    }

    fn instant(&self, t: SystemTime) -> Instant {
        let (i0, w0) = self.anchor;
        match t.duration_since(w0) {
            Ok(ahead) => i0 + ahead,
            Err(behind) => i0.checked_sub(behind.duration()).unwrap_or(i0),
        }
    }
}

/// One entry taken for delivery.
pub struct Claim {
    id: String,
    port: Option<Arc<Inner>>,
}

impl Claim {
    pub fn id(&self) -> &str {
        &self.id
    }

    fn defuse(mut self) -> String {
        self.port = None;
        std::mem::take(&mut self.id)
    }
}

impl Drop for Claim {
    fn drop(&mut self) {
        if let Some(port) = self.port.take() {
            tracing::warn!(id = %self.id, "delivery ended without recording a result; the message is due again");
            port.spool.release(&self.id, SystemTime::now());
        }
    }
}

/// The per-recipient view of `Meta` the engine uses.
pub trait MetaExt {
    fn record_accepted(&mut self, rcpts: &[String], api_id: Option<&str>);
    fn record_refused(&mut self, rcpts: &[String], code: Option<&str>, reason: &str);
    fn accepted_count(&self) -> usize;
    fn refused_count(&self) -> usize;
    fn first_refusal(&self) -> Option<(Option<&str>, &str)>;
}

impl MetaExt for Meta {
    fn record_accepted(&mut self, rcpts: &[String], _api_id: Option<&str>) {
        for r in rcpts {
            if !self.delivered.iter().any(|d| address::same(d, r)) {
                self.delivered.push(r.clone());
            }
        }
    }

    fn record_refused(&mut self, rcpts: &[String], code: Option<&str>, reason: &str) {
        for r in rcpts {
            if !self.refused.iter().any(|d| address::same(d, r)) {
                self.refused.push(r.clone());
            }
        }
        self.refusal.get_or_insert(Failure {
            code: code.map(str::to_string),
            reason: reason.to_string(),
            failed_at: SystemTime::now(),
        });
    }

    fn accepted_count(&self) -> usize {
        self.delivered.len()
    }

    fn refused_count(&self) -> usize {
        self.refused.len()
    }

    fn first_refusal(&self) -> Option<(Option<&str>, &str)> {
        self.refusal
            .as_ref()
            .map(|f| (f.code.as_deref(), f.reason.as_str()))
    }
}
