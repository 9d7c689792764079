//! Postal send/raw rules: the message goes through byte for byte apart from
//! the documented header rewrites.

use base64::Engine as _;
use postrelay::mapping::postal::{NULL_SENDER, map};
use postrelay::mapping::{Mapped, MappingError, MappingOptions};
use postrelay::message::Envelope;

fn opts() -> MappingOptions {
    MappingOptions {
        default_stream: "outbound".into(),
        ignore_unsupported: false,
        max_message_size: 14 << 20,
    }
}

fn envelope(mail_from: &str, rcpt: &[&str]) -> Envelope {
    Envelope {
        mail_from: mail_from.into(),
        rcpt_to: rcpt.iter().map(|r| r.to_string()).collect(),
    }
}

fn map_ok(raw: &[u8], opts: &MappingOptions) -> Mapped {
    map(&envelope("s@x.org", &["r@x.org"]), raw, opts).expect("message should map")
}

/// The message bytes Postal would receive.
fn sent_data(mapped: &Mapped) -> Vec<u8> {
    let body = mapped.calls[0].body();
    base64::engine::general_purpose::STANDARD
        .decode(body["data"].as_str().unwrap())
        .unwrap()
}

const PLAIN: &[u8] = b"From: a@x.org\r\nTo: r@x.org\r\nSubject: =?UTF-8?Q?caf=C3=A9?=\r\n\r\nbody \xe9 8-bit\r\n.\r\n";

#[test]
fn message_without_x_pm_headers_is_sent_byte_for_byte() {
    assert_eq!(sent_data(&map_ok(PLAIN, &opts())), PLAIN);
}

#[test]
fn bare_lf_line_endings_become_crlf() {
    let raw = b"From: a@x.org\nSubject: s\n\nline1\nline2\r\nline3\n";
    assert_eq!(
        sent_data(&map_ok(raw, &opts())),
        b"From: a@x.org\r\nSubject: s\r\n\r\nline1\r\nline2\r\nline3\r\n"
    );
}

#[test]
fn tag_is_renamed_keeping_its_value_and_folding() {
    let raw = b"From: a@x.org\r\nx-pm-tag:  welcome\r\n\tseries\r\nTo: r@x.org\r\n\r\nbody\r\n";
    let expected =
        b"From: a@x.org\r\nX-Postal-Tag:  welcome\r\n\tseries\r\nTo: r@x.org\r\n\r\nbody\r\n";
    assert_eq!(sent_data(&map_ok(raw, &opts())), expected);
}

#[test]
fn postal_msgid_is_removed_with_its_continuation_lines() {
    let raw = b"X-Postal-MsgID: abc\r\n  def\r\n\tghi\r\nFrom: a@x.org\r\nX-POSTAL-MSGID: x\r\n\r\nbody\r\n";
    assert_eq!(
        sent_data(&map_ok(raw, &opts())),
        b"From: a@x.org\r\n\r\nbody\r\n"
    );
}

#[test]
fn only_the_header_section_is_rewritten() {
    let raw = b"From: a@x.org\r\n\r\nX-PM-Tag: in body\r\nX-Postal-MsgID: in body\r\nX-PM-TrackOpens: true\r\n";
    assert_eq!(sent_data(&map_ok(raw, &opts())), raw);
}

#[test]
fn features_postal_cannot_express_are_refused_naming_the_header() {
    for header in [
        "X-PM-TrackOpens: true",
        "X-PM-TrackLinks: None",
        "X-PM-Metadata-Order: 7",
        "X-PM-Message-Stream: s",
    ] {
        let raw = format!("From: a@x.org\r\n{header}\r\n\r\nbody\r\n");
        let err = map(&envelope("s@x.org", &["r@x.org"]), raw.as_bytes(), &opts()).unwrap_err();
        let name = header.split(':').next().unwrap();
        assert_eq!(err, MappingError::Unsupported(name.into()));
        assert_eq!(err.smtp_reply().0, 550);
    }
}

#[test]
fn ignored_unsupported_headers_are_removed_with_a_warning() {
    let raw = b"From: a@x.org\r\nX-PM-TrackOpens: true\r\nX-PM-Metadata-a: 1\r\n\r\nbody\r\n";
    let mapped = map_ok(
        raw,
        &MappingOptions {
            ignore_unsupported: true,
            ..opts()
        },
    );
    assert_eq!(sent_data(&mapped), b"From: a@x.org\r\n\r\nbody\r\n");
    assert_eq!(mapped.warnings.len(), 2);
}

#[test]
fn multiple_tags_are_refused_or_reduced_to_the_first() {
    let raw = b"X-PM-Tag: one\r\nFrom: a@x.org\r\nX-PM-Tag: two\r\n\r\nbody\r\n";
    let err = map(&envelope("s@x.org", &["r@x.org"]), raw, &opts()).unwrap_err();
    assert_eq!(
        err,
        MappingError::Unsupported("multiple X-PM-Tag headers".into())
    );
    let mapped = map_ok(
        raw,
        &MappingOptions {
            ignore_unsupported: true,
            ..opts()
        },
    );
    assert_eq!(
        sent_data(&mapped),
        b"X-Postal-Tag: one\r\nFrom: a@x.org\r\n\r\nbody\r\n"
    );
    assert_eq!(mapped.warnings.len(), 1);
}

#[test]
fn keep_id_is_removed_silently() {
    let mapped = map_ok(
        b"X-PM-KeepID: true\r\nMessage-ID: <m@x>\r\n\r\nb\r\n",
        &opts(),
    );
    assert_eq!(sent_data(&mapped), b"Message-ID: <m@x>\r\n\r\nb\r\n");
    assert!(mapped.warnings.is_empty());
}

#[test]
fn all_recipients_go_in_one_call_without_duplicates() {
    let rcpt: Vec<String> = (0..120)
        .map(|i| format!("u{i}@x.org"))
        .chain(["U1@X.ORG".to_string()])
        .collect();
    let refs: Vec<&str> = rcpt.iter().map(String::as_str).collect();
    let mapped = map(&envelope("s@x.org", &refs), PLAIN, &opts()).unwrap();
    assert_eq!(mapped.calls.len(), 1);
    assert_eq!(mapped.calls[0].recipients.len(), 120);
    assert_eq!(
        mapped.calls[0].body()["rcpt_to"].as_array().unwrap().len(),
        120
    );
}

#[test]
fn bounce_is_false_for_a_sender_and_true_for_the_null_sender() {
    let normal = map(&envelope("s@x.org", &["r@x.org"]), PLAIN, &opts()).unwrap();
    assert_eq!(normal.calls[0].body()["mail_from"], "s@x.org");
    assert_eq!(normal.calls[0].body()["bounce"], false);
    let dsn = map(&envelope("", &["r@x.org"]), PLAIN, &opts()).unwrap();
    assert_eq!(
        dsn.calls[0].body()["mail_from"],
        NULL_SENDER,
        "Postal refuses a blank mail_from"
    );
    assert_eq!(dsn.calls[0].body()["bounce"], true);
}

#[test]
fn raw_size_over_the_limit_is_refused() {
    let small = MappingOptions {
        max_message_size: 10,
        ..opts()
    };
    let err = map(&envelope("s@x.org", &["r@x.org"]), PLAIN, &small).unwrap_err();
    assert!(
        matches!(&err, MappingError::Limit(t) if t.contains("exceeds Postal's 10-byte limit")),
        "{err}"
    );
}

#[test]
fn headers_only_message_without_blank_line_is_rewritten() {
    let mapped = map_ok(b"From: a@x.org\r\nX-PM-Tag: t", &opts());
    assert_eq!(sent_data(&mapped), b"From: a@x.org\r\nX-Postal-Tag: t");
}

#[test]
fn bcc_header_is_removed_so_recipients_do_not_see_it() {
    let raw = b"From: a@x.org\r\nTo: r@x.org\r\nBcc: hidden@x.org,\r\n other@x.org\r\nSubject: s\r\n\r\nBcc: in the body stays\r\n";
    let mapped = map(
        &envelope("a@x.org", &["r@x.org", "hidden@x.org", "other@x.org"]),
        raw,
        &opts(),
    )
    .unwrap();
    assert_eq!(
        sent_data(&mapped),
        b"From: a@x.org\r\nTo: r@x.org\r\nSubject: s\r\n\r\nBcc: in the body stays\r\n"
    );
    assert_eq!(
        mapped.calls[0].body()["rcpt_to"].as_array().unwrap().len(),
        3
    );
}
