//! What becomes of a message after one delivery attempt: a pure function of
//! its record, what the attempt found, the time and the retry policy. No I/O,
//! no clock, no randomness (the jitter draw comes in with [`Now`]), so every
//! rule is a row in the table test below.
//!
//! Rules: every recipient answered → complete, or dead-letter when the API
//! refused some for good; a transient failure → retry after the jittered
//! backoff (never before `Retry-After`), or dead-letter once the message is
//! older than `max_age`; a configuration fault or a message the mapping
//! cannot (or could not, by panicking) turn into calls → hold, never
//! dead-letter (an upgrade with a stricter mapping must not empty the queue);
//! a message whose credential's gate is paused → held until the pause ends
//! the first time (so a new or retried message probes), then as a
//! configuration fault; a failed progress save → retry later; an attempt stopped by shutdown
//! before any call → give the entry back unchanged.

use std::time::Duration;

use tokio::time::Instant;

use super::backoff::Backoff;
use crate::spool::Meta;

/// What one attempt found.
#[derive(Debug, Clone, PartialEq)]
pub enum Attempt {
    /// Every call was answered: accepted or refused, recorded in the meta.
    Answered,
    /// A call failed for now (network, 5xx, 429, maintenance).
    Transient {
        reason: String,
        retry_after: Option<Duration>,
    },
    /// The operator must fix something (credential, account, endpoint).
    ConfigFault {
        code: Option<String>,
        reason: String,
    },
    /// The message's credential was rejected and its gate is paused until
    /// `until`: no call was made.
    CredentialPaused { until: Instant, reason: String },
    /// The message could not be mapped to calls (an error or a panic).
    Unmappable { reason: String },
    /// Progress after an accepted part could not be saved: the attempt stopped.
    SaveFailed { reason: String },
    /// Shutdown came before the next call: nothing more was sent.
    Interrupted,
}

/// The retry settings from `[delivery]`.
#[derive(Debug, Clone, Copy)]
pub struct Policy {
    pub backoff: Backoff,
    pub max_age: Duration,
}

impl Policy {
    /// How long held mail waits: `retry_max` plus up to a tenth more, drawn
    /// from `jitter`, so held messages do not all come back at one instant.
    pub fn hold_for(&self, jitter: f64) -> Duration {
        let max = self.backoff.max();
        max + max.mul_f64(jitter.clamp(0.0, 1.0) / 10.0)
    }
}

/// The decision's clock: the tokio time now, the message's age (see
/// `age.rs`) and a uniform draw in `[0, 1]` for the jitter.
#[derive(Debug, Clone, Copy)]
pub struct Now {
    pub at: Instant,
    pub age: Duration,
    pub jitter: f64,
}

#[derive(Debug, Clone, PartialEq)]
pub enum Decision {
    /// Delivered to every recipient: the entry leaves the spool.
    Complete,
    /// Try again at `at`; `reason` becomes `last_error`.
    Reschedule { at: Instant, reason: String },
    /// Held for the operator: try again at `at`, report in readiness.
    Hold {
        at: Instant,
        code: Option<String>,
        reason: String,
    },
    /// Into `failed/` with this code and reason.
    DeadLetter {
        code: Option<String>,
        reason: String,
    },
    /// Given back unchanged, due at `at`.
    Release { at: Instant },
}

pub fn decide(meta: &Meta, attempt: &Attempt, now: Now, policy: &Policy) -> Decision {
    match attempt {
        Attempt::Answered => match meta.first_refusal() {
            None => Decision::Complete,
            Some((code, reason)) => {
                let total = meta.envelope.rcpt_to.len();
                let refused = meta.refused_count();
                let reason = if refused < total {
                    format!("{reason} (refused for {refused} recipients)")
                } else {
                    reason.to_string()
                };
                dead_letter(meta, code.map(str::to_string), reason)
            }
        },
        Attempt::Transient { reason, .. } if now.age >= policy.max_age => {
            let mut reason = format!(
                "gave up after {} attempts over {}: {reason}",
                meta.attempts,
                humantime::format_duration(Duration::from_secs(now.age.as_secs()))
            );
            let code = meta
                .first_refusal()
                .and_then(|(c, _)| c.map(str::to_string));
            if let Some((_, refusal)) = meta.first_refusal() {
                reason.push_str(&format!(
                    "; {} recipients were refused: {refusal}",
                    meta.refused_count()
                ));
            }
            dead_letter(meta, code, reason)
        }
        Attempt::Transient {
            reason,
            retry_after,
        } => Decision::Reschedule {
            at: now.at
                + policy
                    .backoff
                    .jittered(meta.attempts, *retry_after, now.jitter),
            reason: reason.clone(),
        },
        Attempt::ConfigFault { code, reason } => Decision::Hold {
            at: now.at + policy.hold_for(now.jitter),
            code: code.clone(),
            reason: reason.clone(),
        },
        // Not held yet (new, or retried by the operator): back when the
        // pause ends, to be the probe; already held: like any held message.
        Attempt::CredentialPaused { until, reason } => Decision::Hold {
            at: if meta.held {
                now.at + policy.hold_for(now.jitter)
            } else {
                (*until).max(now.at)
            },
            code: None,
            reason: reason.clone(),
        },
        Attempt::Unmappable { reason } => Decision::Hold {
            at: now.at + policy.hold_for(now.jitter),
            code: None,
            reason: format!("message cannot be mapped: {reason}"),
        },
        Attempt::SaveFailed { reason } => Decision::Reschedule {
            at: now.at
                + policy
                    .backoff
                    .jittered(meta.attempts.max(1), None, now.jitter),
            reason: format!("cannot record delivery progress: {reason}"),
        },
        Attempt::Interrupted => Decision::Release { at: now.at },
    }
}

fn dead_letter(meta: &Meta, code: Option<String>, mut reason: String) -> Decision {
    let accepted = meta.accepted_count();
    if accepted > 0 {
        reason.push_str(&format!(
            " (already accepted for {accepted} of {} recipients)",
            meta.envelope.rcpt_to.len()
        ));
    }
    Decision::DeadLetter { code, reason }
}

#[cfg(test)]
mod tests;
