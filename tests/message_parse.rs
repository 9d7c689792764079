//! `message::parse`: what the rest of the relay may rely on.

use postrelay::message::parse::{Mailbox, parse};

/// Test messages are written with `\n`; SMTP delivers CRLF.
fn crlf(text: &str) -> Vec<u8> {
    text.replace('\n', "\r\n").into_bytes()
}

#[test]
fn boundary_text_in_the_middle_of_a_line_is_content_not_a_delimiter() {
    let raw = crlf(
        "From: a@example.com\nContent-Type: multipart/alternative; boundary=\"sep\"\n\n\
         --sep\nContent-Type: text/plain\n\nLine one mentions --sep in the middle.\nLine two.\n\
         --sep\nContent-Type: text/html\n\n<p>html</p>\n--sep--\n",
    );
    let parsed = parse(&raw);
    assert_eq!(
        parsed.text_body.as_deref(),
        Some("Line one mentions --sep in the middle.\r\nLine two.")
    );
    assert_eq!(parsed.html_body.as_deref(), Some("<p>html</p>"));
}

#[test]
fn unknown_headers_are_decoded_and_unfolded_with_their_spelling_kept() {
    let raw = crlf(
        "From: a@example.com\nx-CUSTOM-thing: =?UTF-8?Q?gr=C3=BC=C3=9Fe?=\n  and more\n\
         Message-Id: <id-1@example.com>\n\nbody\n",
    );
    let parsed = parse(&raw);
    let custom: Vec<_> = parsed
        .custom_headers()
        .map(|h| (h.name.as_str(), h.value.as_str()))
        .collect();
    // RFC 5322 unfolding removes the line break only: both blanks stay.
    assert_eq!(custom, [("x-CUSTOM-thing", "grüße  and more")]);
    assert_eq!(parsed.headers[2].name, "Message-Id");
    assert_eq!(parsed.message_id.as_deref(), Some("<id-1@example.com>"));
}

#[test]
fn encoded_line_breaks_never_reach_decoded_values() {
    let raw = crlf("From: a@example.com\nSubject: =?UTF-8?B?bGluZQ0KQmNjOiBldmlsQHguY29t?=\n\nx\n");
    assert_eq!(
        parse(&raw).subject.as_deref(),
        Some("line  Bcc: evil@x.com")
    );
}

#[test]
fn html_only_message_has_no_synthesised_text_body() {
    let raw = crlf("From: a@example.com\nContent-Type: text/html\n\n<p>only html</p>\n");
    let parsed = parse(&raw);
    assert_eq!(parsed.text_body, None);
    assert_eq!(parsed.html_body.as_deref(), Some("<p>only html</p>\r\n"));
}

#[test]
fn text_part_marked_attachment_is_an_attachment_with_its_original_bytes() {
    let raw = [
        &crlf(
            "From: a@example.com\nContent-Type: multipart/mixed; boundary=b\n\n--b\n\
             Content-Type: text/plain\n\nhello\n--b\n\
             Content-Type: text/csv; charset=iso-8859-1\nContent-Disposition: attachment; filename=p.csv\n\n",
        )[..],
        b"caf\xe9;1\r\n--b--\r\n",
    ]
    .concat();
    let parsed = parse(&raw);
    assert_eq!(parsed.text_body.as_deref(), Some("hello"));
    let att = &parsed.attachments[0];
    assert_eq!(
        (att.name.as_deref(), att.content_type.as_str()),
        (Some("p.csv"), "text/csv; charset=iso-8859-1")
    );
    assert_eq!(att.data, b"caf\xe9;1");
    assert!(!att.inline);
}

#[test]
fn second_text_part_becomes_an_attachment_not_a_second_body() {
    let raw = crlf(
        "From: a@example.com\nContent-Type: multipart/mixed; boundary=b\n\n--b\n\
         Content-Type: text/plain\n\nfirst\n--b\nContent-Type: text/plain\n\nsecond\n--b--\n",
    );
    let parsed = parse(&raw);
    assert_eq!(parsed.text_body.as_deref(), Some("first"));
    assert_eq!(parsed.attachments.len(), 1);
    assert_eq!(parsed.attachments[0].data, b"second");
}

#[test]
fn base64_attachment_cut_off_by_a_missing_closing_boundary_is_still_decoded() {
    let raw = crlf(
        "From: a@example.com\nContent-Type: multipart/mixed; boundary=b\n\n--b\n\
         Content-Type: text/plain\n\nsee file\n--b\nContent-Type: application/pdf; name=f.pdf\n\
         Content-Transfer-Encoding: base64\n\nJVBERi0x\nLjQK\n",
    );
    let parsed = parse(&raw);
    assert_eq!(parsed.attachments[0].data, b"%PDF-1.4\n");
    assert_eq!(parsed.attachments[0].content_type, "application/pdf");
}

#[test]
fn address_groups_are_flattened_and_addressless_entries_dropped() {
    let raw = crlf(
        "From: a@example.com\nTo: team: x@example.com, Y <y@example.com>;, root\nCc: undisclosed-recipients:;\n\nx\n",
    );
    let parsed = parse(&raw);
    let y = Mailbox {
        name: Some("Y".into()),
        addr: "y@example.com".into(),
    };
    assert_eq!(
        parsed.to,
        [
            Mailbox {
                name: None,
                addr: "x@example.com".into()
            },
            y
        ]
    );
    assert!(parsed.cc.is_empty());
}

#[test]
fn repeated_to_headers_are_combined_and_the_first_from_wins() {
    let raw = crlf(
        "From: first@example.com\nFrom: second@example.com\nTo: a@example.com\nTo: b@example.com\n\nx\n",
    );
    let parsed = parse(&raw);
    assert_eq!(parsed.from[0].addr, "first@example.com");
    assert_eq!(parsed.to.len(), 2);
}

#[test]
fn inline_part_keeps_its_content_id_without_brackets() {
    let raw = crlf(
        "From: a@example.com\nContent-Type: multipart/related; boundary=b\n\n--b\n\
         Content-Type: text/html\n\n<img src=cid:logo>\n--b\nContent-Type: image/gif\n\
         Content-ID: <logo@x>\nContent-Transfer-Encoding: base64\n\nR0lGODlh\n--b--\n",
    );
    let att = &parse(&raw).attachments[0];
    assert_eq!(
        (att.content_id.as_deref(), att.inline, att.name.as_deref()),
        (Some("logo@x"), true, None)
    );
    assert_eq!(att.data, b"GIF89a");
}

#[test]
fn header_only_input_has_an_empty_text_body() {
    let headers_only = parse(b"From: a@example.com\r\nSubject: s\r\n");
    assert_eq!(headers_only.subject.as_deref(), Some("s"));
    assert_eq!(headers_only.text_body.as_deref(), Some(""));
}

#[test]
fn text_without_any_header_becomes_the_text_body() {
    let parsed = parse(b"just some text\nsecond line\n");
    assert!(parsed.headers.is_empty());
    assert_eq!(
        parsed.text_body.as_deref(),
        Some("just some text\nsecond line\n")
    );
}

#[test]
fn body_lines_after_headers_without_a_blank_line_are_kept() {
    let parsed = parse(b"Subject: hi\nFrom: a@example.com\nhello there\nmore\n");
    assert_eq!(parsed.subject.as_deref(), Some("hi"));
    assert_eq!(parsed.text_body.as_deref(), Some("hello there\nmore\n"));
}

#[test]
fn many_header_fields_parse_in_linear_time() {
    let mut raw = String::from("From: a@example.com\r\n");
    for i in 0..100_000 {
        raw += &format!("X-H{i}: v\r\n");
    }
    raw += "\r\nbody\r\n";
    let started = std::time::Instant::now();
    let parsed = parse(raw.as_bytes());
    assert_eq!(parsed.headers.len(), 100_001);
    assert!(
        started.elapsed() < std::time::Duration::from_secs(10),
        "{:?}",
        started.elapsed()
    );
}

#[test]
fn display_names_decode_in_any_charset_and_quoted_local_parts_keep_their_quotes() {
    let raw = [
        &b"From: =?ks_c_5601-1987?B?x9Gxub7u?= <k@example.kr>\r\nTo: \"a,b\"@example.com, =?x-sjis?B?k/qWe4zq?= <\"j doe\"@example.jp>\r\nCc: "[..],
        b"Gr\xfc\xdfe <g@example.de>\r\n\r\nx\r\n",
    ]
    .concat();
    let parsed = parse(&raw);
    let names = |list: &[Mailbox]| -> Vec<(Option<String>, String)> {
        list.iter()
            .map(|m| (m.name.clone(), m.addr.clone()))
            .collect()
    };
    assert_eq!(
        names(&parsed.from),
        [(Some("한국어".into()), "k@example.kr".into())]
    );
    assert_eq!(
        names(&parsed.to),
        [
            (None, "\"a,b\"@example.com".into()),
            (Some("日本語".into()), "\"j doe\"@example.jp".into())
        ]
    );
    // Undeclared 8-bit that is not UTF-8 reads as Windows-1252.
    assert_eq!(
        names(&parsed.cc),
        [(Some("Grüße".into()), "g@example.de".into())]
    );
}
