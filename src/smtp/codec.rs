//! SMTP framing as a pure codec: bytes in, frames out, no I/O. The
//! [`LineFramer`] cuts command lines, the [`DataFramer`] decodes a DATA
//! section. Invariant: what comes out depends only on the bytes, never on how
//! they were split into reads, so a read boundary anywhere (inside a command,
//! between a final CR and LF, inside `.\r\n`) gives the same commands, the
//! same message bytes and the same replies.
//!
//! smtp-proto parses one complete command line ([`parse_command`]) and never
//! sees a byte past that line's end; its receivers are not used.

mod data;
mod line;
mod shape;

use std::borrow::Cow;

use smtp_proto::{Error as ProtoError, Request};

pub use data::{DataFramer, DataStatus, Verdict};
pub use line::{Frame, LineFramer};

/// Parses one complete command line (its line end included).
///
/// smtp-proto asks for more input when a line stops early (`MAIL FROM`
/// without its colon); the line is complete, so that is a syntax error.
pub fn parse_command(line: &[u8]) -> Result<Request<Cow<'_, str>>, ProtoError> {
    if is_postmaster(line) {
        return Ok(Request::Rcpt {
            to: smtp_proto::RcptTo {
                address: Cow::Borrowed("postmaster"),
                orcpt: None,
                rrvs: 0,
                flags: 0,
            },
        });
    }
    match Request::parse(&mut line.iter()) {
        Err(ProtoError::NeedsMoreData { .. }) => Err(incomplete(line)),
        other => other,
    }
}

/// Exactly `RCPT TO:<postmaster>` (any case, RFC 5321 §4.5.1), whose
/// missing domain smtp-proto reads as an empty address.
fn is_postmaster(line: &[u8]) -> bool {
    line.trim_ascii()
        .eq_ignore_ascii_case(b"rcpt to:<postmaster>")
}

/// The error for a complete line the parser found unfinished.
fn incomplete(line: &[u8]) -> ProtoError {
    let verb = line
        .split(|b| b.is_ascii_whitespace())
        .next()
        .unwrap_or_default();
    if verb.eq_ignore_ascii_case(b"MAIL") {
        ProtoError::SyntaxError {
            syntax: "MAIL FROM:<reverse-path> [parameters]",
        }
    } else if verb.eq_ignore_ascii_case(b"RCPT") {
        ProtoError::SyntaxError {
            syntax: "RCPT TO:<forward-path> [parameters]",
        }
    } else {
        ProtoError::UnknownCommand
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The reply class a parse result leads to: `Ok` with the verb, or the error.
    fn outcome(line: &str) -> String {
        match parse_command(line.as_bytes()) {
            Ok(r) => format!("ok {}", r.name()),
            Err(ProtoError::SyntaxError { syntax }) => format!("syntax {syntax}"),
            Err(e) => format!("err {e:?}"),
        }
    }

    #[test]
    fn complete_lines_parse_without_looking_past_their_end() {
        let table = [
            ("MAIL FROM:<a@b.example>\r\n", "ok MAIL"),
            ("MAIL FROM:<a@b.example>\n", "ok MAIL"),
            ("RCPT TO:<a@b.example>\r\n", "ok RCPT"),
            ("DATA\r\n", "ok DATA"),
            (
                "MAIL FROM\r\n",
                "syntax MAIL FROM:<reverse-path> [parameters]",
            ),
            (
                "MAIL FROM\n",
                "syntax MAIL FROM:<reverse-path> [parameters]",
            ),
            (
                "mail from\r\n",
                "syntax MAIL FROM:<reverse-path> [parameters]",
            ),
            ("MAIL\r\n", "syntax MAIL FROM:<reverse-path> [parameters]"),
            ("RCPT TO\r\n", "syntax RCPT TO:<forward-path> [parameters]"),
            ("RCPT\r\n", "syntax RCPT TO:<forward-path> [parameters]"),
            ("RCPT TO:<PostMaster>\r\n", "ok RCPT"),
            ("RCPT TO:<postmaster\r\n", "err InvalidRecipientAddress"),
        ];
        for (line, want) in table {
            assert_eq!(outcome(line), want, "{line:?}");
        }
    }

    #[test]
    fn bdat_parses_with_its_chunk_size() {
        let r = parse_command(b"BDAT 10 LAST\r\n").unwrap();
        assert!(matches!(
            r,
            Request::Bdat {
                chunk_size: 10,
                is_last: true
            }
        ));
    }
}
