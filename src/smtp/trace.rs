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
    let protocol = match (t.tls, t.user.is_some()) {
        (false, false) => "ESMTP",
        (true, false) => "ESMTPS",
        (false, true) => "ESMTPA",
        (true, true) => "ESMTPSA",
    };
    let helo = clean(t.helo.unwrap_or("unknown"));
    let mut out = format!(
        "Received: from {helo} ({})\r\n\tby {} (postrelay) with {protocol}",
        t.client,
        clean(t.hostname)
    );
    if let Some(user) = t.user {
        out.push_str(&format!(" (authenticated as {})", clean(user)));
    }
    let date = httpdate::fmt_http_date(t.at).replace(" GMT", " +0000");
    out.push_str(&format!("\r\n\tid {}; {date}\r\n", clean(t.id)));
    out
}

/// Printable ASCII without spaces, parentheses or backslashes; at most 255.
fn clean(text: &str) -> String {
    let cleaned: String = text
        .chars()
        .take(255)
        .map(|c| {
            if c.is_ascii_graphic() && !matches!(c, '(' | ')' | '\\') {
                c
            } else {
                '?'
            }
        })
        .collect();
    if cleaned.is_empty() {
        "unknown".into()
    } else {
        cleaned
    }
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
