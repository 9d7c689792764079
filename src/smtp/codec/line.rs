//! Command lines: CRLF or a bare LF ends one; a line longer than the limit
//! becomes one [`Frame::TooLong`] and its bytes are dropped up to its end, so
//! buffering stays bounded. It can also drop a counted run of bytes (an
//! unsupported `BDAT` chunk) and hand back what it holds (the start of DATA).

/// One framed unit of client input.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Frame {
    /// A complete command line, its line end included (command mode).
    Command(Vec<u8>),
    /// A complete line without its line end (raw mode, e.g. an AUTH response).
    Raw(Vec<u8>),
    /// A line over the limit; the rest of it is dropped.
    TooLong,
}

#[derive(Debug)]
pub struct LineFramer {
    buf: Vec<u8>,
    /// Bytes of `buf` already framed.
    start: usize,
    max_line: usize,
    /// Dropping the rest of an overlong line, up to its LF.
    skipping: bool,
    /// Bytes still to drop before framing resumes.
    discard: usize,
    raw: bool,
}

impl LineFramer {
    /// `max_line` counts the line end.
    pub fn new(max_line: usize) -> LineFramer {
        LineFramer {
            buf: Vec::new(),
            start: 0,
            max_line,
            skipping: false,
            discard: 0,
            raw: false,
        }
    }

    /// Adds received bytes.
    pub fn push(&mut self, bytes: &[u8]) {
        if self.start > 0 && self.start == self.buf.len() {
            self.buf.clear();
            self.start = 0;
        } else if self.start > self.buf.len() / 2 {
            self.buf.drain(..self.start);
            self.start = 0;
        }
        self.buf.extend_from_slice(bytes);
    }

    /// The next complete frame, or `None` until more bytes arrive.
    pub fn next_frame(&mut self) -> Option<Frame> {
        loop {
            if self.discard > 0 {
                let n = self.discard.min(self.buf.len() - self.start);
                self.start += n;
                self.discard -= n;
                if self.discard > 0 {
                    return None;
                }
            }
            let rest = &self.buf[self.start..];
            let lf = rest.iter().position(|&b| b == b'\n');
            if self.skipping {
                match lf {
                    Some(pos) => {
                        self.start += pos + 1;
                        self.skipping = false;
                        continue;
                    }
                    None => {
                        self.start = self.buf.len();
                        return None;
                    }
                }
            }
            return match lf {
                Some(pos) if pos < self.max_line => {
                    let line = &rest[..=pos];
                    let frame = if self.raw {
                        let body = line.strip_suffix(b"\n").unwrap_or(line);
                        Frame::Raw(body.strip_suffix(b"\r").unwrap_or(body).to_vec())
                    } else {
                        Frame::Command(line.to_vec())
                    };
                    self.start += pos + 1;
                    Some(frame)
                }
                Some(pos) => {
                    self.start += pos + 1;
                    Some(Frame::TooLong)
                }
                // Without its LF the line is already longer than the limit.
                None if rest.len() >= self.max_line => {
                    self.start = self.buf.len();
                    self.skipping = true;
                    Some(Frame::TooLong)
                }
                None => None,
            };
        }
    }

    /// Drops the next `n` bytes, wherever they fall among reads.
    pub fn discard(&mut self, n: usize) {
        self.discard += n;
    }

    /// Raw mode frames lines as [`Frame::Raw`], for responses that are not commands.
    pub fn set_raw(&mut self, raw: bool) {
        self.raw = raw;
    }

    /// Hands back every unframed byte (what followed `DATA`) and empties the framer.
    pub fn take_rest(&mut self) -> Vec<u8> {
        let rest = self.buf.split_off(self.start);
        self.buf.clear();
        self.start = 0;
        rest
    }

    /// Forgets all input and state (after STARTTLS); true if bytes were pending,
    /// which a client must not have sent.
    pub fn reset(&mut self) -> bool {
        let pending = self.start < self.buf.len();
        *self = LineFramer::new(self.max_line);
        pending
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frames(chunks: &[&[u8]], max: usize) -> Vec<Frame> {
        let mut f = LineFramer::new(max);
        let mut out = Vec::new();
        for c in chunks {
            f.push(c);
            while let Some(frame) = f.next_frame() {
                out.push(frame);
            }
        }
        out
    }

    fn cmd(s: &str) -> Frame {
        Frame::Command(s.as_bytes().to_vec())
    }

    #[test]
    fn lines_end_at_crlf_or_bare_lf_in_any_split() {
        let table: &[(&[&[u8]], Vec<Frame>)] = &[
            (
                &[b"NOOP\r\nQUIT\r\n"],
                vec![cmd("NOOP\r\n"), cmd("QUIT\r\n")],
            ),
            (
                &[b"NO", b"OP\r", b"\nQU", b"IT\n"],
                vec![cmd("NOOP\r\n"), cmd("QUIT\n")],
            ),
            (
                &[b"MAIL FR", b"OM\r\nQUIT\r\n"],
                vec![cmd("MAIL FROM\r\n"), cmd("QUIT\r\n")],
            ),
            (&[b"NOOP"], vec![]),
        ];
        for (chunks, want) in table {
            assert_eq!(&frames(chunks, 100), want, "{chunks:?}");
        }
    }

    #[test]
    fn an_overlong_line_is_one_too_long_frame_in_any_split() {
        let long = [b"x".repeat(20), b"\r\nNOOP\r\n".to_vec()].concat();
        let want = vec![Frame::TooLong, cmd("NOOP\r\n")];
        assert_eq!(frames(&[&long], 10), want);
        for cut in 1..long.len() {
            assert_eq!(frames(&[&long[..cut], &long[cut..]], 10), want, "cut {cut}");
        }
        // The limit counts the line end: 10 bytes pass, 11 do not.
        assert_eq!(frames(&[b"12345678\r\n"], 10), vec![cmd("12345678\r\n")]);
        assert_eq!(frames(&[b"123456789\r\n"], 10), vec![Frame::TooLong]);
        assert_eq!(frames(&[b"123456789", b"\r\n"], 10), vec![Frame::TooLong]);
    }

    #[test]
    fn discarded_bytes_are_never_framed() {
        let mut f = LineFramer::new(100);
        f.push(b"RCPT");
        f.discard(b"RCPT TO:<a>\r\n".len());
        f.push(b" TO:<a>\r\nNOOP\r\n");
        assert_eq!(f.next_frame(), Some(cmd("NOOP\r\n")));
        assert_eq!(f.next_frame(), None);
    }

    #[test]
    fn raw_mode_strips_the_line_end() {
        let mut f = LineFramer::new(100);
        f.set_raw(true);
        f.push(b"dXNlcg==\r\nYQ==\n");
        assert_eq!(f.next_frame(), Some(Frame::Raw(b"dXNlcg==".to_vec())));
        assert_eq!(f.next_frame(), Some(Frame::Raw(b"YQ==".to_vec())));
    }

    #[test]
    fn take_rest_hands_back_what_follows_and_reset_reports_pending_bytes() {
        let mut f = LineFramer::new(100);
        f.push(b"DATA\r\nSubject: x\r\n");
        assert_eq!(f.next_frame(), Some(cmd("DATA\r\n")));
        assert_eq!(f.take_rest(), b"Subject: x\r\n");
        assert_eq!(f.next_frame(), None);
        f.push(b"STARTTLS\r\nMAIL");
        assert_eq!(f.next_frame(), Some(cmd("STARTTLS\r\n")));
        assert!(f.reset());
        assert!(!f.reset());
        assert_eq!(f.next_frame(), None);
    }
}
