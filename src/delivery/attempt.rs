//! One delivery attempt of one message: load the entry, map it, send its
//! calls through the pacer, record each part's answer and save progress
//! between parts; then decide and apply. A failed progress save stops the
//! attempt before the next part, so an accepted part is never sent twice.
//! [`Engine::record_answer`] is the one place an API answer for one part
//! turns into the message's record, gates, health and metrics; the batch
//! path (`batch.rs`) uses it too.

use std::time::Duration;

use secrecy::SecretString;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::Engine;
use super::apply::blocking;
use super::decide::{Attempt, Decision, Now, decide};
use super::gate::{Admit, Gate, LONG_RETRY_AFTER};
use crate::backends::Outcome;
use crate::mapping::ApiCall;
use crate::observability::maillog;
use crate::spool::Claim;
use crate::spool::Meta;

/// The credential a message is sent with, and what watches it.
pub(super) struct Sending {
    /// The message's own secret; `None`: the backend's configured one.
    pub own: Option<SecretString>,
    pub gate: std::sync::Arc<Gate>,
    pub label: String,
}

/// How a message got through the gates: the credential it is sent with;
/// `probe`: the backend's gate let it through alone (never with an own
/// credential); `credential_probe`: its credential's gate did.
pub(super) struct Admitted {
    pub sending: Sending,
    pub probe: bool,
    pub credential_probe: bool,
}

/// What an attempt starts from: the raw message, or its calls already mapped.
pub(super) enum Work {
    Raw(Vec<u8>),
    Mapped(Vec<ApiCall>),
}

impl Engine {
    /// Delivers one claimed entry. `probe`: the gate let this one through
    /// alone; it must hear how the attempt went.
    pub(super) async fn deliver(&self, claim: Claim, probe: bool, shutdown: &CancellationToken) {
        let Some((claim, meta, raw)) = self.load(claim).await else {
            return self.probe_without_answer(probe);
        };
        // Each credential has its own gate: while it is paused after a
        // rejection, the mail that uses it is held without a call; other
        // credentials' mail goes on.
        let sending = self.sending(&meta);
        let own = sending.own.is_some();
        if own {
            // The backend's gate never hears how an own credential fares.
            self.probe_without_answer(probe);
        }
        let credential_probe = match sending.gate.admit(Instant::now()) {
            Admit::All => false,
            Admit::Probe => true,
            Admit::Until(until) => {
                if !own {
                    self.probe_without_answer(probe);
                }
                return self.hold_paused(claim, meta, until).await;
            }
        };
        let admitted = Admitted {
            sending,
            probe: probe && !own,
            credential_probe,
        };
        self.deliver_admitted(claim, meta, Work::Raw(raw), admitted, shutdown)
            .await
    }

    /// Holds a message whose credential's gate is paused until `until`.
    pub(super) async fn hold_paused(&self, claim: Claim, meta: Meta, until: Instant) {
        let attempt = Attempt::CredentialPaused {
            until,
            reason: format!(
                "credential {} was rejected; held until it is fixed",
                self.sending_label(&meta.credential)
            ),
        };
        self.conclude(claim, meta, attempt).await
    }

    /// Delivers a message its credential's gate let through.
    pub(super) async fn deliver_admitted(
        &self,
        claim: Claim,
        meta: Meta,
        work: Work,
        admitted: Admitted,
        shutdown: &CancellationToken,
    ) {
        let Admitted {
            sending,
            probe,
            credential_probe,
        } = admitted;
        let gate = sending.gate.clone();
        let no_answer = || {
            if credential_probe {
                gate.probe_ended(Instant::now());
            }
            self.probe_without_answer(probe);
        };
        let marker = self.mark_in_flight(&[claim.id()]);
        let Some((claim, meta, attempt, answered)) =
            self.attempt(claim, meta, work, sending, shutdown).await
        else {
            return no_answer();
        };
        if !answered {
            no_answer();
        }
        self.conclude(claim, meta, attempt).await;
        drop(marker); // the outcome is on disk
    }

    /// Decides what becomes of the message after `attempt`, and records it.
    pub(super) async fn conclude(&self, claim: Claim, meta: Meta, attempt: Attempt) {
        let decision = self.decision(&claim, &meta, &attempt);
        self.apply(claim, meta, decision).await
    }

    /// What becomes of the message after `attempt`, now.
    pub(super) fn decision(&self, claim: &Claim, meta: &Meta, attempt: &Attempt) -> Decision {
        let now = Instant::now();
        let clock = Now {
            at: now,
            age: self.ages.age(claim.id(), meta.received_at, now),
            jitter: rand::random(),
        };
        decide(meta, attempt, clock, &self.policy)
    }

    fn probe_without_answer(&self, probe: bool) {
        if probe {
            self.gate.probe_ended(Instant::now());
        }
    }

    /// The credential `meta` is sent with.
    pub(super) fn sending(&self, meta: &Meta) -> Sending {
        Sending {
            own: self.credentials.resolve(&meta.credential),
            gate: self.credential_gate(&meta.credential),
            label: meta.credential.label(),
        }
    }

    /// Sends what is pending. Returns the claim back with the updated record,
    /// what the attempt found and whether the API answered at all; `None`
    /// when the claim was lost to a panic in the spool (it is released).
    async fn attempt(
        &self,
        mut claim: Claim,
        mut meta: Meta,
        work: Work,
        sending: Sending,
        shutdown: &CancellationToken,
    ) -> Option<(Claim, Meta, Attempt, bool)> {
        let calls = match work {
            Work::Mapped(calls) => calls,
            Work::Raw(raw) => match self.map_pending(&meta, raw).await {
                Ok(Some(calls)) => calls,
                // Every part already answered (a crash after the last one).
                Ok(None) => return Some((claim, meta, Attempt::Answered, false)),
                Err(attempt) => return Some((claim, meta, attempt, false)),
            },
        };
        let total = calls.len();
        let backend = self.sender.name();
        // A message's own credential answers for its own mail only: its
        // faults neither pause the backend nor make the daemon unready.
        // A part the API refuses for good does not stop the others: every
        // recipient gets its chance, then the message is dead-lettered for
        // the refused ones.
        for (part, call) in calls.iter().enumerate() {
            let waited = tokio::select! {
                _ = shutdown.cancelled() => return Some((claim, meta, Attempt::Interrupted, part > 0)),
                waited = self.pacer.acquire(1) => waited,
            };
            if !waited.is_zero() {
                metrics::counter!("postrelay_rate_limit_waits_total").increment(1);
            }
            if part == 0 {
                meta.attempts += 1;
            }
            let started = std::time::Instant::now();
            let outcome = self
                .sender
                .send_as(claim.id(), part, call, sending.own.as_ref())
                .await;
            metrics::histogram!("postrelay_api_latency_seconds", "backend" => backend)
                .record(started.elapsed().as_secs_f64());
            let answer = Answer {
                part,
                total,
                call,
                outcome,
            };
            if let Some(stop) = self.record_answer(&mut meta, answer, &sending) {
                return Some((claim, meta, stop, true));
            }
            if total > 1 {
                // On disk before the next part: an accepted part is never resent.
                let spool = self.spool.clone();
                let record = meta.clone();
                let saved = blocking("spool writer", move || {
                    let saved = spool.save_progress(&claim, &record);
                    (claim, saved)
                })
                .await
                .ok()?;
                claim = saved.0;
                if let Err(e) = saved.1 {
                    tracing::error!(id = claim.id(), error = %e, "cannot save delivery progress; the attempt stops");
                    let attempt = Attempt::SaveFailed {
                        reason: e.to_string(),
                    };
                    return Some((claim, meta, attempt, true));
                }
            }
        }
        Some((claim, meta, Attempt::Answered, total > 0))
    }

    /// Records the API's answer for one part of `meta`: accepted or refused
    /// recipients into the record, the answer into the gates, health, pacer
    /// and metrics. Returns what stops the attempt (a transient failure, a
    /// configuration fault), `None` when the part was answered for good.
    pub(super) fn record_answer(
        &self,
        meta: &mut Meta,
        answer: Answer<'_>,
        sending: &Sending,
    ) -> Option<Attempt> {
        let backend = self.sender.name();
        let Answer {
            part,
            total,
            call,
            outcome,
        } = answer;
        metrics::counter!("postrelay_delivery_attempts_total",
            "backend" => backend, "outcome" => outcome_label(&outcome))
        .increment(1);
        let (now, hold) = (Instant::now(), self.policy.hold_for(0.0));
        sending.gate.observe(&outcome, now, hold);
        if sending.own.is_none() {
            self.gate.observe(&outcome, now, hold);
        } else if matches!(outcome, Outcome::Delivered { .. }) {
            self.health.clear_credential_fault(&sending.label);
        }
        let id = meta.id.as_str();
        match outcome {
            Outcome::Delivered { api_id, note } => {
                maillog::delivered(
                    meta,
                    backend,
                    api_id.as_deref(),
                    note.as_deref(),
                    part,
                    total,
                    call.recipients.len(),
                );
                meta.record_accepted(&call.recipients, api_id.as_deref());
                None
            }
            Outcome::Permanent { code, reason } => {
                tracing::warn!(id, part = part + 1, parts = total, code = code.as_deref().unwrap_or(""), error = %reason, "API refused this part");
                meta.record_refused(&call.recipients, code.as_deref(), &reason);
                None
            }
            Outcome::Transient {
                reason,
                retry_after,
                throttled,
            } => {
                if throttled {
                    let pause = retry_after.unwrap_or(Duration::from_secs(1));
                    self.pacer.slow_down(pause.min(LONG_RETRY_AFTER));
                }
                Some(Attempt::Transient {
                    reason,
                    retry_after,
                })
            }
            Outcome::ConfigFault { code, reason } if sending.own.is_some() => {
                tracing::error!(id, credential = %sending.label, error = %reason, "the message's own credential was rejected; only mail using it is held");
                self.health.set_credential_fault(&sending.label, &reason);
                Some(Attempt::ConfigFault { code, reason })
            }
            Outcome::ConfigFault { code, reason } => {
                self.health.set_fault(&reason);
                Some(Attempt::ConfigFault { code, reason })
            }
        }
    }
}

/// The API's answer for part `part` (of `total`) of a message, sent as `call`.
pub(super) struct Answer<'a> {
    pub part: usize,
    pub total: usize,
    pub call: &'a ApiCall,
    pub outcome: Outcome,
}

/// Logs that a message went without its trace (`postmark.trace_metadata`).
fn outcome_label(o: &Outcome) -> &'static str {
    match o {
        Outcome::Delivered { .. } => "delivered",
        Outcome::Transient { .. } => "transient",
        Outcome::Permanent { .. } => "permanent",
        Outcome::ConfigFault { .. } => "config_fault",
    }
}
