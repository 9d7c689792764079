//! Batch delivery: several due messages in one API call, when the backend
//! has a batch endpoint ([`BatchSender`]) and more than one message is due.
//!
//! The claimed messages are loaded and mapped a chunk at a time (see
//! [`prepare`](super::prepare)) and packed, per credential, into open
//! calls; a call that cannot take the next message is sent first, so at
//! most one call per credential and one chunk are held in memory. A
//! message is an element per call of its mapping (a split message gives
//! each of its parts), all in the same batch call, so its parts are
//! answered together and recorded before anything else of it is sent.
//!
//! Invariants: a batch call carries one credential only (grouped by the
//! secret that sends it, never by a label that could collide), at most the
//! backend's element and byte caps and at most `rate_limit` elements; the
//! pacer counts every element; each message's answers go through the same
//! [`record_answer`](Engine::record_answer), `decide` and `apply` as a lone
//! message's, so none is recorded delivered without its own element's
//! answer; every claim is handed back (concluded, or released by its drop).
//! A message that could go alone (the only one for its credential, a
//! credential probe, or parts over the caps) takes the single path
//! (`/email`), one call at a time under this batch's permit.

use std::collections::VecDeque;

use secrecy::ExposeSecret;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::Engine;
use super::attempt::{Admitted, Answer, Sending, Work};
use super::decide::{Attempt, Decision};
use super::gate::Admit;
use super::pack::{Limits, Load};
use crate::backends::{BatchSender, Outcome};
use crate::mapping::ApiCall;
use crate::spool::{Claim, Meta};

/// A message ready to go: its calls mapped and its credential resolved.
struct Ready {
    claim: Claim,
    meta: Meta,
    calls: Vec<ApiCall>,
    sizes: Vec<usize>,
    sending: Sending,
}

/// The batch call being filled for one credential.
struct Open {
    /// The secret that sends it (`None`: the configured one) and its label.
    key: (Option<String>, String),
    messages: Vec<Ready>,
    load: Load,
}

impl Engine {
    /// Caps of one batch call, or `None` when the backend does not batch.
    pub(super) fn batch_limits(&self) -> Option<Limits> {
        let batch = self.sender.batch()?;
        let max_elements = batch
            .max_elements()
            .min(self.pacer.max_per_call().unwrap_or(usize::MAX));
        (max_elements > 1).then(|| Limits {
            max_elements,
            max_bytes: batch.max_body_bytes(),
        })
    }

    /// Delivers `claims` (two or more, claimed together) in batch calls.
    pub(super) async fn deliver_batch(
        &self,
        claims: Vec<Claim>,
        limits: Limits,
        shutdown: &CancellationToken,
    ) {
        let Some(batch) = self.sender.batch() else {
            // Not reached: only a batching backend is given batches.
            for claim in claims {
                self.deliver(claim, false, shutdown).await;
            }
            return;
        };
        let mut open: Vec<Open> = Vec::new();
        let mut alone: Vec<(Claim, Meta, Work, Admitted)> = Vec::new();
        let mut claims: VecDeque<Claim> = claims.into();
        while !claims.is_empty() {
            let mut to_map = Vec::new();
            for (claim, meta, raw) in self.load_chunk(&mut claims).await {
                let sending = self.sending(&meta);
                match sending.gate.admit(Instant::now()) {
                    Admit::All => to_map.push((claim, meta, raw, sending)),
                    Admit::Probe => {
                        let admitted = admitted(sending, true);
                        alone.push((claim, meta, Work::Raw(raw), admitted));
                    }
                    Admit::Until(until) => self.hold_paused(claim, meta, until).await,
                }
            }
            let inputs = to_map
                .iter_mut()
                .map(|(_, meta, raw, _)| (&*meta, std::mem::take(raw)))
                .collect();
            let mapped = self.map_all(inputs).await;
            for ((claim, meta, _, sending), calls) in to_map.into_iter().zip(mapped) {
                let calls = match calls {
                    Ok(Some(calls)) => calls,
                    Ok(None) => {
                        self.conclude(claim, meta, Attempt::Answered).await;
                        continue;
                    }
                    Err(attempt) => {
                        self.conclude(claim, meta, attempt).await;
                        continue;
                    }
                };
                let sizes: Vec<usize> = calls.iter().map(ApiCall::encoded_len).collect();
                if !Load::default().fits(&sizes, limits) {
                    let admitted = admitted(sending, false);
                    alone.push((claim, meta, Work::Mapped(calls), admitted));
                    continue;
                }
                let ready = Ready {
                    claim,
                    meta,
                    calls,
                    sizes,
                    sending,
                };
                self.place(batch, ready, &mut open, limits, &mut alone, shutdown)
                    .await;
            }
        }
        for call in open {
            self.send_call(batch, call.messages, &mut alone, shutdown)
                .await;
        }
        for (claim, meta, work, admitted) in alone {
            self.deliver_admitted(claim, meta, work, admitted, shutdown)
                .await;
        }
    }

    /// Puts `ready` into its credential's open call, sending that call
    /// first when it cannot take it.
    async fn place(
        &self,
        batch: &dyn BatchSender,
        ready: Ready,
        open: &mut Vec<Open>,
        limits: Limits,
        alone: &mut Vec<(Claim, Meta, Work, Admitted)>,
        shutdown: &CancellationToken,
    ) {
        let key = (
            ready
                .sending
                .own
                .as_ref()
                .map(|s| s.expose_secret().to_string()),
            self.sending_label(&ready.meta.credential),
        );
        let at = match open.iter().position(|o| o.key == key) {
            Some(at) => at,
            None => {
                open.push(Open {
                    key,
                    messages: Vec::new(),
                    load: Load::default(),
                });
                open.len() - 1
            }
        };
        if !open[at].load.fits(&ready.sizes, limits) {
            let full = std::mem::take(&mut open[at].messages);
            open[at].load = Load::default();
            self.send_call(batch, full, alone, shutdown).await;
        }
        open[at].load = open[at].load.with(&ready.sizes);
        open[at].messages.push(ready);
    }

    /// Sends one batch call for `messages` (one credential) and records each
    /// message's answers. A lone message joins `alone` for `/email`.
    async fn send_call(
        &self,
        batch: &dyn BatchSender,
        mut messages: Vec<Ready>,
        alone: &mut Vec<(Claim, Meta, Work, Admitted)>,
        shutdown: &CancellationToken,
    ) {
        if messages.len() < 2 {
            alone.extend(messages.into_iter().map(|m| {
                let admitted = admitted(m.sending, false);
                (m.claim, m.meta, Work::Mapped(m.calls), admitted)
            }));
            return;
        }
        let elements: usize = messages.iter().map(|m| m.calls.len()).sum();
        // A gate paused by an earlier call (a long Retry-After, a rejected
        // credential): the messages go back, due now, and meet the gate.
        let paused = !self.gate.is_open() || !messages[0].sending.gate.is_open();
        let waited = if paused {
            None
        } else {
            tokio::select! {
                _ = shutdown.cancelled() => None,
                waited = self.pacer.acquire(elements) => Some(waited),
            }
        };
        let Some(waited) = waited else {
            for m in messages {
                self.conclude(m.claim, m.meta, Attempt::Interrupted).await;
            }
            return;
        };
        if !waited.is_zero() {
            metrics::counter!("postrelay_rate_limit_waits_total").increment(1);
        }
        for m in &mut messages {
            m.meta.attempts += 1;
        }
        let backend = self.sender.name();
        let ids: Vec<&str> = messages.iter().map(|m| m.claim.id()).collect();
        let marker = self.mark_in_flight(&ids);
        let started = std::time::Instant::now();
        let outcomes = {
            let calls: Vec<&ApiCall> = messages.iter().flat_map(|m| m.calls.iter()).collect();
            batch
                .send_batch(&calls, messages[0].sending.own.as_ref())
                .await
        };
        metrics::histogram!("postrelay_api_latency_seconds", "backend" => backend)
            .record(started.elapsed().as_secs_f64());
        metrics::counter!("postrelay_batch_calls_total", "backend" => backend).increment(1);
        tracing::debug!(messages = messages.len(), elements, "batch call answered");
        let mut outcomes = if outcomes.len() == elements {
            outcomes.into_iter()
        } else {
            // A backend that broke its promise: nothing is taken as delivered.
            let lost = Outcome::Transient {
                reason: format!(
                    "the backend gave {} answers for a batch of {elements}",
                    outcomes.len()
                ),
                retry_after: None,
                throttled: false,
            };
            vec![lost; elements].into_iter()
        };
        let mut completed = Vec::new();
        let mut concluded = Vec::new();
        for mut m in messages {
            let total = m.calls.len();
            let mut stop = None;
            for (part, call) in m.calls.iter().enumerate() {
                let outcome = outcomes.next().expect("one outcome per element");
                let answer = Answer {
                    part,
                    total,
                    call,
                    outcome,
                };
                if let Some(attempt) = self.record_answer(&mut m.meta, answer, &m.sending) {
                    stop.get_or_insert(attempt);
                }
            }
            let attempt = stop.unwrap_or(Attempt::Answered);
            match self.decision(&m.claim, &m.meta, &attempt) {
                Decision::Complete => completed.push((m.claim, m.meta)),
                decision => concluded.push(self.apply(m.claim, m.meta, decision)),
            }
        }
        // Recorded together, so the spool's syncs are shared across the
        // batch instead of taken one message after another; the delivered
        // ones leave the spool in one blocking call.
        futures_util::future::join(
            self.apply_completed(completed),
            futures_util::future::join_all(concluded),
        )
        .await;
        drop(marker); // every outcome is on disk
    }
}

/// A batch never holds the backend's probe: only its credential's.
fn admitted(sending: Sending, credential_probe: bool) -> Admitted {
    Admitted {
        sending,
        probe: false,
        credential_probe,
    }
}
