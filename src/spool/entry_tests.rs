//! The record's per-recipient state and its versions.

use std::time::{Duration, SystemTime};

use super::*;

fn meta(rcpts: &[&str]) -> Meta {
    Meta::new(
        "01ARZ3NDEKTSV4RRFFQ69G5FAV".into(),
        Envelope {
            mail_from: "a@example.com".into(),
            rcpt_to: rcpts.iter().map(|r| r.to_string()).collect(),
        },
        10,
        SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000),
    )
}

fn strings(v: &[&str]) -> Vec<String> {
    v.iter().map(|s| s.to_string()).collect()
}

#[test]
fn recipient_state_is_recorded_per_recipient_in_envelope_order() {
    let mut m = meta(&["a@x.org", "B@x.org", "c@x.org", "d@x.org"]);
    assert_eq!(
        m.pending_recipients(),
        strings(&["a@x.org", "B@x.org", "c@x.org", "d@x.org"])
    );
    m.record_accepted(&strings(&["b@X.org"]), Some("api-1"));
    m.record_refused(&strings(&["d@x.org"]), Some("300"), "bad address");
    m.record_refused(&strings(&["c@x.org"]), None, "later refusal");
    assert_eq!(m.pending_recipients(), strings(&["a@x.org"]));
    assert_eq!((m.accepted_count(), m.refused_count()), (1, 2));
    // First in envelope order, not first recorded.
    assert_eq!(m.first_refusal(), Some((None, "later refusal")));
    assert_eq!(
        m.state_of("B@x.org"),
        &RecipientState::Accepted {
            api_id: Some("api-1".into())
        }
    );
    m.reset_refused();
    assert_eq!(
        m.pending_recipients(),
        strings(&["a@x.org", "c@x.org", "d@x.org"])
    );
    assert_eq!(m.first_refusal(), None);
}

#[test]
fn envelope_states_agree_with_state_of_even_for_a_record_naming_an_address_twice() {
    let mut m = meta(&["a@x.org", "B@x.org", "c@x.org", "\"d e\"@x.org"]);
    m.record_accepted(&strings(&["b@X.org"]), Some("api-1"));
    // A hand-edited record that names one address twice: the first wins.
    m.recipients.push(Recipient {
        address: "B@x.org".into(),
        state: RecipientState::Refused {
            code: None,
            reason: "second".into(),
        },
    });
    m.record_refused(&strings(&["\"d e\"@x.org"]), Some("406"), "inactive");
    let states = m.envelope_states();
    assert_eq!(states.len(), 4);
    for (rcpt, state) in states {
        assert_eq!(state, m.state_of(rcpt), "{rcpt}");
    }
}

#[test]
fn a_lone_recipient_has_its_recorded_state_however_the_record_spells_it() {
    let mut m = meta(&["a@x.org"]);
    assert_eq!(m.envelope_states(), [("a@x.org", &RecipientState::Pending)]);
    m.record_refused(&strings(&["A@X.org"]), Some("406"), "inactive");
    let refused = RecipientState::Refused {
        code: Some("406".into()),
        reason: "inactive".into(),
    };
    assert_eq!(m.envelope_states(), [("a@x.org", &refused)]);
    // A record spelling the address in another case still names it.
    m.recipients[0].address = "A@X.ORG".into();
    assert_eq!(m.envelope_states(), [("a@x.org", &refused)]);
    assert_eq!(m.first_refusal(), Some((Some("406"), "inactive")));
}

#[test]
fn a_record_round_trips_and_its_id_comes_from_the_file_name() {
    let mut m = meta(&["a@x.org", "b@x.org"]);
    m.record_accepted(&strings(&["a@x.org"]), None);
    m.id = "../../outside/precious".into();
    let name = "01BX5ZZKBKACTAV9WEVGEMMVRZ";
    let Decoded::Current(back) = decode(name, &encode(&m)).unwrap() else {
        panic!("current version");
    };
    assert_eq!(back.id, name);
    assert_eq!(back.version, META_VERSION);
    assert_eq!(back.pending_recipients(), strings(&["b@x.org"]));
    assert_eq!(back.credential, Credential::Global);
}

#[test]
fn a_version_1_record_loads_with_its_recipient_state_converted() {
    let v1 = r#"{
      "version": 1,
      "id": "01ARZ3NDEKTSV4RRFFQ69G5FAV",
      "envelope": {"mail_from": "a@example.com", "rcpt_to": ["a@x.org", "b@x.org", "c@x.org"]},
      "size": 42,
      "received_at": "2026-01-01T00:00:00.000Z",
      "attempts": 2,
      "next_attempt_at": "2026-01-01T00:05:00.000Z",
      "last_error": "503",
      "delivered": ["A@x.org"],
      "refused": ["b@x.org"],
      "refusal": {"code": "406", "reason": "inactive recipient", "failed_at": "2026-01-01T00:01:00.000Z"},
      "held": false,
      "failure": null
    }"#;
    let Decoded::Current(m) = decode("01ARZ3NDEKTSV4RRFFQ69G5FAV", v1.as_bytes()).unwrap() else {
        panic!("converted");
    };
    assert_eq!(m.version, META_VERSION);
    assert_eq!(m.pending_recipients(), strings(&["c@x.org"]));
    assert_eq!(m.accepted_count(), 1);
    assert_eq!(m.first_refusal(), Some((Some("406"), "inactive recipient")));
    assert_eq!((m.attempts, m.size), (2, 42));
    assert_eq!(m.last_error.as_deref(), Some("503"));
}

#[test]
fn a_record_of_a_newer_version_is_reported_not_decoded() {
    let v3 = r#"{"version": 3, "id": "x", "something": "new"}"#;
    assert!(matches!(
        decode("01ARZ3NDEKTSV4RRFFQ69G5FAV", v3.as_bytes()),
        Ok(Decoded::Newer(3))
    ));
    assert!(decode("01ARZ3NDEKTSV4RRFFQ69G5FAV", br#"{"version": 0}"#).is_err());
    assert!(decode("01ARZ3NDEKTSV4RRFFQ69G5FAV", b"{broken").is_err());
}

#[test]
fn a_passthrough_token_stays_out_of_debug_and_labels() {
    let token = "0a1b2c3d-0000-4000-8000-00000000abcd";
    let c = Credential::Passthrough(token.into());
    assert!(!format!("{c:?}").contains(token));
    let label = c.label();
    assert!(label.starts_with("passthrough "), "{label}");
    assert!(!label.contains("0a1b2c3d"), "{label}");
    assert_eq!(
        label,
        Credential::Passthrough(token.into()).label(),
        "stable"
    );
    assert_ne!(
        label,
        Credential::Passthrough("other-token-1234".into()).label()
    );
    assert_eq!(Credential::User("billing".into()).label(), "user billing");
}

#[test]
fn credentials_round_trip_and_old_records_read_as_global() {
    for c in [
        Credential::Global,
        Credential::User("billing".into()),
        Credential::Passthrough("tok-123456".into()),
    ] {
        let json = serde_json::to_string(&c).unwrap();
        assert_eq!(
            serde_json::from_str::<Credential>(&json).unwrap(),
            c,
            "{json}"
        );
    }
    assert_eq!(
        serde_json::to_string(&Credential::Global).unwrap(),
        "\"global\""
    );
    assert_eq!(
        serde_json::to_string(&Credential::User("billing".into())).unwrap(),
        "{\"user\":\"billing\"}"
    );
}
