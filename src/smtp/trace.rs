//! The `Received:` trace header (RFC 5321 §4.4) prepended to every accepted
//! message when `smtp.received_header` is on: client address and HELO, our
//! host name, the protocol (RFC 3848: `ESMTP`, `ESMTPS` with TLS, `ESMTPA`
//! / `ESMTPSA` authenticated), the authenticated user and the queue id.
//!
//! Invariant: the header is one valid field whatever the client sent: its
//! HELO and user name are reduced to printable ASCII without parentheses,
//! and the field is folded, CRLF-terminated.

use std::net::IpAddr;
use std::time::SystemTime;

/// What the trace header says about one message.
#[derive(Debug, Clone)]
pub struct Trace<'a> {
    pub helo: Option<&'a str>,
    pub client: IpAddr,
    pub hostname: &'a str,
    pub tls: bool,
    pub user: Option<&'a str>,
    pub id: &'a str,
    pub at: SystemTime,
}

/// The header field, CRLF-terminated.
pub fn received(t: &Trace<'_>) -> String {
    use std::fmt::Write;
    let protocol = match (t.tls, t.user.is_some()) {
        (false, false) => "ESMTP",
        (true, false) => "ESMTPS",
        (false, true) => "ESMTPA",
        (true, true) => "ESMTPSA",
    };
    let mut out = String::with_capacity(200);
    out.push_str("Received: from ");
    push_clean(&mut out, t.helo.unwrap_or("unknown"));
    // Writing to a String cannot fail.
    let _ = write!(out, " ({})\r\n\tby ", t.client);
    push_clean(&mut out, t.hostname);
    out.push_str(" (postrelay) with ");
    out.push_str(protocol);
    if let Some(user) = t.user {
        out.push_str(" (authenticated as ");
        push_clean(&mut out, user);
        out.push(')');
    }
    out.push_str("\r\n\tid ");
    push_clean(&mut out, t.id);
    let date = httpdate::HttpDate::from(t.at).to_string();
    out.push_str("; ");
    out.push_str(date.strip_suffix(" GMT").unwrap_or(&date));
    out.push_str(" +0000\r\n");
    out
}

/// `text` as printable ASCII without spaces, parentheses or backslashes
/// (each other character a `?`), at most 255 of them; `unknown` when empty.
fn push_clean(out: &mut String, text: &str) {
    if text.is_empty() {
        out.push_str("unknown");
        return;
    }
    out.extend(text.chars().take(255).map(|c| {
        if c.is_ascii_graphic() && !matches!(c, '(' | ')' | '\\') {
            c
        } else {
            '?'
        }
    }));
}

#[cfg(test)]
mod tests {
    use std::time::{Duration, UNIX_EPOCH};

    use super::*;

    fn trace<'a>(helo: Option<&'a str>, tls: bool, user: Option<&'a str>) -> Trace<'a> {
        Trace {
            helo,
            client: "192.0.2.7".parse().unwrap(),
            hostname: "relay.local",
            tls,
            user,
            id: "01ABC",
            at: UNIX_EPOCH + Duration::from_secs(1_700_000_000),
        }
    }

    #[test]
    fn the_field_names_client_protocol_user_and_id() {
        assert_eq!(
            received(&trace(Some("app.example"), false, None)),
            "Received: from app.example (192.0.2.7)\r\n\tby relay.local (postrelay) with ESMTP\r\n\tid 01ABC; Tue, 14 Nov 2023 22:13:20 +0000\r\n"
        );
        let r = received(&trace(Some("app"), true, Some("billing")));
        assert!(r.contains("with ESMTPSA (authenticated as billing)"), "{r}");
        assert!(received(&trace(None, true, None)).contains("from unknown (192.0.2.7)"));
    }

    #[test]
    fn client_text_cannot_break_the_field() {
        let r = received(&trace(Some("evil)\r\nBcc: x@y (z"), false, Some("a b\x1b")));
        assert_eq!(r.matches("\r\n").count(), 3, "{r:?}");
        assert!(!r.contains('\x1b'));
        assert!(r.contains("from evil???Bcc:?x@y??z (192.0.2.7)"), "{r:?}");
    }
}
