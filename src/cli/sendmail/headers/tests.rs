//! Table tests of `prepare`: what real callers send, and what an argument
//! can never do to the header block.

use super::*;
use crate::cli::sendmail::args::parse;
use crate::cli::sendmail::input::read_head;

fn local(admin: Option<&str>) -> Local {
    Local {
        login: "www-data".into(),
        domain: "host.example".into(),
        admin: admin.map(str::to_string),
    }
}

fn run(args: &[&str], input: &str, admin: Option<&str>) -> Result<(Envelope, String), String> {
    let o = parse(&args.iter().map(|s| s.to_string()).collect::<Vec<_>>()).unwrap();
    let head = read_head(
        &mut std::io::Cursor::new(input.as_bytes()),
        o.ignore_dots,
        10_000,
    )
    .unwrap();
    let p = prepare(&o, &head, &local(admin), SystemTime::UNIX_EPOCH)?;
    Ok((p.envelope, String::from_utf8(p.header).unwrap()))
}

/// The header text after the generated Message-ID.
fn after_id(h: &str) -> &str {
    let at = h
        .find("Message-ID: <")
        .map(|i| i + h[i..].find("\r\n").unwrap() + 2);
    &h[at.unwrap_or(0)..]
}

#[test]
fn debian_cron_mail_is_qualified_and_keeps_its_from_name() {
    let input = "From: root (Cron Daemon)\nTo: root\nSubject: Cron <root@h> ls\n\nout\n";
    let args = ["-FCronDaemon", "-i", "-B8BITMIME", "-oem", "root"];
    let (env, h) = run(&args, input, None).unwrap();
    assert_eq!(env.mail_from, "root@host.example");
    assert_eq!(env.rcpt_to, ["root@host.example"]);
    assert!(
        h.starts_with("Date: Thu, 01 Jan 1970 00:00:00 GMT\r\nMessage-ID: <"),
        "{h}"
    );
    assert_eq!(
        after_id(&h),
        "From: \"Cron Daemon\" <root@host.example>\r\nTo: root@host.example\r\nSubject: Cron <root@h> ls\r\n\r\n"
    );
    let (env, _) = run(&args, input, Some("ops@example.com")).unwrap();
    assert_eq!(env.rcpt_to, ["ops@example.com"]);
}

#[test]
fn t_takes_recipients_from_headers_and_removes_bcc() {
    let input =
        "To: A <a@x.example>, b@x.example\nCc: c@x.example\nBcc: hidden@x.example\nSubject: s\n\n";
    let (env, h) = run(&["-t", "-i", "-f", "app@example.com"], input, None).unwrap();
    assert_eq!(
        env.rcpt_to,
        [
            "a@x.example",
            "b@x.example",
            "c@x.example",
            "hidden@x.example"
        ]
    );
    assert_eq!(env.mail_from, "app@example.com");
    assert!(!h.contains("Bcc") && !h.contains("hidden"), "{h}");
    assert!(h.starts_with("From: app@example.com\r\n"), "{h}");
}

#[test]
fn recipients_in_name_form_and_comma_lists_are_addresses() {
    let (env, _) = run(
        &[
            "Some Name <r@example.org>",
            "a@x.example, B <b@x.example>",
            "root",
        ],
        "",
        None,
    )
    .unwrap();
    assert_eq!(
        env.rcpt_to,
        [
            "r@example.org",
            "a@x.example",
            "b@x.example",
            "root@host.example"
        ]
    );
}

#[test]
fn the_sender_comes_from_f_then_from_then_the_login() {
    let cases: &[(&[&str], &str, &str)] = &[
        (
            &["-f", "Bounce <b@example.com>", "r@x"],
            "From: a@example.com\n\n",
            "b@example.com",
        ),
        (&["-r", "b@example.com", "r@x"], "", "b@example.com"),
        (&["-f", "<>", "r@x"], "", ""),
        (&["r@x"], "From: App <a@example.com>\n\n", "a@example.com"),
        (&["r@x"], "Subject: s\n\n", "www-data@host.example"),
    ];
    for (args, input, want) in cases {
        assert_eq!(
            run(args, input, None).unwrap().0.mail_from,
            *want,
            "{args:?}"
        );
    }
}

#[test]
fn a_full_name_cannot_add_a_header_field() {
    let o = Options {
        full_name: Some("Bob\r\nX-PM-Message-Stream: broadcast".into()),
        recipients: vec!["r@x".into()],
        ..Options::default()
    };
    let p = prepare(&o, &Head::default(), &local(None), SystemTime::UNIX_EPOCH).unwrap();
    let h = String::from_utf8(p.header).unwrap();
    assert!(
        h.starts_with("From: \"Bob  X-PM-Message-Stream: broadcast\" <www-data@host.example>\r\n"),
        "{h}"
    );
    assert!(!h.contains("\r\nX-PM"), "{h}");
}

#[test]
fn field_never_emits_a_line_break() {
    for value in ["a\r\nb", "a\nb", "a\rb", "a\0b", "\u{85}x", "ok"] {
        let line = field("Subject", value);
        let crlf = line.windows(2).filter(|w| w == b"\r\n").count();
        assert_eq!(crlf, 1, "{value:?}");
        assert!(line.ends_with(b"\r\n"));
        assert!(
            !line[..line.len() - 2]
                .iter()
                .any(|&b| b == b'\r' || b == b'\n' || b == 0)
        );
    }
}

#[test]
fn display_names_are_quoted_or_encoded() {
    assert_eq!(
        mailbox(Some("The \"App\""), "a@x"),
        "\"The \\\"App\\\"\" <a@x>"
    );
    assert_eq!(mailbox(Some("Zoë"), "a@x"), "=?UTF-8?B?Wm/Dqw==?= <a@x>");
    assert_eq!(mailbox(None, "a@x"), "a@x");
}

#[test]
fn no_recipients_or_bad_ones_are_refused() {
    assert!(
        run(&[], "Subject: s\n\n", None)
            .unwrap_err()
            .starts_with("no recipients")
    );
    assert!(run(&["a b"], "", None).is_err());
}
