//! Postmark mapping rules, one behaviour per test, through the public `map`.

use postrelay::mapping::postmark::{FALLBACK_TEXT_BODY, map};
use postrelay::mapping::{Mapped, MappingError, MappingOptions};
use postrelay::message::Envelope;
use serde_json::{Value, json};

fn opts() -> MappingOptions {
    MappingOptions {
        default_stream: "outbound".into(),
        ignore_unsupported: false,
        max_message_size: 10 << 20,
    }
}

fn envelope(rcpt: &[&str]) -> Envelope {
    Envelope {
        mail_from: "sender@example.com".into(),
        rcpt_to: rcpt.iter().map(|r| r.to_string()).collect(),
    }
}

/// A message from `headers` (one per line) and `body`, with CRLF endings.
fn eml(headers: &str, body: &str) -> Vec<u8> {
    format!("From: Sender <sender@example.com>\n{headers}\n\n{body}")
        .replace('\n', "\r\n")
        .into_bytes()
}

fn map_ok(rcpt: &[&str], raw: &[u8]) -> Mapped {
    map(&envelope(rcpt), raw, &opts()).expect("message should map")
}

fn only_body(rcpt: &[&str], raw: &[u8]) -> Value {
    let mapped = map_ok(rcpt, raw);
    assert_eq!(mapped.calls.len(), 1);
    mapped.calls[0].body()
}

fn limit_text(raw: &[u8]) -> String {
    match map(&envelope(&["r@example.com"]), raw, &opts()) {
        Err(MappingError::Limit(text)) => text,
        other => panic!("expected a Limit error, got {other:?}"),
    }
}

#[test]
fn every_envelope_recipient_is_in_exactly_one_call_of_at_most_fifty() {
    let rcpt: Vec<String> = (0..120).map(|i| format!("u{i}@example.net")).collect();
    let refs: Vec<&str> = rcpt.iter().map(String::as_str).collect();
    let mapped = map_ok(
        &refs,
        &eml("To: u5@example.net, Other <other@example.net>", "hi"),
    );
    let sizes: Vec<usize> = mapped.calls.iter().map(|c| c.recipients.len()).collect();
    assert_eq!(sizes, [50, 50, 20]);
    let all: Vec<&String> = mapped.calls.iter().flat_map(|c| &c.recipients).collect();
    assert_eq!(
        all,
        rcpt.iter().collect::<Vec<_>>(),
        "order kept, each recipient once"
    );
    for call in &mapped.calls {
        let body = call.body();
        let mut sent: Vec<&str> = ["To", "Cc", "Bcc"]
            .iter()
            .filter_map(|f| body[*f].as_str())
            .flat_map(|list| list.split(", "))
            .map(|a| {
                a.rsplit_once('<')
                    .map_or(a, |(_, addr)| addr.trim_end_matches('>'))
            })
            .collect();
        sent.sort();
        let mut expected: Vec<&str> = call.recipients.iter().map(String::as_str).collect();
        expected.sort();
        assert_eq!(
            sent, expected,
            "To+Cc+Bcc hold exactly this call's recipients"
        );
    }
    assert_eq!(mapped.calls[0].body()["To"], "u5@example.net");
    assert!(
        mapped.calls[1].body().get("To").is_none(),
        "To is omitted when empty"
    );
}

#[test]
fn address_in_both_to_and_cc_is_listed_once() {
    let body = only_body(&["a@x.org"], &eml("To: A <a@x.org>\nCc: a@X.org", "hi"));
    assert_eq!(body["To"], "A <a@x.org>");
    assert!(body.get("Cc").is_none() && body.get("Bcc").is_none());
}

#[test]
fn no_envelope_recipients_left_means_no_calls() {
    assert!(map_ok(&[], &eml("To: a@x.org", "hi")).calls.is_empty());
}

#[test]
fn second_tag_is_dropped_with_a_warning_when_unsupported_features_are_ignored() {
    let raw = eml("X-PM-Tag: first\nX-PM-Tag: second", "hi");
    let opts = MappingOptions {
        ignore_unsupported: true,
        ..opts()
    };
    let mapped = map(&envelope(&["r@x.org"]), &raw, &opts).unwrap();
    assert_eq!(mapped.calls[0].body()["Tag"], "first");
    assert!(
        mapped.warnings[0].contains("second"),
        "{:?}",
        mapped.warnings
    );
}

#[test]
fn metadata_limits_name_the_offending_field() {
    let long_key = format!("X-PM-Metadata-{}: v", "k".repeat(21));
    assert!(
        limit_text(&eml(&long_key, "x")).contains("is 21 characters, Postmark allows at most 20")
    );
    let long_value = format!("X-PM-Metadata-key: {}", "v".repeat(81));
    assert!(limit_text(&eml(&long_value, "x")).contains("value for \"key\" is 81 characters"));
    let same = limit_text(&eml("X-PM-Metadata-Plan: a\nX-PM-Metadata-plan: b", "x"));
    assert!(same.contains("\"Plan\" and \"plan\""), "{same}");
    let ten: String = (0..10)
        .map(|i| format!("X-PM-Metadata-k{i}: {}\n", "v".repeat(80)))
        .collect();
    let body = only_body(&["r@x.org"], &eml(ten.trim_end(), "x"));
    assert_eq!(body["Metadata"].as_object().unwrap().len(), 10);
}

#[test]
fn track_opens_is_a_json_bool_and_bad_values_are_refused() {
    let body = only_body(&["r@x.org"], &eml("X-PM-TrackOpens: FALSE", "x"));
    assert_eq!(body["TrackOpens"], json!(false));
    assert!(limit_text(&eml("X-PM-TrackOpens: yes", "x")).contains("\"yes\""));
}

#[test]
fn track_links_accepts_any_case_and_sends_the_canonical_spelling() {
    for (input, canonical) in [
        ("none", "None"),
        ("HTMLANDTEXT", "HtmlAndText"),
        ("htmlOnly", "HtmlOnly"),
        ("textonly", "TextOnly"),
    ] {
        let body = only_body(
            &["r@x.org"],
            &eml(&format!("X-PM-TrackLinks: {input}"), "x"),
        );
        assert_eq!(body["TrackLinks"], canonical);
    }
    assert!(limit_text(&eml("X-PM-TrackLinks: always", "x")).contains("\"always\" is not one of"));
}

#[test]
fn stream_header_overrides_the_configured_default() {
    assert_eq!(
        only_body(&["r@x.org"], &eml("X-PM-Message-Stream: broadcast", "x"))["MessageStream"],
        "broadcast"
    );
    assert_eq!(
        only_body(&["r@x.org"], &eml("Subject: s", "x"))["MessageStream"],
        "outbound"
    );
}

#[test]
fn control_and_structural_headers_are_never_forwarded() {
    let headers = "To: r@x.org\nSubject: s\nDate: Mon, 1 Jan 2024 00:00:00 +0000\nMessage-ID: <m@x>\n\
        MIME-Version: 1.0\nReceived: from a by b\nReturn-Path: <b@x>\nSender: s@x.org\nDKIM-Signature: v=1\n\
        X-Postal-MsgID: abc\nX-PM-KeepID: false\nContent-Type: text/plain\nX-Kept: yes\nPrecedence: bulk";
    let mapped = map_ok(&["r@x.org"], &eml(headers, "x"));
    assert_eq!(
        mapped.calls[0].body()["Headers"],
        json!([{"Name": "X-Kept", "Value": "yes"}, {"Name": "Precedence", "Value": "bulk"}])
    );
    assert!(mapped.warnings.is_empty(), "{:?}", mapped.warnings);
}

#[test]
fn unknown_postmark_headers_are_refused_naming_the_header_or_dropped_with_a_note() {
    let raw = eml("X-PM-Tag: t\nX-PM-Unknown: ?\nx-pm-trackclicks: yes", "x");
    let err = map(&envelope(&["r@x.org"]), &raw, &opts()).unwrap_err();
    assert_eq!(
        err.smtp_reply(),
        (
            550,
            "5.7.1",
            "unsupported feature: unknown Postmark header X-PM-Unknown".into()
        )
    );
    let lenient = MappingOptions {
        ignore_unsupported: true,
        ..opts()
    };
    let mapped = map(&envelope(&["r@x.org"]), &raw, &lenient).unwrap();
    let body = mapped.calls[0].body();
    assert_eq!(body["Tag"], "t");
    assert!(body.get("Headers").is_none(), "{body}");
    assert_eq!(
        mapped.warnings,
        [
            "unknown Postmark header X-PM-Unknown dropped (ignore_unsupported_features = true)",
            "unknown Postmark header x-pm-trackclicks dropped (ignore_unsupported_features = true)"
        ]
    );
}

#[test]
fn notes_name_the_lenient_setting_only_when_it_is_set() {
    // Without ignore_unsupported, a note about a fallback says nothing of it.
    let raw = b"To: r@x.org\r\nX-PM-TrackOpens: true\r\nX-PM-TrackOpens: false\r\n\r\nhi".to_vec();
    let mapped = map_ok(&["r@x.org"], &raw);
    assert_eq!(mapped.warnings.len(), 2, "{:?}", mapped.warnings);
    assert!(
        mapped
            .warnings
            .iter()
            .all(|w| !w.contains("ignore_unsupported_features")),
        "{:?}",
        mapped.warnings
    );
}

#[test]
fn keep_id_forwards_the_message_id_in_message_order() {
    let body = only_body(
        &["r@x.org"],
        &eml("X-A: 1\nMessage-ID: <m@x>\nX-PM-KeepID: True\nX-B: 2", "x"),
    );
    let names: Vec<&str> = body["Headers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|h| h["Name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["X-A", "Message-ID", "X-B"]);
    assert_eq!(body["Headers"][1]["Value"], "<m@x>");
}

#[test]
fn bodies_are_only_what_the_message_has() {
    let html_only = only_body(&["r@x.org"], &eml("Content-Type: text/html", "<b>hi</b>"));
    assert!(html_only.get("TextBody").is_none());
    let text_only = only_body(&["r@x.org"], &eml("Subject: s", "hi"));
    assert!(text_only.get("HtmlBody").is_none());
}

#[test]
fn message_without_visible_body_gets_the_invisible_fallback() {
    for raw in [
        eml("Subject: s", ""),
        eml("Subject: s", "  \n\t\n"),
        eml("Content-Type: text/html", ""),
    ] {
        let body = only_body(&["r@x.org"], &raw);
        assert_eq!(body["TextBody"], FALLBACK_TEXT_BODY);
        assert!(
            !FALLBACK_TEXT_BODY.trim().is_empty(),
            "the fallback must not be whitespace"
        );
    }
}

#[test]
fn oversized_body_and_message_are_refused_naming_the_limit() {
    let big = "a".repeat(5 * 1024 * 1024 + 1);
    assert!(limit_text(&eml("Subject: s", &big)).starts_with("TextBody is 5242881 bytes"));
    let raw = eml("Subject: s", "hello");
    let small = MappingOptions {
        max_message_size: 100,
        ..opts()
    };
    let err = map(&envelope(&["r@x.org"]), &raw, &small).unwrap_err();
    assert!(
        err.to_string()
            .ends_with("bytes after base64 exceeds Postmark's 100-byte limit"),
        "{err}"
    );
    assert_eq!(err.smtp_reply().0, 554);
}

#[test]
fn forbidden_attachment_types_are_refused_in_any_case_and_with_trailing_dots() {
    for name in ["setup.EXE", "x.scr", "tool.exe.", "a.tar.Bat"] {
        let raw = eml(
            "Content-Type: multipart/mixed; boundary=b",
            &format!(
                "--b\nContent-Type: text/plain\n\nhi\n--b\nContent-Type: application/octet-stream\nContent-Disposition: attachment; filename=\"{name}\"\n\nMZ\n--b--\n"
            ),
        );
        assert!(limit_text(&raw).contains("forbids"), "{name}");
    }
}

#[test]
fn forbidden_types_are_found_in_every_decoded_name_whatever_the_encoding() {
    let headers = [
        // Folded filename value.
        "Content-Type: application/octet-stream\nContent-Disposition: attachment; filename=\n \"setup.exe\"",
        // RFC 2231 continuations and percent-encoding, upper case.
        "Content-Type: application/octet-stream\nContent-Disposition: attachment;\n filename*0*=utf-8''setup;\n filename*1*=%2E%45%58%45",
        // RFC 2047 encoded words across a fold.
        "Content-Type: application/octet-stream\nContent-Disposition: attachment;\n filename=\"=?utf-8?B?c2V0dXA=?=\n =?utf-8?Q?=2Eexe?=\"",
        // A harmless filename, but the type's name* says .exe.
        "Content-Type: application/octet-stream; name*=utf-8''run.Exe\nContent-Disposition: attachment; filename=notes.pdf",
        // The type's plain name only.
        "Content-Type: application/octet-stream; name=\"RUN.SCR\"",
    ];
    for part in headers {
        let raw = eml(
            "Content-Type: multipart/mixed; boundary=b",
            &format!("--b\nContent-Type: text/plain\n\nhi\n--b\n{part}\n\nMZ\n--b--\n"),
        );
        assert!(limit_text(&raw).contains("forbids"), "{part}");
    }
    let uuencoded = eml(
        "Content-Type: multipart/mixed; boundary=b",
        "--b\nContent-Type: text/plain\n\nhi\n--b\nContent-Type: application/octet-stream\nContent-Transfer-Encoding: x-uuencode\n\nbegin 644 tool.BAT\n#0V%T\n`\nend\n--b--\n",
    );
    assert!(limit_text(&uuencoded).contains(".bat"));
}

#[test]
fn unnamed_parts_get_names_postmark_accepts() {
    let raw = eml(
        "Content-Type: multipart/mixed; boundary=b",
        "--b\nContent-Type: text/plain\n\nhi\n--b\nContent-Type: application/octet-stream\n\nraw\n--b\nContent-Type: image/png\nContent-ID: <p@x>\nContent-Disposition: attachment\n\nPNG\n--b--\n",
    );
    let body = only_body(&["r@x.org"], &raw);
    assert_eq!(body["Attachments"][0]["Name"], "attachment-1.dat");
    assert_eq!(body["Attachments"][1]["Name"], "attachment-2.png");
    assert!(
        body["Attachments"][1].get("ContentID").is_none(),
        "only inline parts carry a ContentID"
    );
}

#[test]
fn missing_from_falls_back_to_the_envelope_sender_or_is_refused_for_the_null_sender() {
    let raw = b"To: r@x.org\r\nSubject: s\r\n\r\nhi".to_vec();
    let mapped = map_ok(&["r@x.org"], &raw);
    assert_eq!(mapped.calls[0].body()["From"], "sender@example.com");
    assert_eq!(mapped.warnings.len(), 1);
    let null = Envelope {
        mail_from: String::new(),
        ..envelope(&["r@x.org"])
    };
    assert!(matches!(
        map(&null, &raw, &opts()),
        Err(MappingError::Limit(_))
    ));
}

#[test]
fn two_tags_are_an_unsupported_feature_answered_with_550() {
    let err = map(
        &envelope(&["r@x.org"]),
        &eml("X-PM-Tag: a\nx-pm-tag: b", "x"),
        &opts(),
    )
    .unwrap_err();
    assert_eq!(
        err,
        MappingError::Unsupported("multiple X-PM-Tag headers".into())
    );
    assert_eq!(
        err.smtp_reply(),
        (
            550,
            "5.7.1",
            "unsupported feature: multiple X-PM-Tag headers".into()
        )
    );
}

#[test]
fn tag_longer_than_a_thousand_characters_is_refused() {
    let tag = format!("X-PM-Tag: {}", "t".repeat(1001));
    assert!(limit_text(&eml(&tag, "x")).contains("X-PM-Tag is 1001 characters"));
    let ok = format!("X-PM-Tag: {}", "t".repeat(1000));
    assert_eq!(
        only_body(&["r@x.org"], &eml(&ok, "x"))["Tag"]
            .as_str()
            .unwrap()
            .len(),
        1000
    );
}

#[test]
fn send_defaults_apply_when_no_header_asks_and_a_header_wins() {
    use postrelay::mapping::postmark::{SendDefaults, TrackLinks, map_with};
    let defaults = SendDefaults {
        tag: Some("default-tag".into()),
        track_opens: Some(false),
        track_links: Some(TrackLinks::HtmlOnly),
        metadata: [("client", "acme"), ("env", "prod")]
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .into(),
    };
    let map_body = |raw: &[u8]| {
        map_with(&envelope(&["r@x.org"]), raw, &opts(), &defaults)
            .unwrap()
            .calls[0]
            .body()
    };
    let plain = map_body(&eml("Subject: s", "x"));
    assert_eq!(plain["Tag"], "default-tag");
    assert_eq!(plain["TrackOpens"], false);
    assert_eq!(plain["TrackLinks"], "HtmlOnly");
    assert_eq!(plain["Metadata"], json!({"client": "acme", "env": "prod"}));

    let headers = "X-PM-Tag: own\nX-PM-TrackOpens: true\nX-PM-TrackLinks: None\nX-PM-Metadata-ENV: staging\nX-PM-Metadata-order: 7";
    let own = map_body(&eml(headers, "x"));
    assert_eq!(own["Tag"], "own");
    assert_eq!(own["TrackOpens"], true);
    assert_eq!(own["TrackLinks"], "None");
    assert_eq!(
        own["Metadata"],
        json!({"ENV": "staging", "client": "acme", "order": "7"}),
        "merged per key, the header winning"
    );

    // Without defaults nothing is added: the server's own settings apply.
    let bare = only_body(&["r@x.org"], &eml("Subject: s", "x"));
    for field in ["Tag", "TrackOpens", "TrackLinks", "Metadata"] {
        assert!(bare.get(field).is_none(), "{field}");
    }
}

#[test]
fn defaults_merged_with_headers_still_keep_postmark_metadata_limits() {
    use postrelay::mapping::postmark::{SendDefaults, map_with};
    let defaults = SendDefaults {
        metadata: (0..6).map(|i| (format!("d{i}"), "v".to_string())).collect(),
        ..SendDefaults::default()
    };
    let headers: Vec<String> = (0..5).map(|i| format!("X-PM-Metadata-h{i}: v")).collect();
    let err = map_with(
        &envelope(&["r@x.org"]),
        &eml(&headers.join("\n"), "x"),
        &opts(),
        &defaults,
    )
    .unwrap_err();
    assert_eq!(
        err.to_string(),
        "11 metadata fields (5 from X-PM-Metadata-* headers, 6 from [postmark] metadata), Postmark allows at most 10"
    );
}

#[test]
fn quoted_local_parts_match_their_envelope_recipient_and_keep_their_quotes() {
    let raw = eml(
        "To: \"a,b\"@example.com, \"john.doe\"@Example.COM, \"Doe, J\" <\"john doe\"@example.com>",
        "x",
    );
    // The envelope as the SMTP session stores it: RFC 5321 form, with the
    // quotes only where the local part needs them.
    let body = only_body(
        &[
            "\"a,b\"@example.com",
            "john.doe@example.com",
            "\"john doe\"@example.com",
            "\"x y\"@example.com",
        ],
        &raw,
    );
    assert_eq!(
        body["To"],
        "\"a,b\"@example.com, \"john.doe\"@Example.COM, \"Doe, J\" <\"john doe\"@example.com>"
    );
    assert_eq!(body["Bcc"], "\"x y\"@example.com");
}

#[test]
fn parts_the_walk_cannot_reach_are_refused_and_deep_nesting_is_noted() {
    let mut many = String::from("From: s@x.org\nContent-Type: multipart/mixed; boundary=b\n\n");
    for n in 0..2100 {
        many += &format!("--b\nContent-Type: text/plain; name=p{n}.txt\n\npart {n}\n");
    }
    many += "--b--\n";
    match map(&envelope(&["r@x.org"]), many.as_bytes(), &opts()) {
        Err(MappingError::Limit(text)) => assert!(
            text.starts_with("message has more than 2000 MIME parts"),
            "{text}"
        ),
        Err(other) => panic!("{other}"),
        Ok(_) => panic!("a message with parts past the limit must be refused"),
    }

    let mut deep = String::from("From: s@x.org\n");
    for level in 0..40 {
        deep += &format!("Content-Type: multipart/mixed; boundary=\"l{level}\"\n\n--l{level}\n");
    }
    deep += "\ndeep text\n";
    let mapped = map_ok(&["r@x.org"], deep.as_bytes());
    assert_eq!(
        mapped.warnings,
        ["MIME nesting deeper than 32 levels: the deepest part is sent whole as message/rfc822"]
    );
    let body = mapped.calls[0].body();
    assert_eq!(body["Attachments"][0]["ContentType"], "message/rfc822");
}
