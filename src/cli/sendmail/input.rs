//! The message on stdin, read as a stream: the header block (bounded by
//! `smtp.max_header_size`) is held to work out the envelope, the body is
//! copied through in pieces, so memory stays flat whatever the input size.
//!
//! Invariant: output lines end in CRLF (a bare LF becomes CRLF); an mbox
//! `From ` first line is skipped; without `-i` a line holding a single "."
//! ends the message; at most `max` body bytes are written, more is
//! [`InputError::TooLarge`].

use std::io::{self, BufRead, Read, Write};

/// Longest piece of a line read at once; longer lines pass in pieces.
const PIECE: u64 = 64 * 1024;

#[derive(Debug, thiserror::Error)]
pub enum InputError {
    #[error("the header block is larger than smtp.max_header_size ({0} bytes)")]
    HeaderTooLarge(usize),
    #[error("the message is larger than smtp.max_message_size ({0} bytes)")]
    TooLarge(u64),
    #[error("cannot read the message: {0}")]
    Io(#[from] io::Error),
}

/// One header field: its lowercased name and its lines (without line ends).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Field {
    pub name: String,
    pub lines: Vec<Vec<u8>>,
}

/// The header block, and how it ended.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Head {
    pub fields: Vec<Field>,
    /// The first body line when the block ended on a line that is not a
    /// header field (`echo hello | sendmail r@x`), without its line end.
    pub first_body_line: Option<Vec<u8>>,
    /// The input ended (EOF or a lone ".") inside the header block.
    pub ended: bool,
}

/// Reads one line (without its line end) of at most `cap` bytes; `None` at EOF.
fn line(r: &mut impl BufRead, cap: u64) -> io::Result<Option<(Vec<u8>, bool)>> {
    let mut buf = Vec::new();
    r.by_ref().take(cap).read_until(b'\n', &mut buf)?;
    if buf.is_empty() {
        return Ok(None);
    }
    let complete = buf.last() == Some(&b'\n');
    if complete {
        buf.pop();
        if buf.last() == Some(&b'\r') {
            buf.pop();
        }
    }
    Ok(Some((buf, complete)))
}

/// Reads the header block. `max` bounds its size.
pub fn read_head(r: &mut impl BufRead, ignore_dots: bool, max: usize) -> Result<Head, InputError> {
    let mut head = Head::default();
    let mut used = 0usize;
    let mut first = true;
    loop {
        let cap = (max - used.min(max)) as u64 + 1;
        let Some((l, complete)) = line(r, cap)? else {
            head.ended = true;
            return Ok(head);
        };
        used += l.len() + 2;
        if used > max || !complete && l.len() as u64 >= cap {
            return Err(InputError::HeaderTooLarge(max));
        }
        if std::mem::take(&mut first) && l.starts_with(b"From ") {
            continue;
        }
        if !ignore_dots && l == b"." {
            head.ended = true;
            return Ok(head);
        }
        if l.is_empty() {
            return Ok(head);
        }
        let continuation = l.first().is_some_and(|b| *b == b' ' || *b == b'\t');
        match head.fields.last_mut() {
            Some(f) if continuation => f.lines.push(l),
            _ if is_header_field(&l) => {
                let name = l.split(|&b| b == b':').next().unwrap_or_default();
                head.fields.push(Field {
                    name: String::from_utf8_lossy(name).to_ascii_lowercase(),
                    lines: vec![l],
                });
            }
            _ => {
                head.first_body_line = Some(l);
                return Ok(head);
            }
        }
    }
}

/// `Name: value`, the name printable ASCII (33..=126) other than `:` (RFC 5322 §2.2).
pub fn is_header_field(line: &[u8]) -> bool {
    match line.iter().position(|&b| b == b':') {
        Some(colon) if colon > 0 => line[..colon].iter().all(|b| (33..=126).contains(b)),
        _ => false,
    }
}

/// Copies the body from `r` to `w` as CRLF lines, stopping at EOF (or a
/// lone "." without `-i`). Returns the bytes written; more than `max` is an error.
pub fn copy_body(
    r: &mut impl BufRead,
    w: &mut impl Write,
    ignore_dots: bool,
    max: u64,
) -> Result<u64, InputError> {
    let mut written = 0u64;
    let mut at_line_start = true;
    while let Some((piece, complete)) = line(r, PIECE)? {
        if at_line_start && complete && !ignore_dots && piece == b"." {
            break;
        }
        written += piece.len() as u64 + if complete { 2 } else { 0 };
        if written > max {
            return Err(InputError::TooLarge(max));
        }
        w.write_all(&piece)?;
        if complete {
            w.write_all(b"\r\n")?;
        }
        at_line_start = complete;
    }
    if !at_line_start {
        written += 2;
        w.write_all(b"\r\n")?;
    }
    Ok(written)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Cursor;

    fn head(input: &[u8], ignore_dots: bool) -> Head {
        read_head(&mut Cursor::new(input), ignore_dots, 1024).unwrap()
    }

    fn field(name: &str, lines: &[&str]) -> Field {
        Field {
            name: name.into(),
            lines: lines.iter().map(|l| l.as_bytes().to_vec()).collect(),
        }
    }

    #[test]
    fn the_header_block_ends_at_a_blank_line_or_the_first_other_line() {
        let h = head(
            b"From root  Mon Jan  1 00:00:00 2024\nSubject: s\n  folded\nTo: root\n\nbody\n",
            false,
        );
        assert_eq!(
            h.fields,
            vec![
                field("subject", &["Subject: s", "  folded"]),
                field("to", &["To: root"])
            ]
        );
        assert_eq!(h.first_body_line, None);
        let h = head(b"Subject: s\r\nhello there\r\n", false);
        assert_eq!(h.first_body_line, Some(b"hello there".to_vec()));
        let h = head(b"Dear customer: thanks\n", false);
        assert!(h.fields.is_empty());
        assert_eq!(h.first_body_line, Some(b"Dear customer: thanks".to_vec()));
        let h = head(b"Subject: s\n.\nTo: x\n", false);
        assert!(h.ended && h.fields.len() == 1);
        let h = head(b"Subject: s\n.\nTo: x\n", true);
        assert_eq!(h.first_body_line, Some(b".".to_vec()));
    }

    #[test]
    fn a_header_block_over_the_limit_is_refused() {
        let big = format!("Subject: {}\n\nbody\n", "x".repeat(2000));
        let e = read_head(&mut Cursor::new(big.as_bytes()), false, 1024).unwrap_err();
        assert!(matches!(e, InputError::HeaderTooLarge(1024)), "{e}");
    }

    #[test]
    fn the_body_is_copied_as_crlf_lines_up_to_a_lone_dot() {
        let cases: &[(&[u8], bool, &[u8])] = &[
            (b"a\nb\r\n", false, b"a\r\nb\r\n"),
            (b"a\n.\nafter\n", false, b"a\r\n"),
            (b"a\n.\nafter\n", true, b"a\r\n.\r\nafter\r\n"),
            (b"no final newline", false, b"no final newline\r\n"),
            (b"..dot\n", false, b"..dot\r\n"),
            (b"", false, b""),
        ];
        for (input, ignore_dots, want) in cases {
            let mut out = Vec::new();
            let n = copy_body(&mut Cursor::new(*input), &mut out, *ignore_dots, 1000).unwrap();
            assert_eq!(out, *want, "{}", String::from_utf8_lossy(input));
            assert_eq!(n, want.len() as u64);
        }
    }

    #[test]
    fn a_body_over_the_limit_is_refused() {
        let input = "line\n".repeat(100);
        let e = copy_body(
            &mut Cursor::new(input.as_bytes()),
            &mut io::sink(),
            false,
            100,
        )
        .unwrap_err();
        assert!(matches!(e, InputError::TooLarge(100)));
    }

    #[test]
    fn lines_longer_than_a_piece_pass_whole() {
        let long = vec![b'x'; 3 * PIECE as usize + 7];
        let mut input = long.clone();
        input.extend_from_slice(b"\nend\n");
        let mut out = Vec::new();
        copy_body(&mut Cursor::new(&input), &mut out, false, u64::MAX).unwrap();
        let mut want = long;
        want.extend_from_slice(b"\r\nend\r\n");
        assert_eq!(out, want);
    }
}
