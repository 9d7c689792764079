//! One delivery attempt: load the entry, map it, send its calls through the
//! pacer, record each part's answer and save progress between parts; then
//! decide and apply. A failed progress save stops the attempt before the
//! next part, so an accepted part is never sent twice.

use std::time::Duration;

use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::Engine;
use super::apply::blocking;
use super::decide::{Attempt, Now, decide};
use super::gate::{Admit, LONG_RETRY_AFTER};
use crate::backends::Outcome;
use crate::message::Envelope;
use crate::observability::maillog;
use crate::spool::Claim;
use crate::spool::Meta;

impl Engine {
    /// Delivers one claimed entry. `probe`: the gate let this one through
    /// alone; it must hear how the attempt went.
    pub(super) async fn deliver(&self, claim: Claim, probe: bool, shutdown: &CancellationToken) {
        let spool = self.spool.clone();
        let loaded = blocking("spool loader", move || {
            let loaded = spool.load(&claim);
            (claim, loaded)
        })
        .await;
        let (claim, meta, raw) = match loaded {
            Ok((claim, Ok((meta, raw)))) => (claim, meta, raw),
            Ok((claim, Err(e))) => {
                tracing::error!(id = claim.id(), error = %e, "cannot load spooled message; will look again later");
                let later = Instant::now() + self.policy.hold_for(rand::random());
                self.spool.release(claim, later);
                return self.probe_without_answer(probe);
            }
            Err(_) => return self.probe_without_answer(probe),
        };
        // Each credential has its own gate: while it is paused after a
        // rejection, the mail that uses it is held without a call; other
        // credentials' mail goes on.
        let own = self.credentials.resolve(&meta.credential).is_some();
        if own {
            // The backend's gate never hears how an own credential fares.
            self.probe_without_answer(probe);
        }
        let gate = self.credential_gate(&meta.credential);
        let mut credential_probe = false;
        match gate.admit(Instant::now()) {
            Admit::All => {}
            Admit::Probe => credential_probe = true,
            Admit::Until(until) => {
                if !own {
                    self.probe_without_answer(probe);
                }
                let attempt = Attempt::CredentialPaused {
                    until,
                    reason: format!(
                        "credential {} was rejected; held until it is fixed",
                        self.sending_label(&meta.credential)
                    ),
                };
                return self.conclude(claim, meta, attempt).await;
            }
        }
        let no_answer = || {
            if credential_probe {
                gate.probe_ended(Instant::now());
            }
            if !own {
                self.probe_without_answer(probe);
            }
        };
        let Some((claim, meta, attempt, answered)) = self.attempt(claim, meta, raw, shutdown).await
        else {
            return no_answer();
        };
        if !answered {
            no_answer();
        }
        self.conclude(claim, meta, attempt).await
    }

    /// Decides what becomes of the message after `attempt`, and records it.
    async fn conclude(&self, claim: Claim, meta: Meta, attempt: Attempt) {
        let now = Instant::now();
        let clock = Now {
            at: now,
            age: self.ages.age(claim.id(), meta.received_at, now),
            jitter: rand::random(),
        };
        let decision = decide(&meta, &attempt, clock, &self.policy);
        self.apply(claim, meta, decision).await
    }

    fn probe_without_answer(&self, probe: bool) {
        if probe {
            self.gate.probe_ended(Instant::now());
        }
    }

    /// Sends what is pending. Returns the claim back with the updated record,
    /// what the attempt found and whether the API answered at all; `None`
    /// when the claim was lost to a panic in the spool (it is released).
    async fn attempt(
        &self,
        mut claim: Claim,
        mut meta: Meta,
        raw: Vec<u8>,
        shutdown: &CancellationToken,
    ) -> Option<(Claim, Meta, Attempt, bool)> {
        let pending = meta.pending_recipients();
        if pending.is_empty() {
            // Every part already answered (a crash after the last one).
            return Some((claim, meta, Attempt::Answered, false));
        }
        let envelope = Envelope {
            mail_from: meta.envelope.mail_from.clone(),
            rcpt_to: pending,
        };
        let mapper = self.mapper.clone();
        let stream = self
            .credentials
            .stream(&meta.credential)
            .map(str::to_string);
        let mapped = match blocking("mapping", move || {
            mapper.map_as(&envelope, &raw, stream.as_deref())
        })
        .await
        {
            Ok(Ok(m)) => m,
            Ok(Err(e)) => {
                let attempt = Attempt::Unmappable {
                    reason: e.to_string(),
                };
                return Some((claim, meta, attempt, false));
            }
            Err(panic) => {
                let attempt = Attempt::Unmappable {
                    reason: format!("the mapping panicked: {panic}"),
                };
                return Some((claim, meta, attempt, false));
            }
        };
        let total = mapped.calls.len();
        let backend = self.sender.name();
        // A message's own credential answers for its own mail only: its
        // faults neither pause the backend nor make the daemon unready.
        let own = self.credentials.resolve(&meta.credential);
        let gate = self.credential_gate(&meta.credential);
        let label = meta.credential.label();
        // A part the API refuses for good does not stop the others: every
        // recipient gets its chance, then the message is dead-lettered for
        // the refused ones.
        for (part, call) in mapped.calls.iter().enumerate() {
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
                .send_as(claim.id(), part, call, own.as_ref())
                .await;
            metrics::histogram!("postrelay_api_latency_seconds", "backend" => backend)
                .record(started.elapsed().as_secs_f64());
            metrics::counter!("postrelay_delivery_attempts_total",
                "backend" => backend, "outcome" => outcome_label(&outcome))
            .increment(1);
            let (now, hold) = (Instant::now(), self.policy.hold_for(0.0));
            gate.observe(&outcome, now, hold);
            if own.is_none() {
                self.gate.observe(&outcome, now, hold);
            } else if matches!(outcome, Outcome::Delivered { .. }) {
                self.health.clear_credential_fault(&label);
            }
            match outcome {
                Outcome::Delivered { api_id, note } => {
                    maillog::delivered(
                        &meta,
                        backend,
                        api_id.as_deref(),
                        note.as_deref(),
                        part,
                        total,
                        call.recipients.len(),
                    );
                    meta.record_accepted(&call.recipients, api_id.as_deref());
                }
                Outcome::Permanent { code, reason } => {
                    tracing::warn!(id = claim.id(), part = part + 1, parts = total, code = code.as_deref().unwrap_or(""), error = %reason, "API refused this part");
                    meta.record_refused(&call.recipients, code.as_deref(), &reason);
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
                    let attempt = Attempt::Transient {
                        reason,
                        retry_after,
                    };
                    return Some((claim, meta, attempt, true));
                }
                Outcome::ConfigFault { code, reason } if own.is_some() => {
                    tracing::error!(id = claim.id(), credential = %label, error = %reason, "the message's own credential was rejected; only mail using it is held");
                    self.health.set_credential_fault(&label, &reason);
                    return Some((claim, meta, Attempt::ConfigFault { code, reason }, true));
                }
                Outcome::ConfigFault { code, reason } => {
                    self.health.set_fault(&reason);
                    return Some((claim, meta, Attempt::ConfigFault { code, reason }, true));
                }
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
}

fn outcome_label(o: &Outcome) -> &'static str {
    match o {
        Outcome::Delivered { .. } => "delivered",
        Outcome::Transient { .. } => "transient",
        Outcome::Permanent { .. } => "permanent",
        Outcome::ConfigFault { .. } => "config_fault",
    }
}
