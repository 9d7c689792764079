//! The delivery engine: claims due messages from the spool, maps them
//! (`mapping`), paces the API calls, sends them (`backends`), then decides
//! purely what becomes of each message (`decide`) and applies that decision
//! to the spool in one place (`apply`). It is the only place outcomes turn
//! into spool state. With a batching backend a worker takes several due
//! messages at once and sends them in batch calls (`batch`); one due message
//! goes alone.
//!
//! Time: scheduling runs on the tokio clock (`tokio::time::Instant`), so
//! every wait is testable with paused time; the wall clock is read only for a
//! message's age against `max_age` (see [`age`]).
//!
//! Invariants: a claimed entry is always handed back (recorded, released, or
//! released by the claim's drop after a panic, which is logged); a part of a
//! split message is sent only after the progress of the previous parts is on
//! disk; a long `Retry-After` pauses claiming through the backend's
//! [`gate`], a rejected credential (the global one too) holds only the mail
//! that uses it through that credential's gate.

pub mod age;
mod apply;
mod attempt;
pub mod backoff;
mod batch;
pub mod credentials;
pub mod decide;
pub mod gate;
pub mod pack;
mod prepare;
pub mod ratelimit;

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{Notify, Semaphore};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::backends::Sender;
use crate::mapping::Mapper;
use crate::mapping::warm::Warm;
use crate::observability::health::Health;
use crate::spool::{Claim, Spool};
use age::Ages;
use backoff::Backoff;
use decide::Policy;
use gate::{Admit, Gate};
use ratelimit::Pacer;

/// Longest the scheduler sleeps without looking at the spool again.
const IDLE_POLL: Duration = Duration::from_secs(30);

/// How long due messages are collected before a batch is claimed, so that
/// mail arriving message by message still leaves in few calls (the
/// contract allows at most 50 ms). No linger once a backlog fills batches.
pub const LINGER: Duration = Duration::from_millis(25);

/// The `[delivery]` settings the engine runs with.
#[derive(Debug, Clone, Copy)]
pub struct Settings {
    /// Messages sent to the API per second (a batch call counts each of
    /// its messages); 0 means unlimited.
    pub rate_limit: u32,
    pub backoff: Backoff,
    pub max_age: Duration,
    pub concurrency: usize,
}

pub struct Engine {
    spool: Arc<Spool>,
    mapper: Arc<Mapper>,
    /// Mappings made at `DATA`, taken by first attempts.
    warm: Arc<Warm>,
    sender: Arc<dyn Sender>,
    pacer: Pacer,
    policy: Policy,
    concurrency: usize,
    health: Arc<Health>,
    gate: Gate,
    ages: Ages,
    /// Per-message credentials (users' own tokens, passthrough).
    credentials: credentials::CredentialBook,
    /// One gate per credential (by label; the global one too): a rejected
    /// one holds only its own mail, and is probed once per period instead
    /// of once per held message.
    credential_gates: std::sync::Mutex<std::collections::HashMap<String, Arc<Gate>>>,
}

impl Engine {
    pub fn new(
        spool: Arc<Spool>,
        mapper: Arc<Mapper>,
        sender: Arc<dyn Sender>,
        settings: Settings,
        health: Arc<Health>,
    ) -> Engine {
        Engine {
            spool,
            mapper,
            warm: Arc::new(Warm::new(0)),
            sender,
            pacer: Pacer::new(settings.rate_limit),
            policy: Policy {
                backoff: settings.backoff,
                max_age: settings.max_age,
            },
            concurrency: settings.concurrency.max(1),
            health,
            gate: Gate::backend(),
            ages: Ages::default(),
            credentials: credentials::CredentialBook::default(),
            credential_gates: Default::default(),
        }
    }

    /// The gate of the credential that sends a message: its own, or the
    /// global one's (shared by every message that sends with it).
    fn credential_gate(&self, credential: &crate::spool::Credential) -> Arc<Gate> {
        let label = self.sending_label(credential);
        let mut gates = self
            .credential_gates
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        gates
            .entry(label)
            .or_insert_with(|| Arc::new(Gate::credential()))
            .clone()
    }

    /// How the credential that actually sends a message is named: a user
    /// without a token of their own sends with the global one.
    fn sending_label(&self, credential: &crate::spool::Credential) -> String {
        match self.credentials.resolve(credential) {
            Some(_) => credential.label(),
            None => crate::spool::Credential::Global.label(),
        }
    }

    /// Sends each message with the credential its record names, looked up in `book`.
    pub fn with_credentials(mut self, book: credentials::CredentialBook) -> Engine {
        self.credentials = book;
        self
    }

    /// First attempts take the mappings the SMTP listener keeps in `warm`.
    pub fn with_warm(mut self, warm: Arc<Warm>) -> Engine {
        self.warm = warm;
        self
    }

    /// Runs until `shutdown`; deliveries in flight are tracked by `tracker`
    /// so the caller can wait for them within its deadline.
    pub async fn run(self: Arc<Self>, shutdown: CancellationToken, tracker: TaskTracker) {
        let permits = Arc::new(Semaphore::new(self.concurrency));
        let freed = Arc::new(Notify::new());
        let batching = self.batch_limits();
        // While set, due messages are being collected for one batch.
        let mut linger_until: Option<Instant> = None;
        // The last claim filled a whole batch: a backlog, no need to wait.
        let mut backlog = false;
        while !shutdown.is_cancelled() {
            let now = Instant::now();
            let free = permits.available_permits();
            let mut paused_until = None;
            let lingering = match linger_until {
                Some(t) if now < t => true,
                Some(_) => {
                    linger_until = None;
                    false
                }
                None if batching.is_some()
                    && !backlog
                    && free > 0
                    && self.gate.is_open()
                    && self.spool.next_due().is_some_and(|due| due <= now) =>
                {
                    linger_until = Some(now + LINGER);
                    true
                }
                None => false,
            };
            if lingering {
                paused_until = linger_until;
            } else if free > 0 {
                let (max, probe) = match self.gate.admit(now) {
                    Admit::All => (free, false),
                    Admit::Probe => (1, true),
                    Admit::Until(t) => {
                        paused_until = Some(t);
                        (0, false)
                    }
                };
                // Each worker takes a batch when the backend batches; a
                // probe goes alone.
                let per_worker = match batching {
                    Some(limits) if !probe => limits.max_elements,
                    _ => 1,
                };
                let claims = if max > 0 {
                    self.spool.claim_due(now, max.saturating_mul(per_worker))
                } else {
                    Vec::new()
                };
                backlog = per_worker > 1 && claims.len() >= per_worker;
                if probe && claims.is_empty() {
                    self.gate.probe_unused(now);
                }
                let mut claims = claims.into_iter().peekable();
                while claims.peek().is_some() {
                    let Ok(permit) = permits.clone().try_acquire_owned() else {
                        break; // not reached: at most `free` workers' worth
                    };
                    let work: Vec<Claim> = claims.by_ref().take(per_worker).collect();
                    let engine = self.clone();
                    let token = shutdown.clone();
                    let freed = freed.clone();
                    tracker.spawn(async move {
                        let ids = work.first().map(|c| c.id().to_string()).unwrap_or_default();
                        let worker = engine.clone();
                        let run = tokio::spawn(async move {
                            match (work.len(), batching) {
                                (2.., Some(limits)) => {
                                    worker.deliver_batch(work, limits, &token).await
                                }
                                _ => {
                                    for claim in work {
                                        worker.deliver(claim, probe, &token).await;
                                    }
                                }
                            }
                        });
                        if let Err(e) = run.await {
                            // The claims were dropped by the unwinding: released.
                            tracing::error!(id = ids, error = %e, "delivery task failed");
                            if probe {
                                engine.gate.probe_ended(Instant::now());
                            }
                        }
                        drop(permit);
                        freed.notify_one();
                    });
                }
            }
            // With every worker busy, entries already due cannot be claimed:
            // sleeping until they are due would return at once, over and over.
            // Wait for a worker to finish instead.
            let wake = if permits.available_permits() == 0 {
                now + IDLE_POLL
            } else if let Some(t) = paused_until {
                t.min(now + IDLE_POLL)
            } else {
                self.spool
                    .next_due()
                    .unwrap_or(now + IDLE_POLL)
                    .min(now + IDLE_POLL)
            };
            tokio::select! {
                _ = shutdown.cancelled() => break,
                _ = self.spool.changed() => {}
                _ = freed.notified() => {}
                _ = tokio::time::sleep_until(wake) => {}
            }
        }
    }
}

#[cfg(test)]
mod tests;
