//! `postrelay sendmail`: what cron, PHP's `mail()` and other programs that
//! call `/usr/sbin/sendmail` expect. Reads the message from stdin, works out
//! the envelope (`-f`, arguments, `-t` headers), fills in missing `From`,
//! `Date` and `Message-ID`, and submits it to the local daemon over SMTP.
//! Exit codes follow sysexits(3), as sendmail's callers expect.

use std::io::Read;
use std::time::SystemTime;

use super::SendmailArgs;
use super::submit::{Client, SubmitError};

pub const EX_USAGE: u8 = 64;
pub const EX_DATAERR: u8 = 65;
pub const EX_NOUSER: u8 = 67;
pub const EX_UNAVAILABLE: u8 = 69;
pub const EX_IOERR: u8 = 74;
pub const EX_TEMPFAIL: u8 = 75;

/// The envelope and the CRLF message to submit.
#[derive(Debug, PartialEq)]
pub struct Prepared {
    pub from: String,
    pub rcpts: Vec<String>,
    pub message: Vec<u8>,
}

/// Pure: stdin bytes + options → what to submit.
pub fn prepare(
    args: &SendmailArgs,
    input: &[u8],
    login: &str,
    host: &str,
    now: SystemTime,
) -> Result<Prepared, String> {
    let ignore_dots = args.ignore_dots || args.options.iter().any(|o| o == "i");
    let mut lines: Vec<&[u8]> = Vec::new();
    for line in input.split(|&b| b == b'\n') {
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        if !ignore_dots && line == b"." {
            break;
        }
        lines.push(line);
    }
    if input.ends_with(b"\n") && lines.last() == Some(&&b""[..]) {
        lines.pop();
    }
    let (headers, body) = split_header_block(&lines);

    // Header fields with their continuation lines, as (name, whole field lines).
    let mut fields: Vec<(String, Vec<&[u8]>)> = Vec::new();
    for line in headers {
        if line.first().is_some_and(|b| *b == b' ' || *b == b'\t') {
            if let Some((_, f)) = fields.last_mut() {
                f.push(line);
            }
            continue;
        }
        let name = line.split(|&b| b == b':').next().unwrap_or_default();
        fields.push((
            String::from_utf8_lossy(name).trim().to_ascii_lowercase(),
            vec![line],
        ));
    }
    let has = |n: &str| fields.iter().any(|(name, _)| name == n);

    let header_block: Vec<u8> = fields
        .iter()
        .flat_map(|(_, f)| f.iter().flat_map(|l| l.iter().copied().chain(*b"\r\n")))
        .collect();
    let mut head = header_block.clone();
    head.extend_from_slice(b"\r\n");
    let parsed = mail_parser::MessageParser::default().parse_headers(&head[..]);
    let addrs = |which: &str| -> Vec<String> {
        let list = parsed.as_ref().and_then(|m| match which {
            "to" => m.to(),
            "cc" => m.cc(),
            "bcc" => m.bcc(),
            _ => m.from(),
        });
        list.map(|a| {
            a.iter()
                .filter_map(|x| x.address().map(str::to_string))
                .collect()
        })
        .unwrap_or_default()
    };

    let mut rcpts: Vec<String> = args
        .recipients
        .iter()
        .flat_map(|r| r.split(','))
        .map(|r| r.trim().to_string())
        .filter(|r| !r.is_empty())
        .collect();
    if args.read_headers {
        for which in ["to", "cc", "bcc"] {
            rcpts.extend(addrs(which));
        }
    }
    let mut seen = std::collections::HashSet::new();
    rcpts.retain(|r| seen.insert(r.to_ascii_lowercase()));
    if rcpts.is_empty() {
        return Err("no recipients: give them as arguments or use -t".into());
    }

    let from = args
        .from
        .clone()
        .or_else(|| addrs("from").into_iter().next())
        .unwrap_or_else(|| format!("{login}@{host}"));
    let from = from
        .trim_start_matches('<')
        .trim_end_matches('>')
        .to_string();

    let mut out = Vec::with_capacity(input.len() + 256);
    if !has("from") {
        match &args.full_name {
            Some(name) => out.extend_from_slice(
                format!("From: \"{}\" <{from}>\r\n", name.replace(['"', '\\'], "")).as_bytes(),
            ),
            None => out.extend_from_slice(format!("From: {from}\r\n").as_bytes()),
        }
    }
    if !has("date") {
        out.extend_from_slice(format!("Date: {}\r\n", httpdate::fmt_http_date(now)).as_bytes());
    }
    if !has("message-id") {
        out.extend_from_slice(
            format!("Message-ID: <{}@{host}>\r\n", ulid::Ulid::generate()).as_bytes(),
        );
    }
    for (name, field) in &fields {
        if args.read_headers && name == "bcc" {
            continue;
        }
        for l in field {
            out.extend_from_slice(l);
            out.extend_from_slice(b"\r\n");
        }
    }
    out.extend_from_slice(b"\r\n");
    for l in body {
        out.extend_from_slice(l);
        out.extend_from_slice(b"\r\n");
    }
    Ok(Prepared {
        from,
        rcpts,
        message: out,
    })
}

/// Splits input lines into the header block and the body. The header block
/// is the leading run of header fields (`Name: value`) and their
/// continuation lines; it ends at a blank line, which belongs to neither
/// part, or at the first other line, which starts the body. Input that does
/// not open with a header field is all body (`echo hello | sendmail r@x`).
fn split_header_block<'a, 'b>(lines: &'b [&'a [u8]]) -> (&'b [&'a [u8]], &'b [&'a [u8]]) {
    let mut end = 0;
    for (i, line) in lines.iter().enumerate() {
        let continuation = i > 0 && line.first().is_some_and(|b| *b == b' ' || *b == b'\t');
        if !(continuation || is_header_field(line)) {
            break;
        }
        end = i + 1;
    }
    let body_start = match lines.get(end) {
        Some([]) => end + 1,
        _ => end,
    };
    (&lines[..end], &lines[body_start..])
}

/// `Name: value`, the name printable ASCII (33..=126) other than `:` (RFC 5322 §2.2).
fn is_header_field(line: &[u8]) -> bool {
    match line.iter().position(|&b| b == b':') {
        Some(colon) if colon > 0 => line[..colon].iter().all(|b| (33..=126).contains(b)),
        _ => false,
    }
}

/// Runs `postrelay sendmail`; returns the process exit code.
pub fn run(args: &SendmailArgs, server: &str) -> u8 {
    let mut input = Vec::new();
    if let Err(e) = std::io::stdin().read_to_end(&mut input) {
        eprintln!("sendmail: cannot read the message from stdin: {e}");
        return EX_IOERR;
    }
    let login = std::env::var("USER")
        .or_else(|_| std::env::var("LOGNAME"))
        .unwrap_or_else(|_| "root".into());
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_string())
        .unwrap_or_else(|_| "localhost".into());
    let prepared = match prepare(args, &input, &login, &host, SystemTime::now()) {
        Ok(p) => p,
        Err(e) => {
            eprintln!("sendmail: {e}");
            return EX_USAGE;
        }
    };
    let result = Client::connect(server)
        .and_then(|mut c| c.send(&prepared.from, &prepared.rcpts, &prepared.message));
    match result {
        Ok(text) => {
            if args.verbose {
                eprintln!("sendmail: {text}");
            }
            0
        }
        Err(SubmitError::Connect(e)) => {
            eprintln!(
                "sendmail: cannot reach postrelay at {server}: {e} (is the daemon running? see --server)"
            );
            EX_UNAVAILABLE
        }
        Err(SubmitError::Io(e)) => {
            eprintln!("sendmail: connection to postrelay at {server} failed: {e}");
            EX_TEMPFAIL
        }
        Err(SubmitError::Refused(r)) => {
            eprintln!(
                "sendmail: postrelay refused the message at {}: {} {}",
                r.during, r.code, r.text
            );
            match (r.code, r.during) {
                (400..=499, _) => EX_TEMPFAIL,
                (_, "RCPT TO") => EX_NOUSER,
                _ => EX_DATAERR,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(f: impl FnOnce(&mut SendmailArgs)) -> SendmailArgs {
        let mut a = SendmailArgs::default();
        f(&mut a);
        a
    }

    fn text(p: &Prepared) -> String {
        String::from_utf8(p.message.clone()).unwrap()
    }

    #[test]
    fn t_flag_takes_recipients_from_headers_and_removes_bcc() {
        let input = b"To: A <a@x.example>, b@x.example\nCc: c@x.example\nBcc: hidden@x.example\nSubject: s\n\nbody\n";
        let p = prepare(
            &args(|a| a.read_headers = true),
            input,
            "cron",
            "host",
            SystemTime::UNIX_EPOCH,
        )
        .unwrap();
        assert_eq!(
            p.rcpts,
            vec![
                "a@x.example",
                "b@x.example",
                "c@x.example",
                "hidden@x.example"
            ]
        );
        let t = text(&p);
        assert!(!t.contains("Bcc") && !t.contains("hidden"), "{t}");
        assert!(t.contains("Subject: s\r\n\r\nbody\r\n"), "{t}");
        assert!(
            t.starts_with(
                "From: cron@host\r\nDate: Thu, 01 Jan 1970 00:00:00 GMT\r\nMessage-ID: <"
            ),
            "{t}"
        );
        assert_eq!(p.from, "cron@host");
    }

    #[test]
    fn lone_dot_ends_input_unless_i() {
        let input = b"Subject: s\n\nline\n.\nafter\n";
        let p = prepare(
            &args(|a| a.recipients = vec!["r@x".into()]),
            input,
            "u",
            "h",
            SystemTime::UNIX_EPOCH,
        )
        .unwrap();
        assert!(!text(&p).contains("after"));
        let p = prepare(
            &args(|a| {
                a.recipients = vec!["r@x".into()];
                a.options = vec!["i".into()]
            }),
            input,
            "u",
            "h",
            SystemTime::UNIX_EPOCH,
        )
        .unwrap();
        assert!(text(&p).contains("line\r\n.\r\nafter\r\n"), "{}", text(&p));
    }

    #[test]
    fn f_and_full_name_build_the_sender() {
        let p = prepare(
            &args(|a| {
                a.recipients = vec!["r@x".into()];
                a.from = Some("app@example.com".into());
                a.full_name = Some("The App".into());
            }),
            b"Subject: s\n\nb\n",
            "u",
            "h",
            SystemTime::UNIX_EPOCH,
        )
        .unwrap();
        assert_eq!(p.from, "app@example.com");
        assert!(text(&p).starts_with("From: \"The App\" <app@example.com>\r\n"));
    }

    #[test]
    fn no_recipients_is_a_usage_error() {
        assert!(
            prepare(
                &SendmailArgs::default(),
                b"Subject: s\n\nb\n",
                "u",
                "h",
                SystemTime::UNIX_EPOCH
            )
            .is_err()
        );
    }

    fn to_r(input: &[u8]) -> Prepared {
        prepare(
            &args(|a| a.recipients = vec!["r@x".into()]),
            input,
            "u",
            "h",
            SystemTime::UNIX_EPOCH,
        )
        .unwrap()
    }

    /// The added From, Date and Message-ID, then what follows them.
    fn after_added_headers(p: &Prepared) -> String {
        let t = text(p);
        let rest = &t[t.find("Message-ID: <").expect("a Message-ID was added")..];
        rest[rest.find("\r\n").unwrap() + 2..].to_string()
    }

    #[test]
    fn input_without_headers_is_all_body() {
        let p = to_r(b"hello\n");
        assert_eq!(after_added_headers(&p), "\r\nhello\r\n");
        // A first line that only looks like a header (space in the name) is body too.
        let p = to_r(b"Dear customer: thanks\nsecond line\n");
        assert_eq!(
            after_added_headers(&p),
            "\r\nDear customer: thanks\r\nsecond line\r\n"
        );
        // So is a leading blank line, which ends an (empty) header block.
        let p = to_r(b"\nbody only\n");
        assert_eq!(after_added_headers(&p), "\r\nbody only\r\n");
    }

    #[test]
    fn first_line_that_is_not_a_header_starts_the_body() {
        let p = to_r(b"Subject: s\n  folded\nX-Tag: t\nhello there\nmore\n");
        assert_eq!(
            after_added_headers(&p),
            "Subject: s\r\n  folded\r\nX-Tag: t\r\n\r\nhello there\r\nmore\r\n"
        );
    }

    #[test]
    fn headers_blank_line_and_body_are_kept_as_they_are() {
        let p = to_r(b"Subject: s\nX-Tag: t\n\nhello\n\nNot-A-Header: body\n");
        assert_eq!(
            after_added_headers(&p),
            "Subject: s\r\nX-Tag: t\r\n\r\nhello\r\n\r\nNot-A-Header: body\r\n"
        );
    }

    #[test]
    fn header_field_names_are_printable_ascii_without_colon() {
        assert!(is_header_field(b"Subject: x"));
        assert!(is_header_field(b"X-Weird!#name:x"));
        assert!(!is_header_field(b": no name"));
        assert!(!is_header_field(b"Two words: x"));
        assert!(!is_header_field(b"no colon at all"));
        assert!(!is_header_field(b"caf\xc3\xa9: x"));
    }
}
