use std::time::SystemTime;

use super::*;
use crate::message::Envelope;

const MIN: Duration = Duration::from_secs(60);

fn policy() -> Policy {
    Policy {
        backoff: Backoff::new(Duration::from_secs(10), Duration::from_secs(600)),
        max_age: Duration::from_secs(3600),
    }
}

/// A message to `n` recipients after `attempts` attempts.
fn meta(n: usize, attempts: u32) -> Meta {
    let envelope = Envelope {
        mail_from: "s@example.com".into(),
        rcpt_to: (0..n).map(|i| format!("r{i}@example.org")).collect(),
    };
    let mut meta = Meta::new("01TEST".into(), envelope, 10, SystemTime::now());
    meta.attempts = attempts;
    meta
}

fn rcpts(range: std::ops::Range<usize>) -> Vec<String> {
    range.map(|i| format!("r{i}@example.org")).collect()
}

fn transient(retry_after: Option<Duration>) -> Attempt {
    Attempt::Transient {
        reason: "503".into(),
        retry_after,
    }
}

#[test]
fn each_attempt_result_leads_to_its_decision() {
    let t0 = Instant::now();
    let young = Now {
        at: t0,
        age: MIN,
        jitter: 1.0,
    };
    let old = Now {
        age: Duration::from_secs(3600),
        ..young
    };
    let no_jitter = Now {
        jitter: 0.0,
        ..young
    };
    let mut refused_some = meta(3, 1);
    refused_some.record_accepted(&rcpts(0..2), Some("pm-1"));
    refused_some.record_refused(&rcpts(2..3), Some("300"), "Invalid 'To'");
    let mut refused_all = meta(1, 1);
    refused_all.record_refused(&rcpts(0..1), Some("406"), "inactive");
    let held_at = t0 + Duration::from_secs(660);
    let mut held = meta(1, 1);
    held.held = true;

    let cases: Vec<(&str, Meta, Attempt, Now, Decision)> = vec![
        ("all answered, none refused", meta(2, 1), Attempt::Answered, young, Decision::Complete),
        (
            "all answered, some refused: dead letter naming both counts",
            refused_some.clone(),
            Attempt::Answered,
            young,
            Decision::DeadLetter {
                code: Some("300".into()),
                reason: "Invalid 'To' (refused for 1 recipients) (already accepted for 2 of 3 recipients)".into(),
            },
        ),
        (
            "all refused: the API's own reason",
            refused_all,
            Attempt::Answered,
            young,
            Decision::DeadLetter {
                code: Some("406".into()),
                reason: "inactive".into(),
            },
        ),
        (
            "transient, young: the backoff ceiling at full jitter",
            meta(1, 2),
            transient(None),
            young,
            Decision::Reschedule {
                at: t0 + Duration::from_secs(20),
                reason: "503".into(),
            },
        ),
        (
            "transient: Retry-After is a floor",
            meta(1, 1),
            transient(Some(Duration::from_secs(90))),
            no_jitter,
            Decision::Reschedule {
                at: t0 + Duration::from_secs(90),
                reason: "503".into(),
            },
        ),
        (
            "transient past max_age: dead letter",
            meta(1, 7),
            transient(None),
            old,
            Decision::DeadLetter {
                code: None,
                reason: "gave up after 7 attempts over 1h: 503".into(),
            },
        ),
        (
            "transient past max_age keeps the earlier refusal",
            refused_some,
            transient(None),
            old,
            Decision::DeadLetter {
                code: Some("300".into()),
                reason: "gave up after 1 attempts over 1h: 503; 1 recipients were refused: Invalid 'To' (already accepted for 2 of 3 recipients)".into(),
            },
        ),
        (
            "config fault: held for retry_max plus jitter",
            meta(1, 1),
            Attempt::ConfigFault { code: Some("10".into()), reason: "bad token".into() },
            young,
            Decision::Hold { at: held_at, code: Some("10".into()), reason: "bad token".into() },
        ),
        (
            "config fault past max_age: still held, never dead",
            meta(1, 1),
            Attempt::ConfigFault { code: Some("10".into()), reason: "bad token".into() },
            old,
            Decision::Hold { at: held_at, code: Some("10".into()), reason: "bad token".into() },
        ),
        (
            "credential paused, not held yet: held until the pause ends",
            meta(1, 0),
            Attempt::CredentialPaused { until: t0 + MIN, reason: "paused".into() },
            old,
            Decision::Hold { at: t0 + MIN, code: None, reason: "paused".into() },
        ),
        (
            "credential paused, already held: held for retry_max plus jitter",
            held,
            Attempt::CredentialPaused { until: t0 + MIN, reason: "paused".into() },
            young,
            Decision::Hold { at: held_at, code: None, reason: "paused".into() },
        ),
        (
            "mapping failed or panicked, even past max_age: held",
            meta(1, 0),
            Attempt::Unmappable { reason: "two tags".into() },
            old,
            Decision::Hold {
                at: held_at,
                code: None,
                reason: "message cannot be mapped: two tags".into(),
            },
        ),
        (
            "progress not saved: retried, even past max_age",
            meta(3, 1),
            Attempt::SaveFailed { reason: "disk full".into() },
            old,
            Decision::Reschedule {
                at: t0 + Duration::from_secs(10),
                reason: "cannot record delivery progress: disk full".into(),
            },
        ),
        (
            "interrupted by shutdown: given back unchanged, due now",
            meta(1, 0),
            Attempt::Interrupted,
            old,
            Decision::Release { at: t0 },
        ),
    ];
    for (name, meta, attempt, now, want) in cases {
        assert_eq!(decide(&meta, &attempt, now, &policy()), want, "{name}");
    }
}

#[test]
fn hold_jitter_spreads_over_a_tenth_of_retry_max() {
    let p = policy();
    assert_eq!(p.hold_for(0.0), Duration::from_secs(600));
    assert_eq!(p.hold_for(0.5), Duration::from_secs(630));
    assert_eq!(p.hold_for(1.0), Duration::from_secs(660));
}
