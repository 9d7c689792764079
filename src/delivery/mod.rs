//! The delivery engine: takes due messages from the spool, paces them
//! through the rate limiter, hands them to the backend, and records the
//! outcome back in the spool. It is the only place outcomes turn into spool
//! state:
//!
//! - delivered: the entry leaves the spool;
//! - transient: attempts+1, next attempt after an exponential, jittered
//!   backoff (never before the API's `Retry-After`), dead-letter after `max_age`;
//! - permanent: dead-letter at once with the API's code and text;
//! - configuration fault: hold the message, retry at `retry_max`, report it
//!   in readiness until a delivery succeeds.
//!
//! A message split into several API calls records each accepted part, so a
//! retry never resends recipients the API already took.

pub mod backoff;
pub mod outcome;
pub mod ratelimit;

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use tokio::sync::{Notify, Semaphore};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::backends::Backend;
use crate::message::Envelope;
use crate::observability::health::Health;
use crate::observability::maillog;
use crate::spool::{Claim, Failure, Meta, Spool};
use backoff::Backoff;
use outcome::Outcome;
use ratelimit::Pacer;

/// Longest the scheduler sleeps without looking at the spool again.
const IDLE_POLL: Duration = Duration::from_secs(30);

pub struct Engine {
    pub spool: Arc<Spool>,
    pub backend: Arc<dyn Backend>,
    pub pacer: Pacer,
    pub backoff: Backoff,
    pub max_age: Duration,
    pub concurrency: usize,
    pub health: Arc<Health>,
}

impl Engine {
    /// Runs until `shutdown`; deliveries in flight are tracked by `tracker`
    /// so the caller can wait for them within its deadline.
    pub async fn run(self: Arc<Self>, shutdown: CancellationToken, tracker: TaskTracker) {
        let permits = Arc::new(Semaphore::new(self.concurrency));
        let freed = Arc::new(Notify::new());
        while !shutdown.is_cancelled() {
            let free = permits.available_permits();
            if free > 0 {
                for claim in self.spool.claim_due(Instant::now(), free) {
                    let Ok(permit) = permits.clone().acquire_owned().await else {
                        return;
                    };
                    let engine = self.clone();
                    let token = shutdown.clone();
                    let freed = freed.clone();
                    tracker.spawn(async move {
                        engine.deliver(claim, &token).await;
                        drop(permit);
                        freed.notify_one();
                    });
                }
            }
            // With every worker busy, entries already due cannot be claimed:
            // sleeping until they are due would return at once, over and over
            // (a busy loop for as long as the backlog lasts). Wait for a
            // worker to finish instead.
            let wait = if permits.available_permits() == 0 {
                IDLE_POLL
            } else {
                self.spool
                    .next_due()
                    .map(|t| t.saturating_duration_since(Instant::now()))
                    .unwrap_or(IDLE_POLL)
                    .min(IDLE_POLL)
            };
            tokio::select! {
                _ = shutdown.cancelled() => break,
                _ = self.spool.changed() => {}
                _ = freed.notified() => {}
                _ = tokio::time::sleep(wait) => {}
            }
        }
    }

    /// Runs `f` with the claim on a blocking thread and hands the claim
    /// back; `None` if `f` panicked (the claim's drop gave the entry back).
    async fn blocking<T: Send + 'static>(
        &self,
        claim: Claim,
        f: impl FnOnce(&Spool, &Claim) -> T + Send + 'static,
    ) -> Option<(Claim, T)> {
        let spool = self.spool.clone();
        match tokio::task::spawn_blocking(move || {
            let out = f(&spool, &claim);
            (claim, out)
        })
        .await
        {
            Ok(v) => Some(v),
            Err(e) => {
                tracing::error!(error = %e, "spool task panicked; the entry is due again");
                None
            }
        }
    }

    async fn deliver(&self, claim: Claim, shutdown: &CancellationToken) {
        let id = claim.id().to_string();
        let id = id.as_str();
        let Some((claim, loaded)) = self.blocking(claim, |s, c| s.load(c)).await else {
            return;
        };
        let (mut meta, raw) = match loaded {
            Ok(v) => v,
            Err(e) => {
                tracing::error!(id, error = %e, "cannot load spooled message; will look again later");
                self.spool
                    .release(claim, Instant::now() + self.backoff.max());
                return;
            }
        };
        let pending = meta.pending_recipients();
        if pending.is_empty() {
            // Every part already answered (a crash after the last one).
            return self.finish(claim, meta, None).await;
        }
        let envelope = Envelope {
            mail_from: meta.envelope.mail_from.clone(),
            rcpt_to: pending,
        };
        let backend = self.backend.clone();
        let mapped = tokio::task::spawn_blocking(move || backend.map(&envelope, &raw)).await;
        let mapped = match mapped {
            Ok(Ok(m)) => m,
            Ok(Err(e)) => {
                let reason = format!("message cannot be mapped: {e}");
                return self
                    .finish(claim, meta, Some(Outcome::Permanent { code: None, reason }))
                    .await;
            }
            Err(e) => {
                let reason = format!("mapping panicked: {e}");
                return self
                    .finish(claim, meta, Some(Outcome::Permanent { code: None, reason }))
                    .await;
            }
        };
        meta.attempts += 1;
        let total = mapped.calls.len();
        let mut claim = claim;
        // A part the API refuses for good does not stop the others: every
        // recipient gets its chance, then the message is dead-lettered for
        // the refused ones. Accepted and refused recipients are both recorded,
        // so no later attempt sends to them again.
        for (part, call) in mapped.calls.iter().enumerate() {
            let waited = tokio::select! {
                _ = shutdown.cancelled() => {
                    // Not sent: it stays queued for the next start.
                    meta.attempts -= 1;
                    let due = due_at(meta.next_attempt_at);
                    return self.reschedule(claim, &meta, due).await;
                }
                waited = self.pacer.acquire() => waited,
            };
            if !waited.is_zero() {
                metrics::counter!("postrelay_rate_limit_waits_total").increment(1);
            }
            let started = std::time::Instant::now();
            let outcome = self.backend.send(id, part, call).await;
            metrics::histogram!("postrelay_api_latency_seconds", "backend" => self.backend.name())
                .record(started.elapsed().as_secs_f64());
            metrics::counter!("postrelay_delivery_attempts_total",
                "backend" => self.backend.name(), "outcome" => outcome_label(&outcome))
            .increment(1);
            match outcome {
                Outcome::Delivered { api_id, note } => {
                    maillog::delivered(
                        &meta,
                        self.backend.name(),
                        api_id.as_deref(),
                        note.as_deref(),
                        part,
                        total,
                        call.recipients.len(),
                    );
                    meta.record_accepted(&call.recipients, api_id.as_deref());
                }
                Outcome::Permanent { code, reason } => {
                    tracing::warn!(id, part = part + 1, parts = total, code = code.as_deref().unwrap_or(""), error = %reason, "API refused this part");
                    meta.record_refused(&call.recipients, code.as_deref(), &reason);
                }
                other => return self.finish(claim, meta, Some(other)).await,
            }
            if total > 1 {
                // On disk before anything else is sent: never resent. A
                // failed save stops the attempt.
                let m = meta.clone();
                let Some((c, saved)) = self
                    .blocking(claim, move |s, c| s.save_progress(c, &m))
                    .await
                else {
                    return;
                };
                claim = c;
                if let Err(e) = saved {
                    tracing::error!(id, error = %e, "cannot record delivery progress; attempt stopped");
                    self.spool
                        .release(claim, Instant::now() + self.backoff.max());
                    return;
                }
            }
        }
        self.finish(claim, meta, None).await
    }

    /// Records the end of an attempt. `None` means every call was answered:
    /// delivered, unless the API refused some part for good.
    async fn finish(&self, claim: Claim, mut meta: Meta, outcome: Option<Outcome>) {
        let now = SystemTime::now();
        let backend = self.backend.name();
        match outcome {
            None if meta.refused_count() > 0 => {
                let (code, reason) = meta
                    .first_refusal()
                    .map(|(c, r)| (c.map(str::to_string), r.to_string()))
                    .expect("counted");
                let refused = meta.refused_count();
                let reason = if refused < meta.envelope.rcpt_to.len() {
                    format!("{reason} (refused for {refused} recipients)")
                } else {
                    reason
                };
                self.dead_letter(claim, meta, code, reason).await
            }
            None => {
                self.health.clear_fault();
                let spool = self.spool.clone();
                match tokio::task::spawn_blocking(move || spool.complete(claim)).await {
                    Ok(Ok(())) => maillog::done(&meta, backend),
                    Ok(Err(e)) => {
                        tracing::error!(id = %meta.id, error = %e, "delivered, but cannot remove from spool: it may be sent again")
                    }
                    Err(e) => tracing::error!(id = %meta.id, error = %e, "spool remover panicked"),
                }
            }
            Some(Outcome::Transient {
                reason,
                retry_after,
                throttled,
            }) => {
                if throttled {
                    self.pacer
                        .slow_down(retry_after.unwrap_or(Duration::from_secs(1)));
                }
                let age = now.duration_since(meta.received_at).unwrap_or_default();
                if age >= self.max_age {
                    let mut reason = format!(
                        "gave up after {} attempts over {}: {reason}",
                        meta.attempts,
                        humantime::format_duration(Duration::from_secs(age.as_secs()))
                    );
                    let code = meta
                        .first_refusal()
                        .and_then(|(c, _)| c.map(str::to_string));
                    if let Some((_, r)) = meta.first_refusal() {
                        reason.push_str(&format!(
                            "; {} recipients were refused: {r}",
                            meta.refused_count()
                        ));
                    }
                    return self.dead_letter(claim, meta, code, reason).await;
                }
                let delay = self
                    .backoff
                    .delay(meta.attempts, retry_after, &mut rand::rng());
                meta.next_attempt_at = now + delay;
                meta.last_error = Some(reason);
                meta.held = false;
                maillog::retry(&meta, backend, delay);
                self.reschedule(claim, &meta, Instant::now() + delay).await;
            }
            Some(Outcome::Permanent { code, reason }) => {
                self.dead_letter(claim, meta, code, reason).await
            }
            Some(Outcome::ConfigFault { code, reason }) => {
                self.health.set_fault(&reason);
                meta.next_attempt_at = now + self.backoff.max();
                meta.last_error = Some(reason);
                meta.held = true;
                maillog::held(&meta, backend, code.as_deref(), self.backoff.max());
                let due = Instant::now() + self.backoff.max();
                self.reschedule(claim, &meta, due).await;
            }
            Some(Outcome::Delivered { .. }) => {
                unreachable!("delivered parts are handled by deliver")
            }
        }
    }

    async fn dead_letter(
        &self,
        claim: Claim,
        mut meta: Meta,
        code: Option<String>,
        mut reason: String,
    ) {
        if meta.accepted_count() > 0 {
            reason.push_str(&format!(
                " (already accepted for {} of {} recipients)",
                meta.accepted_count(),
                meta.envelope.rcpt_to.len()
            ));
        }
        meta.failure = Some(Failure {
            code,
            reason,
            failed_at: SystemTime::now(),
        });
        let spool = self.spool.clone();
        let m = meta.clone();
        match tokio::task::spawn_blocking(move || spool.dead_letter(claim, &m)).await {
            Ok(Ok(())) => {
                metrics::counter!("postrelay_dead_letters_total").increment(1);
                maillog::failed(&meta, self.backend.name());
            }
            Ok(Err(e)) => {
                tracing::error!(id = %meta.id, error = %e, "cannot move message to failed/; it stays queued");
            }
            Err(e) => {
                tracing::error!(id = %meta.id, error = %e, "spool mover panicked; it stays queued");
            }
        }
    }

    /// Writes the entry's state and gives it back due at `due`.
    async fn reschedule(&self, claim: Claim, meta: &Meta, due: Instant) {
        let spool = self.spool.clone();
        let m = meta.clone();
        let result = tokio::task::spawn_blocking(move || spool.reschedule(claim, &m, due)).await;
        match result {
            Ok(Ok(())) => {}
            Ok(Err(e)) => {
                tracing::error!(id = %meta.id, error = %e, "cannot record delivery state")
            }
            Err(e) => tracing::error!(id = %meta.id, error = %e, "spool writer panicked"),
        }
    }
}

/// The tokio-clock instant of a wall-clock time on disk (now if past).
fn due_at(wall: SystemTime) -> Instant {
    Instant::now() + wall.duration_since(SystemTime::now()).unwrap_or_default()
}

fn outcome_label(o: &Outcome) -> &'static str {
    match o {
        Outcome::Delivered { .. } => "delivered",
        Outcome::Transient { .. } => "transient",
        Outcome::Permanent { .. } => "permanent",
        Outcome::ConfigFault { .. } => "config_fault",
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Mutex;

    use super::*;
    use crate::backends::SendFuture;
    use crate::mapping::{ApiCall, Mapped, MappingError};

    /// Every call takes 300 ms; records when each call started.
    #[derive(Default)]
    struct SlowApi {
        started: Mutex<Vec<Instant>>,
    }

    impl Backend for SlowApi {
        fn name(&self) -> &'static str {
            "slow"
        }

        fn map(&self, envelope: &Envelope, _raw: &[u8]) -> Result<Mapped, MappingError> {
            Ok(Mapped {
                calls: vec![ApiCall {
                    recipients: envelope.rcpt_to.clone(),
                    body: serde_json::Value::Null,
                }],
                warnings: Vec::new(),
            })
        }

        fn send<'a>(&'a self, _id: &'a str, _part: usize, _call: &'a ApiCall) -> SendFuture<'a> {
            self.started.lock().unwrap().push(Instant::now());
            Box::pin(async {
                tokio::time::sleep(Duration::from_millis(300)).await;
                Outcome::Delivered {
                    api_id: None,
                    note: None,
                }
            })
        }
    }

    #[tokio::test]
    async fn a_freed_worker_takes_the_next_due_message_at_once() {
        let dir = tempfile::tempdir().unwrap();
        let spool = Arc::new(Spool::open(dir.path(), 0).unwrap().0);
        for i in 0..3 {
            let mut incoming = spool.receive().await.unwrap();
            incoming.write(b"Subject: x\r\n\r\nhi\r\n").await.unwrap();
            let envelope = Envelope {
                mail_from: "a@example.com".into(),
                rcpt_to: vec![format!("r{i}@example.org")],
            };
            incoming.commit(&spool, envelope).await.unwrap();
        }
        let api = Arc::new(SlowApi::default());
        let engine = Arc::new(Engine {
            spool: spool.clone(),
            backend: api.clone(),
            pacer: Pacer::new(0),
            backoff: Backoff::new(Duration::from_secs(1), Duration::from_secs(60)),
            max_age: Duration::from_secs(86400),
            concurrency: 1,
            health: Arc::new(Health::default()),
        });
        let shutdown = CancellationToken::new();
        let run = tokio::spawn(engine.run(shutdown.clone(), TaskTracker::new()));
        let all_started = async {
            while api.started.lock().unwrap().len() < 3 {
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        };
        let finished = tokio::time::timeout(Duration::from_secs(10), all_started).await;
        shutdown.cancel();
        run.await.unwrap();
        // The only worker is busy while the other two are due: each starts
        // when the previous call ends, not at the next idle poll (30 s).
        assert!(finished.is_ok(), "calls started at {:?}", api.started);
        let started = api.started.lock().unwrap().clone();
        for pair in started.windows(2) {
            let gap = pair[1] - pair[0];
            assert!(gap < Duration::from_secs(5), "{gap:?}");
        }
    }
}
