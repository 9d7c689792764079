//! Getting claimed messages ready to send, off the async workers: loading
//! each from the spool and mapping what is pending of it to API calls. A
//! batch is loaded, and then mapped, a chunk at a time in one hand-off to
//! the blocking pool each, not two hand-offs per message; a chunk stops at
//! [`CHUNK_BYTES`] of messages, so memory stays bounded whatever their size.
//!
//! Invariant: a claim whose entry cannot be loaded is released, due again
//! after a hold, and logged; never dropped silently.

use std::collections::VecDeque;
use std::sync::Arc;

use tokio::time::Instant;

use super::Engine;
use super::apply::blocking;
use super::decide::Attempt;
use crate::mapping::warm::Warm;
use crate::mapping::{ApiCall, Mapper};
use crate::message::Envelope;
use crate::spool::{Claim, Meta, SpoolError};

/// Message bytes one hand-off loads, at most (plus the message that crosses it).
const CHUNK_BYTES: usize = 4 << 20;

/// What mapping a message gave: its calls, `None` when nothing is pending
/// (a crash after the last part), or the attempt's end.
pub(super) type Mapped = Result<Option<Vec<ApiCall>>, Attempt>;

/// What one message's mapping needs besides its bytes.
struct Input {
    id: String,
    envelope: Envelope,
    stream: Option<String>,
}

fn map_one(mapper: &Mapper, warm: &Warm, input: Option<Input>, raw: &[u8]) -> Mapped {
    let Some(input) = input else { return Ok(None) };
    let stream = input.stream.as_deref();
    // Kept by `DATA`, which logged its warnings already.
    if let Some(m) = warm.take(&input.id, &input.envelope, stream) {
        return Ok(Some(m.calls));
    }
    match mapper.map_for(&input.id, &input.envelope, raw, stream) {
        Ok(m) => {
            note_untraced(&input.id, &m.warnings);
            Ok(Some(m.calls))
        }
        Err(e) => Err(Attempt::Unmappable {
            reason: e.to_string(),
        }),
    }
}

fn note_untraced(id: &str, warnings: &[String]) {
    let skipped = crate::mapping::postmark::TRACE_SKIPPED;
    for warning in warnings.iter().filter(|w| w.starts_with(skipped)) {
        tracing::warn!(id, "{warning}");
    }
}

impl Engine {
    /// Loads a claimed entry; `None` when it cannot be (it is released).
    pub(super) async fn load(&self, claim: Claim) -> Option<(Claim, Meta, Vec<u8>)> {
        let mut one = VecDeque::from([claim]);
        self.load_chunk(&mut one).await.pop()
    }

    /// Loads claims from the front of `claims` until [`CHUNK_BYTES`] are
    /// loaded or none is left, in one hand-off. Claims that cannot be
    /// loaded are released.
    pub(super) async fn load_chunk(
        &self,
        claims: &mut VecDeque<Claim>,
    ) -> Vec<(Claim, Meta, Vec<u8>)> {
        let spool = self.spool.clone();
        let mut todo = std::mem::take(claims);
        let loaded = blocking("spool loader", move || {
            let (mut loaded, mut failed, mut bytes) = (Vec::new(), Vec::new(), 0);
            while bytes < CHUNK_BYTES
                && let Some(claim) = todo.pop_front()
            {
                match spool.load(&claim) {
                    Ok((meta, raw)) => {
                        bytes += raw.len();
                        loaded.push((claim, meta, raw));
                    }
                    Err(e) => failed.push((claim, e)),
                }
            }
            (loaded, failed, todo)
        })
        .await;
        // A panic dropped the claims, which released them.
        let Ok((loaded, failed, rest)) = loaded else {
            return Vec::new();
        };
        *claims = rest;
        for (claim, e) in failed {
            self.release_unloadable(claim, &e);
        }
        loaded
    }

    fn release_unloadable(&self, claim: Claim, e: &SpoolError) {
        tracing::error!(id = claim.id(), error = %e, "cannot load spooled message; will look again later");
        let later = Instant::now() + self.policy.hold_for(rand::random());
        self.spool.release(claim, later);
    }

    /// What mapping `meta` needs: `None` when nothing is pending.
    fn input(&self, meta: &Meta) -> Option<Input> {
        let pending = meta.pending_recipients();
        (!pending.is_empty()).then(|| Input {
            id: meta.id.clone(),
            envelope: Envelope {
                mail_from: meta.envelope.mail_from.clone(),
                rcpt_to: pending,
            },
            stream: self
                .credentials
                .stream(&meta.credential)
                .map(str::to_string),
        })
    }

    /// The calls that deliver what is pending of `meta`, mapped from `raw`.
    pub(super) async fn map_pending(&self, meta: &Meta, raw: Vec<u8>) -> Mapped {
        let mut all = self.map_all(vec![(meta, raw)]).await;
        all.pop().expect("one mapping per message")
    }

    /// [`map_pending`](Engine::map_pending) for several messages, in one hand-off.
    pub(super) async fn map_all(&self, messages: Vec<(&Meta, Vec<u8>)>) -> Vec<Mapped> {
        let n = messages.len();
        let work: Vec<(Option<Input>, Vec<u8>)> = messages
            .into_iter()
            .map(|(meta, raw)| (self.input(meta), raw))
            .collect();
        let mapper: Arc<Mapper> = self.mapper.clone();
        let warm = self.warm.clone();
        let mapped = blocking("mapping", move || {
            work.into_iter()
                .map(|(input, raw)| map_one(&mapper, &warm, input, &raw))
                .collect::<Vec<_>>()
        })
        .await;
        mapped.unwrap_or_else(|panic| {
            let reason = format!("the mapping panicked: {panic}");
            (0..n)
                .map(|_| {
                    Err(Attempt::Unmappable {
                        reason: reason.clone(),
                    })
                })
                .collect()
        })
    }
}
