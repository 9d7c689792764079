//! Conditions handled once instead of once per message. The backend's gate
//! ([`Gate::backend`]) pauses claiming for every message after a 429 with a
//! long `Retry-After`. A credential's gate ([`Gate::credential`], one per
//! credential, the global one included) pauses only the mail that uses that
//! credential after the API rejected it (or throttled it for long): a
//! rejected credential never holds another credential's mail. When a pause
//! ends, exactly one message goes through as a probe; its answer reopens the
//! gate or pauses it for another period. Without this every worker would
//! park inside the pacer or spend one failing call per queued message.
//!
//! Invariant: while paused, a gate lets nothing through; at most one probe
//! per gate is in flight.

use std::sync::Mutex;
use std::time::Duration;

use tokio::time::Instant;

use crate::backends::Outcome;

/// A `Retry-After` above this pauses claiming instead of the pacer alone.
pub const LONG_RETRY_AFTER: Duration = Duration::from_secs(10);

/// The probe period after a configuration fault (or `retry_max`, if shorter):
/// one call every 10 s tells when the operator has fixed the credential, and
/// picks up a message the operator retried, without a call per held message.
pub const FAULT_PROBE_PERIOD: Duration = Duration::from_secs(10);

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    Open,
    /// Nothing is claimed before `until`; then one probe.
    Paused {
        until: Instant,
        period: Duration,
    },
    /// The probe is in flight.
    Probing {
        period: Duration,
    },
}

/// How many entries the engine may claim now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Admit {
    /// As many as there are free workers.
    All,
    /// Exactly one: the probe. Report its end with [`Gate::probe_ended`]
    /// when it made no call, or [`Gate::observe`] when it did.
    Probe,
    /// None before this time.
    Until(Instant),
}

#[derive(Debug)]
pub struct Gate {
    state: Mutex<State>,
    /// Whether a credentials fault pauses this gate: a credential's own
    /// gate, not the backend's.
    faults_pause: bool,
}

impl Gate {
    /// The gate of one credential: a rejection or a long `Retry-After`
    /// pauses the mail that uses it.
    pub fn credential() -> Gate {
        Gate {
            state: Mutex::new(State::Open),
            faults_pause: true,
        }
    }

    /// The backend's gate: only a long `Retry-After` pauses it (for every
    /// message); a credentials fault is no verdict on it.
    pub fn backend() -> Gate {
        Gate {
            faults_pause: false,
            ..Gate::credential()
        }
    }

    pub fn admit(&self, now: Instant) -> Admit {
        let mut state = self.state.lock().expect("gate lock");
        match *state {
            State::Open => Admit::All,
            State::Paused { until, period } if now >= until => {
                *state = State::Probing { period };
                Admit::Probe
            }
            State::Paused { until, .. } => Admit::Until(until),
            // The probe's answer decides; look again then.
            State::Probing { period } => Admit::Until(now + period),
        }
    }

    /// No probe was claimed after all (nothing due): probe at the next chance.
    pub fn probe_unused(&self, now: Instant) {
        let mut state = self.state.lock().expect("gate lock");
        if let State::Probing { period } = *state {
            *state = State::Paused { until: now, period };
        }
    }

    /// The probe ended without an API answer (the message could not be
    /// loaded or mapped): another message probes at once.
    pub fn probe_ended(&self, now: Instant) {
        self.probe_unused(now);
    }

    /// Learns from one API answer. `hold` (`retry_max`) caps the probe
    /// period after a configuration fault.
    pub fn observe(&self, outcome: &Outcome, now: Instant, hold: Duration) {
        let mut state = self.state.lock().expect("gate lock");
        let pause = match outcome {
            Outcome::ConfigFault { .. } if self.faults_pause => Some(hold.min(FAULT_PROBE_PERIOD)),
            Outcome::Transient {
                throttled: true,
                retry_after: Some(wait),
                ..
            } if *wait > LONG_RETRY_AFTER => Some(*wait),
            Outcome::Delivered { .. } | Outcome::Permanent { .. } => None,
            // No verdict on what this gate watches: a probe tries again
            // next period.
            Outcome::Transient { .. } | Outcome::ConfigFault { .. } => match *state {
                State::Probing { period } => Some(period),
                _ => return,
            },
        };
        *state = match pause {
            Some(period) => {
                let until = now + period;
                match *state {
                    State::Paused { until: later, .. } if later > until => return,
                    _ => State::Paused { until, period },
                }
            }
            None => State::Open,
        };
    }

    /// Open: every message may go (looks without changing anything).
    pub fn is_open(&self) -> bool {
        *self.state.lock().expect("gate lock") == State::Open
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const HOLD: Duration = FAULT_PROBE_PERIOD;

    fn fault() -> Outcome {
        Outcome::ConfigFault {
            code: None,
            reason: "bad token".into(),
        }
    }

    fn throttled(secs: u64) -> Outcome {
        Outcome::Transient {
            reason: "429".into(),
            retry_after: Some(Duration::from_secs(secs)),
            throttled: true,
        }
    }

    fn delivered() -> Outcome {
        Outcome::Delivered {
            api_id: None,
            note: None,
        }
    }

    #[test]
    fn a_fault_pauses_then_one_probe_decides() {
        let gate = Gate::credential();
        let t0 = Instant::now();
        assert_eq!(gate.admit(t0), Admit::All);
        gate.observe(&fault(), t0, HOLD);
        assert_eq!(gate.admit(t0 + HOLD / 2), Admit::Until(t0 + HOLD));
        assert_eq!(gate.admit(t0 + HOLD), Admit::Probe);
        // While the probe is out, nothing else.
        assert!(matches!(gate.admit(t0 + HOLD), Admit::Until(_)));
        gate.observe(&fault(), t0 + HOLD, HOLD);
        assert_eq!(gate.admit(t0 + HOLD), Admit::Until(t0 + HOLD * 2));
        assert_eq!(gate.admit(t0 + HOLD * 2), Admit::Probe);
        gate.observe(&delivered(), t0 + HOLD * 2, HOLD);
        assert_eq!(gate.admit(t0 + HOLD * 2), Admit::All);
    }

    #[test]
    fn only_a_long_retry_after_pauses_claiming() {
        let gate = Gate::credential();
        let t0 = Instant::now();
        gate.observe(&throttled(2), t0, HOLD);
        assert_eq!(gate.admit(t0), Admit::All);
        gate.observe(&throttled(120), t0, Duration::from_secs(300));
        assert_eq!(gate.admit(t0), Admit::Until(t0 + Duration::from_secs(120)));
    }

    #[test]
    fn an_unused_or_empty_probe_is_handed_to_the_next_message() {
        let gate = Gate::credential();
        let t0 = Instant::now();
        gate.observe(&fault(), t0, HOLD);
        assert_eq!(gate.admit(t0 + HOLD), Admit::Probe);
        gate.probe_unused(t0 + HOLD);
        assert_eq!(gate.admit(t0 + HOLD), Admit::Probe);
        gate.probe_ended(t0 + HOLD);
        assert_eq!(gate.admit(t0 + HOLD), Admit::Probe);
    }

    #[test]
    fn a_credentials_fault_does_not_pause_the_backend_gate() {
        let gate = Gate::backend();
        let t0 = Instant::now();
        gate.observe(&fault(), t0, HOLD);
        assert_eq!(gate.admit(t0), Admit::All, "other credentials' mail flows");
        // A probe after a long Retry-After that meets a fault: no verdict on
        // the throttling, so the next period probes again.
        gate.observe(&throttled(120), t0, HOLD);
        let t1 = t0 + Duration::from_secs(120);
        assert_eq!(gate.admit(t1), Admit::Probe);
        gate.observe(&fault(), t1, HOLD);
        assert_eq!(gate.admit(t1), Admit::Until(t1 + Duration::from_secs(120)));
        gate.observe(&delivered(), t1, HOLD);
        assert_eq!(gate.admit(t1), Admit::All);
    }

    #[test]
    fn a_probe_without_verdict_waits_another_period() {
        let gate = Gate::credential();
        let t0 = Instant::now();
        gate.observe(&fault(), t0, HOLD);
        assert_eq!(gate.admit(t0 + HOLD), Admit::Probe);
        let network = Outcome::Transient {
            reason: "refused".into(),
            retry_after: None,
            throttled: false,
        };
        gate.observe(&network, t0 + HOLD, HOLD);
        assert_eq!(gate.admit(t0 + HOLD), Admit::Until(t0 + HOLD * 2));
    }
}
