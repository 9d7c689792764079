//! The drop file: an envelope block, a blank line, then the message (CRLF
//! lines, not dot-stuffed), to the end of the file.
//!
//! ```text
//! POSTRELAY-MAILDROP 1\n
//! F <sender, empty for the null sender>\n
//! R <recipient>\n        (one line per recipient)
//! \n
//! <message>
//! ```
//!
//! Invariant: [`encode`] writes only addresses [`valid_address`] accepts, and
//! [`decode`] accepts only what `encode` could have written (one `F`, at
//! least one `R`, bounded lines): a file a user crafted by hand can carry
//! nothing into the spool that `sendmail` could not have. The submitting uid
//! is never in the file: the importer takes it from the file's owner.

use crate::message::Envelope;

pub const MAGIC: &str = "POSTRELAY-MAILDROP 1";
/// Longest address accepted (RFC 5321's path limit, with room to spare).
pub const MAX_ADDRESS: usize = 320;

#[derive(Debug, PartialEq, Eq, thiserror::Error)]
pub enum FormatError {
    #[error("not a maildrop file (first line is not {MAGIC:?})")]
    Magic,
    #[error("envelope line {0} is malformed")]
    Line(usize),
    #[error("address on envelope line {0} is not valid")]
    Address(usize),
    #[error("envelope has no sender line")]
    NoSender,
    #[error("envelope has more than one sender line")]
    TwoSenders,
    #[error("envelope has no recipients")]
    NoRecipients,
    #[error("envelope has more than {0} recipients")]
    TooManyRecipients(usize),
    #[error("envelope does not end (no blank line)")]
    Unterminated,
}

/// A mailbox as it may appear in `MAIL FROM:<...>`/`RCPT TO:<...>`: printable
/// ASCII or UTF-8 without spaces, controls, angle brackets; at most
/// [`MAX_ADDRESS`] bytes. The empty sender is checked by the caller.
pub fn valid_address(addr: &str) -> bool {
    !addr.is_empty()
        && addr.len() <= MAX_ADDRESS
        && !addr
            .chars()
            .any(|c| c.is_control() || c.is_whitespace() || matches!(c, '<' | '>'))
}

/// The envelope block, blank line included.
pub fn encode(env: &Envelope) -> Result<Vec<u8>, FormatError> {
    if !env.mail_from.is_empty() && !valid_address(&env.mail_from) {
        return Err(FormatError::Address(2));
    }
    if env.rcpt_to.is_empty() {
        return Err(FormatError::NoRecipients);
    }
    let mut out = format!("{MAGIC}\nF {}\n", env.mail_from);
    for (i, r) in env.rcpt_to.iter().enumerate() {
        if !valid_address(r) {
            return Err(FormatError::Address(i + 3));
        }
        out.push_str(&format!("R {r}\n"));
    }
    out.push('\n');
    Ok(out.into_bytes())
}

/// Reads the envelope block from the start of `head`; returns it and the
/// offset where the message starts. `head` needs to hold only the block.
pub fn decode(head: &[u8], max_recipients: usize) -> Result<(Envelope, usize), FormatError> {
    let mut from = None;
    let mut rcpts = Vec::new();
    let mut pos = 0;
    let mut number = 0;
    loop {
        number += 1;
        let rest = &head[pos..];
        let Some(len) = rest.iter().position(|&b| b == b'\n') else {
            return Err(FormatError::Unterminated);
        };
        let line = std::str::from_utf8(&rest[..len]).map_err(|_| FormatError::Line(number))?;
        pos += len + 1;
        if number == 1 {
            if line != MAGIC {
                return Err(FormatError::Magic);
            }
            continue;
        }
        if line.is_empty() {
            break;
        }
        match line.split_at_checked(2) {
            Some(("F ", addr)) => {
                if from.is_some() {
                    return Err(FormatError::TwoSenders);
                }
                if !addr.is_empty() && !valid_address(addr) {
                    return Err(FormatError::Address(number));
                }
                from = Some(addr.to_string());
            }
            Some(("R ", addr)) => {
                // `encode` writes the sender line first.
                if from.is_none() {
                    return Err(FormatError::NoSender);
                }
                if !valid_address(addr) {
                    return Err(FormatError::Address(number));
                }
                if rcpts.len() == max_recipients {
                    return Err(FormatError::TooManyRecipients(max_recipients));
                }
                rcpts.push(addr.to_string());
            }
            _ => return Err(FormatError::Line(number)),
        }
    }
    let mail_from = from.ok_or(FormatError::NoSender)?;
    if rcpts.is_empty() {
        return Err(FormatError::NoRecipients);
    }
    let env = Envelope {
        mail_from,
        rcpt_to: rcpts,
    };
    Ok((env, pos))
}

/// Bytes the envelope block can take at most with `max_recipients`.
pub fn max_block(max_recipients: usize) -> usize {
    MAGIC.len() + 1 + (max_recipients + 1) * (MAX_ADDRESS + 3) + 1
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(from: &str, to: &[&str]) -> Envelope {
        Envelope {
            mail_from: from.into(),
            rcpt_to: to.iter().map(|s| s.to_string()).collect(),
        }
    }

    #[test]
    fn what_encode_writes_decode_reads_back() {
        for e in [
            env("app@example.com", &["a@example.org", "b@example.org"]),
            env("", &["root@host.example"]),
        ] {
            let mut bytes = encode(&e).unwrap();
            let block = bytes.len();
            bytes.extend_from_slice(b"Subject: x\r\n\r\nbody\r\n");
            assert_eq!(decode(&bytes, 10), Ok((e, block)));
        }
    }

    #[test]
    fn encode_refuses_addresses_that_could_break_a_line() {
        let cases = [
            env("a@x\r\nR victim@evil.example", &["r@x"]),
            env("a@x", &["r@x\nR victim@evil.example"]),
            env("a@x", &["r@x>"]),
            env("a@x", &[]),
            env("a b@x", &["r@x"]),
        ];
        for e in cases {
            assert!(encode(&e).is_err(), "{e:?}");
        }
    }

    #[test]
    fn decode_accepts_only_what_encode_writes() {
        use FormatError::*;
        let cases: &[(&[u8], FormatError)] = &[
            (b"From x\n", Magic),
            (b"POSTRELAY-MAILDROP 2\nF a@x\nR r@x\n\n", Magic),
            (b"POSTRELAY-MAILDROP 1\nF a@x\nR r@x\n", Unterminated),
            (b"POSTRELAY-MAILDROP 1\nR r@x\n\n", NoSender),
            (b"POSTRELAY-MAILDROP 1\nF a@x\n\n", NoRecipients),
            (b"POSTRELAY-MAILDROP 1\nF a@x\nF b@x\nR r@x\n\n", TwoSenders),
            (b"POSTRELAY-MAILDROP 1\nF a@x\nR r@x\rX\n\n", Address(3)),
            (b"POSTRELAY-MAILDROP 1\nF a@x\nR \n\n", Address(3)),
            (b"POSTRELAY-MAILDROP 1\nF a@x\nX r@x\n\n", Line(3)),
            (b"POSTRELAY-MAILDROP 1\nF a@\xff\nR r@x\n\n", Line(2)),
            (
                b"POSTRELAY-MAILDROP 1\nF a@x\nR r@x\nR s@x\nR t@x\n\n",
                TooManyRecipients(2),
            ),
        ];
        for (bytes, want) in cases {
            assert_eq!(
                decode(bytes, 2).unwrap_err(),
                *want,
                "{}",
                String::from_utf8_lossy(bytes)
            );
        }
    }

    #[test]
    fn a_sender_line_after_a_recipient_is_refused() {
        let bytes = b"POSTRELAY-MAILDROP 1\nR r@x\nF a@x\n\nSubject: x\r\n\r\n";
        assert_eq!(decode(bytes, 10), Err(FormatError::NoSender));
    }

    #[test]
    fn the_block_bound_covers_the_largest_block() {
        let long = format!("{}@x", "a".repeat(MAX_ADDRESS - 2));
        let to: Vec<&str> = vec![long.as_str(); 3];
        let bytes = encode(&env(&long, &to)).unwrap();
        assert!(
            bytes.len() <= max_block(3),
            "{} > {}",
            bytes.len(),
            max_block(3)
        );
    }
}
