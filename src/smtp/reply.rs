//! Every SMTP reply postrelay sends, in one place (RFC 5321 codes with
//! RFC 3463 enhanced status codes). Replies name the limit or feature that
//! applies, never a path, URL or credential.

use std::io::Write as _;

use super::capabilities::Capabilities;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reply {
    pub code: u16,
    /// Enhanced status code (`2.0.0`); empty for the greeting.
    pub status: &'static str,
    pub text: String,
    /// Extra lines (EHLO capabilities), sent before `text`'s line as continuation lines.
    pub lines: Vec<String>,
}

impl Reply {
    pub fn new(code: u16, status: &'static str, text: impl Into<String>) -> Reply {
        Reply {
            code,
            status,
            text: text.into(),
            lines: Vec::new(),
        }
    }

    /// Appends the wire form (CRLF-terminated, multi-line when needed) to `out`.
    pub fn write_to(&self, out: &mut Vec<u8>) {
        let total = self.lines.len() + 1;
        let first = std::iter::once(&self.text).chain(self.lines.iter());
        for (i, line) in first.enumerate() {
            let sep = if i + 1 == total { ' ' } else { '-' };
            // Writing into a Vec cannot fail.
            let _ = if self.status.is_empty() || i > 0 {
                write!(out, "{}{}{}\r\n", self.code, sep, line)
            } else {
                write!(out, "{}{}{} {}\r\n", self.code, sep, self.status, line)
            };
        }
    }
}

pub fn greeting(host: &str) -> Reply {
    Reply::new(220, "", format!("{host} ESMTP postrelay"))
}

pub fn ehlo(host: &str, client: &str, capabilities: &Capabilities) -> Reply {
    let mut r = Reply::new(250, "", format!("{host} greets {client}"));
    r.lines = capabilities.lines();
    r
}

pub fn helo(host: &str) -> Reply {
    Reply::new(250, "", host.to_string())
}

pub fn ok() -> Reply {
    Reply::new(250, "2.0.0", "Ok")
}
pub fn sender_ok() -> Reply {
    Reply::new(250, "2.1.0", "Sender ok")
}
pub fn recipient_ok() -> Reply {
    Reply::new(250, "2.1.5", "Recipient ok")
}
pub fn start_data() -> Reply {
    Reply::new(354, "", "End data with <CR><LF>.<CR><LF>")
}
pub fn queued(id: &str) -> Reply {
    Reply::new(250, "2.0.0", format!("Ok: queued as {id}"))
}
pub fn bye() -> Reply {
    Reply::new(221, "2.0.0", "Bye")
}
pub fn help() -> Reply {
    Reply::new(
        214,
        "2.0.0",
        "postrelay: see RFC 5321; commands EHLO HELO MAIL RCPT DATA RSET NOOP QUIT",
    )
}
pub fn vrfy() -> Reply {
    Reply::new(
        252,
        "2.5.2",
        "Cannot VRFY user, but will accept message and attempt delivery",
    )
}

pub fn too_large(max: usize) -> Reply {
    Reply::new(
        552,
        "5.3.4",
        format!("Message size exceeds fixed maximum message size of {max} bytes"),
    )
}
pub fn header_too_large(max: usize) -> Reply {
    Reply::new(
        552,
        "5.3.4",
        format!("Header block exceeds fixed maximum header size of {max} bytes"),
    )
}
/// A `BDAT` chunk too large to read and drop: the session cannot go on.
pub fn chunk_too_large(max: usize) -> Reply {
    Reply::new(
        421,
        "4.3.4",
        format!("BDAT not implemented and the chunk exceeds {max} bytes, closing connection"),
    )
}
pub fn too_many_recipients(max: usize) -> Reply {
    Reply::new(
        452,
        "4.5.3",
        format!("Too many recipients (at most {max} per message)"),
    )
}
pub fn spool_full() -> Reply {
    Reply::new(452, "4.3.1", "Insufficient system storage, try again later")
}
pub fn spool_error() -> Reply {
    Reply::new(451, "4.3.0", "Local error in processing, try again later")
}
pub fn too_many_connections() -> Reply {
    Reply::new(421, "4.3.2", "Too many connections, try again later")
}
pub fn shutting_down(host: &str) -> Reply {
    Reply::new(
        421,
        "4.3.2",
        format!("{host} shutting down, try again later"),
    )
}
pub fn timeout(host: &str) -> Reply {
    Reply::new(
        421,
        "4.4.2",
        format!("{host} timeout exceeded, closing connection"),
    )
}
pub fn too_many_transactions() -> Reply {
    Reply::new(
        421,
        "4.7.0",
        "Too many transactions in one session, closing connection",
    )
}
pub fn session_too_long(host: &str) -> Reply {
    Reply::new(
        421,
        "4.4.2",
        format!("{host} session time limit exceeded, closing connection"),
    )
}
pub fn too_many_errors() -> Reply {
    Reply::new(421, "4.7.0", "Too many errors, closing connection")
}

/// At connect: the client is outside `smtp.allowed_networks` and could not authenticate.
pub fn access_denied(host: &str) -> Reply {
    Reply::new(
        554,
        "5.7.1",
        format!("{host} does not relay for your address"),
    )
}
pub fn too_many_from_address() -> Reply {
    Reply::new(
        421,
        "4.7.0",
        "Too many connections from your address, try again later",
    )
}
pub fn auth_required() -> Reply {
    Reply::new(530, "5.7.0", "Authentication required")
}
pub fn tls_required() -> Reply {
    Reply::new(530, "5.7.0", "Must issue a STARTTLS command first")
}
pub fn encryption_required() -> Reply {
    Reply::new(
        538,
        "5.7.11",
        "Encryption required for requested authentication mechanism",
    )
}
pub fn unknown_mechanism() -> Reply {
    Reply::new(
        504,
        "5.5.4",
        "Unrecognized authentication type (PLAIN and LOGIN are offered)",
    )
}
/// A SASL challenge: empty for PLAIN, a base64 prompt for LOGIN.
pub fn auth_challenge(text: &str) -> Reply {
    Reply::new(334, "", text.to_string())
}
pub fn auth_ok() -> Reply {
    Reply::new(235, "2.7.0", "Authentication successful")
}
pub fn auth_failed() -> Reply {
    Reply::new(535, "5.7.8", "Authentication credentials invalid")
}
pub fn auth_cancelled() -> Reply {
    Reply::new(501, "5.0.0", "Authentication cancelled")
}
pub fn auth_undecodable() -> Reply {
    Reply::new(501, "5.5.2", "Cannot decode the authentication response")
}
pub fn too_many_auth_failures() -> Reply {
    Reply::new(
        421,
        "4.7.0",
        "Too many authentication failures from your address, try again later",
    )
}
pub fn sender_not_allowed(user: &str) -> Reply {
    Reply::new(
        553,
        "5.7.1",
        format!("Sender address not allowed for user {user}"),
    )
}
pub fn from_not_allowed(user: &str) -> Reply {
    Reply::new(
        550,
        "5.7.1",
        format!("From: header address not allowed for user {user}"),
    )
}
pub fn ready_for_tls() -> Reply {
    Reply::new(220, "2.0.0", "Ready to start TLS")
}

pub fn bad_sequence(what: &str) -> Reply {
    Reply::new(503, "5.5.1", format!("Bad sequence of commands: {what}"))
}
pub fn unknown_command() -> Reply {
    Reply::new(500, "5.5.2", "Syntax error, command unrecognized")
}
pub fn not_implemented(cmd: &str) -> Reply {
    Reply::new(502, "5.5.1", format!("{cmd} not implemented"))
}
pub fn syntax(usage: &str) -> Reply {
    Reply::new(501, "5.5.4", format!("Syntax: {usage}"))
}
pub fn line_too_long() -> Reply {
    Reply::new(500, "5.5.6", "Line too long")
}
/// Longest part of a client's parameter a reply quotes: a reply line must
/// stay within RFC 5321's 512 octets.
const MAX_QUOTED_PARAM: usize = 64;

pub fn bad_parameter(param: &str) -> Reply {
    let mut shown: String = param.chars().take(MAX_QUOTED_PARAM).collect();
    if shown.len() < param.len() {
        shown.push_str("...");
    }
    Reply::new(
        555,
        "5.5.4",
        format!("Unsupported or invalid parameter {shown}"),
    )
}
pub fn needs_smtputf8() -> Reply {
    Reply::new(
        553,
        "5.6.7",
        "Non-ASCII address needs the SMTPUTF8 parameter on MAIL FROM",
    )
}
pub fn bad_sender() -> Reply {
    Reply::new(553, "5.1.7", "Invalid sender address")
}
pub fn bad_recipient() -> Reply {
    Reply::new(553, "5.1.3", "Invalid recipient address")
}
pub fn nested_mail() -> Reply {
    bad_sequence("sender already specified")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn wire(r: &Reply) -> String {
        let mut v = Vec::new();
        r.write_to(&mut v);
        String::from_utf8(v).unwrap()
    }

    #[test]
    fn single_line_carries_enhanced_status() {
        assert_eq!(wire(&queued("01ABC")), "250 2.0.0 Ok: queued as 01ABC\r\n");
        assert_eq!(
            wire(&greeting("relay.local")),
            "220 relay.local ESMTP postrelay\r\n"
        );
    }

    #[test]
    fn ehlo_lists_capabilities_as_continuation_lines() {
        let w = wire(&ehlo(
            "relay.local",
            "client",
            &Capabilities::standard(1000),
        ));
        assert_eq!(
            w,
            "250-relay.local greets client\r\n250-PIPELINING\r\n250-SIZE 1000\r\n250-8BITMIME\r\n250-SMTPUTF8\r\n250 ENHANCEDSTATUSCODES\r\n"
        );
    }

    #[test]
    fn a_long_parameter_is_quoted_cut_short_within_one_reply_line() {
        let long = "X".repeat(4000);
        let w = wire(&bad_parameter(&long));
        assert!(w.len() <= 512, "{} octets", w.len());
        assert!(w.starts_with("555 5.5.4 Unsupported or invalid parameter XXX"));
        assert!(w.ends_with("X...\r\n"));
        assert_eq!(
            wire(&bad_parameter("FOO=1")),
            "555 5.5.4 Unsupported or invalid parameter FOO=1\r\n"
        );
    }
}
