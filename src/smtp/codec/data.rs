//! The DATA section: dot-unstuffing, line ends and the size caps. Only
//! `<CR><LF>.<CR><LF>` ends it (the DATA command's own line end counts as the
//! first CRLF); a line starts after a CRLF, so a `.` after a bare LF is text.
//! A bare LF is stored as CRLF, a bare CR as itself. Bytes that could still
//! turn out to be part of the end marker or of a CRLF are held in the state,
//! never emitted early, which makes the output independent of read
//! boundaries.
//!
//! Past `max_message_size` bytes, or past `max_header_size` bytes of header
//! block (the lines before the first empty one), the rest is still read to
//! its end but no longer emitted, and the [`Verdict`] says why.

use super::shape::Shape;

/// Where the decoder stands inside the current line.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// At the start of a line (after CRLF).
    LineStart,
    /// A `.` at the start of a line, held.
    Dot,
    /// `.` then CR at the start of a line, held: an LF now ends DATA.
    DotCr,
    /// Inside a line.
    Text,
    /// A CR inside a line, held until we know whether an LF follows.
    Cr,
}

/// How a DATA section fared against the caps.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    Ok,
    /// More than `max_message_size` bytes.
    TooLarge,
    /// More than `max_header_size` bytes before the first empty line.
    HeaderTooLarge,
}

/// What one [`DataFramer::push`] found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DataStatus {
    /// The end marker has not arrived yet.
    More,
    /// The end marker was found; input bytes past `consumed` are pipelined commands.
    End { consumed: usize },
}

#[derive(Debug)]
pub struct DataFramer {
    state: State,
    max_size: usize,
    max_header: usize,
    /// Message bytes decoded so far (kept or not).
    size: usize,
    /// Bytes of complete header lines.
    header: usize,
    /// Bytes of the header line in progress.
    header_line: usize,
    in_header: bool,
    shape: Shape,
    verdict: Verdict,
}

/// How much of `rest` (inside a line, or at the start of a plain one) is
/// text the state machine would copy as it is, and its state after that:
/// whole lines through their CRLF while the next starts with a `plain`
/// byte, then the text up to a CR or LF that is not such a line end.
fn plain_run(rest: &[u8], plain: impl Fn(u8) -> bool) -> (usize, State) {
    let mut at = 0;
    loop {
        match memchr::memchr2(b'\r', b'\n', &rest[at..]) {
            Some(p) if rest[at + p] == b'\r' && rest.get(at + p + 1) == Some(&b'\n') => {
                at += p + 2;
                if !rest.get(at).is_some_and(|&b| plain(b)) {
                    return (at, State::LineStart);
                }
            }
            Some(p) => return (at + p, State::Text),
            None => return (rest.len(), State::Text),
        }
    }
}

impl DataFramer {
    pub fn new(max_size: usize, max_header: usize) -> DataFramer {
        DataFramer {
            state: State::LineStart,
            max_size,
            max_header,
            size: 0,
            header: 0,
            header_line: 0,
            in_header: true,
            shape: Shape::default(),
            verdict: Verdict::Ok,
        }
    }

    /// Decodes `input`, appending the message bytes to `out` (nothing once
    /// the verdict is not [`Verdict::Ok`]).
    pub fn push(&mut self, input: &[u8], out: &mut Vec<u8>) -> DataStatus {
        let mut i = 0;
        while i < input.len() {
            // Fast path: inside a line, or at the start of one that does not
            // begin with `.`, CR or LF (the state machine would copy that
            // byte and go on as text): copy whole lines while each ends in
            // CRLF within this input and the next starts plainly; stop
            // before a lone CR or LF, which the state machine takes.
            let plain = |b: u8| b != b'.' && b != b'\r' && b != b'\n';
            if self.state == State::Text || (self.state == State::LineStart && plain(input[i])) {
                let rest = &input[i..];
                let (run, state) = plain_run(rest, plain);
                self.emit(&rest[..run], out);
                self.state = state;
                i += run;
                if i == input.len() {
                    break;
                }
                if state == State::LineStart {
                    continue;
                }
            }
            let b = input[i];
            i += 1;
            if self.step(b, out) {
                return DataStatus::End { consumed: i };
            }
        }
        DataStatus::More
    }

    /// One byte through the state machine; true when it ends DATA.
    fn step(&mut self, b: u8, out: &mut Vec<u8>) -> bool {
        self.state = match (self.state, b) {
            (State::DotCr, b'\n') => return true,
            (State::LineStart, b'.') => State::Dot,
            (State::Dot, b'\r') => State::DotCr,
            // The held dot was stuffing: dropped. The CR is still held.
            (State::DotCr, _) => return self.step_from(State::Cr, b, out),
            // A lone `.` before a bare LF is text, not the end nor stuffing.
            (State::Dot, b'\n') => {
                self.emit(b".\r\n", out);
                State::Text
            }
            (State::Dot, _) => return self.step_from(State::Text, b, out),
            (State::Cr, b'\n') => {
                self.emit(b"\r\n", out);
                State::LineStart
            }
            (State::Cr, b'\r') => {
                self.emit(b"\r", out);
                State::Cr
            }
            (State::Cr, _) => {
                self.emit(&[b'\r', b], out);
                State::Text
            }
            (_, b'\r') => State::Cr,
            // A bare LF: stored as CRLF, but a line after it is not a line start.
            (_, b'\n') => {
                self.emit(b"\r\n", out);
                State::Text
            }
            (_, _) => {
                self.emit(&[b], out);
                State::Text
            }
        };
        false
    }

    fn step_from(&mut self, state: State, b: u8, out: &mut Vec<u8>) -> bool {
        self.state = state;
        self.step(b, out)
    }

    /// Counts decoded bytes and keeps them while the message is within its caps.
    fn emit(&mut self, bytes: &[u8], out: &mut Vec<u8>) {
        self.size += bytes.len();
        if self.in_header {
            self.count_header(bytes);
        }
        if self.verdict == Verdict::Ok && self.size > self.max_size {
            self.verdict = Verdict::TooLarge;
        }
        if self.verdict == Verdict::Ok {
            self.shape.scan(bytes);
            out.extend_from_slice(bytes);
        }
    }

    /// Header block accounting on decoded bytes, where every LF follows a CR.
    fn count_header(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.header_line += 1;
            if b == b'\n' {
                if self.header_line == 2 {
                    // The empty line: the header block ends before it.
                    self.in_header = false;
                    return;
                }
                self.header += self.header_line;
                self.header_line = 0;
            }
            // A line's first CR may yet be the empty line: not counted until known.
            let pending = if self.header_line == 1 && b == b'\r' {
                0
            } else {
                self.header_line
            };
            if self.header + pending > self.max_header {
                self.in_header = false;
                if self.verdict == Verdict::Ok {
                    self.verdict = Verdict::HeaderTooLarge;
                }
                return;
            }
        }
    }

    /// Message bytes decoded so far, kept or not.
    pub fn size(&self) -> usize {
        self.size
    }

    /// Bytes of the header block counted so far.
    pub fn header_size(&self) -> usize {
        self.header
    }

    /// Header lines and MIME boundary candidates, what parsing costs most.
    pub fn structure_lines(&self) -> usize {
        self.shape.lines()
    }

    pub fn verdict(&self) -> Verdict {
        self.verdict
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Runs `chunks` through a framer: (message, bytes left after the end, verdict).
    fn decode(
        chunks: &[&[u8]],
        max: usize,
        max_header: usize,
    ) -> (Vec<u8>, Option<Vec<u8>>, Verdict) {
        let mut f = DataFramer::new(max, max_header);
        let mut out = Vec::new();
        for c in chunks {
            if let DataStatus::End { consumed } = f.push(c, &mut out) {
                return (out, Some(c[consumed..].to_vec()), f.verdict());
            }
        }
        (out, None, f.verdict())
    }

    /// Every two-way split of `input` gives the same result as the whole.
    fn split_invariant(input: &[u8]) -> (Vec<u8>, Option<Vec<u8>>) {
        let (msg, rest, _) = decode(&[input], 1 << 20, 1 << 20);
        for cut in 0..=input.len() {
            let (m, r, _) = decode(&[&input[..cut], &input[cut..]], 1 << 20, 1 << 20);
            // Leftover is what follows the end in whichever chunk held it.
            let whole_rest = rest.as_ref().map(|r| r.len());
            let split_rest = r.as_ref().map(|r| r.len());
            assert_eq!(m, msg, "cut at {cut} of {input:?}");
            if cut < input.len() - whole_rest.unwrap_or(0) {
                assert_eq!(split_rest, whole_rest, "cut at {cut} of {input:?}");
            }
        }
        (msg, rest)
    }

    #[test]
    fn decoding_table() {
        type Case = (&'static [u8], &'static [u8], Option<&'static [u8]>);
        let table: &[Case] = &[
            // Empty message.
            (b".\r\n", b"", Some(b"")),
            (b"a\r\n.\r\nQUIT\r\n", b"a\r\n", Some(b"QUIT\r\n")),
            // Dot-unstuffing at every line start, the first line included.
            (b"..a\r\n..\r\n.\r\n", b".a\r\n.\r\n", Some(b"")),
            // Bare LF becomes CRLF; a dot after it is text.
            (b"a\nb\n.\r\n", b"a\r\nb\r\n.\r\n", None),
            (b"a\n..b\r\n.\r\n", b"a\r\n..b\r\n", Some(b"")),
            (b"a\r\n.\nb\r\n.\r\n", b"a\r\n.\r\nb\r\n", Some(b"")),
            // `.CR CR LF` does not end DATA: stuffing dot dropped, bare CR kept.
            (b"a\r\n.\r\r\nb\r\n.\r\n", b"a\r\n\r\r\nb\r\n", Some(b"")),
            // Bare CRs are kept as they are.
            (b"a\rb\r\r\n.\r\n", b"a\rb\r\r\n", Some(b"")),
            // `.x` at a line start loses the dot.
            (b".x\r\n.\r\n", b"x\r\n", Some(b"")),
            // No end marker yet.
            (b"a\r\n.\r", b"a\r\n", None),
            (b"a\r\n.", b"a\r\n", None),
            (b"a\r", b"a", None),
        ];
        for (input, want, rest) in table {
            let (msg, left) = split_invariant(input);
            assert_eq!(
                msg,
                *want,
                "message of {:?}",
                String::from_utf8_lossy(input)
            );
            assert_eq!(
                left.as_deref(),
                *rest,
                "rest of {:?}",
                String::from_utf8_lossy(input)
            );
        }
    }

    #[test]
    fn a_smuggled_second_message_stays_inside_the_first() {
        let input = b"Subject: a\r\n\r\nhi\r\n.\r\r\nMAIL FROM:<x@y>\r\nRCPT TO:<z@y>\r\nDATA\r\nSubject: b\r\n\r\n.\r\nNOOP\r\n";
        let (msg, rest) = split_invariant(input);
        assert_eq!(
            msg,
            b"Subject: a\r\n\r\nhi\r\n\r\r\nMAIL FROM:<x@y>\r\nRCPT TO:<z@y>\r\nDATA\r\nSubject: b\r\n\r\n"
        );
        assert_eq!(rest.as_deref(), Some(&b"NOOP\r\n"[..]));
    }

    #[test]
    fn past_the_size_cap_the_rest_is_read_and_dropped() {
        let (msg, rest, verdict) = decode(&[b"0123456789\r\n", b"abc\r\n.\r\nNOOP\r\n"], 12, 100);
        assert_eq!(verdict, Verdict::TooLarge);
        // Bytes within the cap were emitted before it was known; nothing after.
        assert_eq!(msg, b"0123456789\r\n");
        assert_eq!(rest.as_deref(), Some(&b"NOOP\r\n"[..]));
        // Exactly at the cap is fine.
        let (msg, _, verdict) = decode(&[b"0123456789\r\n.\r\n"], 12, 100);
        assert_eq!((msg.len(), verdict), (12, Verdict::Ok));
    }

    #[test]
    fn header_block_is_counted_up_to_the_first_empty_line() {
        let header = b"A: 1\r\nB: 2\r\n"; // 12 bytes
        let msg = [&header[..], b"\r\n", &b"x".repeat(100), b"\r\n.\r\n"].concat();
        let mut f = DataFramer::new(1000, 12);
        let status = f.push(&msg, &mut Vec::new());
        assert!(matches!(status, DataStatus::End { .. }));
        assert_eq!((f.verdict(), f.header_size()), (Verdict::Ok, 12));
        let (_, _, verdict) = decode(&[&msg], 1000, 11);
        assert_eq!(verdict, Verdict::HeaderTooLarge);
        // Without an empty line, the whole message is header.
        let (_, rest, verdict) = decode(&[b"A: 1\r\nB: 2\r\nC: 3\r\n.\r\nQUIT\r\n"], 1000, 12);
        assert_eq!(verdict, Verdict::HeaderTooLarge);
        assert_eq!(rest.as_deref(), Some(&b"QUIT\r\n"[..]));
        // An empty first line means an empty header block.
        let (_, _, verdict) = decode(&[b"\r\nbody\r\n.\r\n"], 1000, 1024);
        assert_eq!(verdict, Verdict::Ok);
    }

    #[test]
    fn header_verdict_holds_in_every_split() {
        let msg = b"A: 1\r\nB: 2\r\n\r\nbody\r\n.\r\n";
        for max_header in [11, 12] {
            let want = if max_header == 12 {
                Verdict::Ok
            } else {
                Verdict::HeaderTooLarge
            };
            for cut in 0..=msg.len() {
                let (_, _, v) = decode(&[&msg[..cut], &msg[cut..]], 1000, max_header);
                assert_eq!(v, want, "cut {cut}, max {max_header}");
            }
        }
    }

    #[test]
    fn whole_reads_decode_as_byte_at_a_time_reads_do() {
        // Byte at a time, nearly every byte goes through the state machine;
        // whole, the multi-line fast path takes most of them.
        let mut seed = 0x9e37_79b9_7f4a_7c15_u64;
        for _ in 0..3000 {
            let len = (seed >> 59) as usize + (seed >> 40 & 31) as usize;
            let input: Vec<u8> = (0..len)
                .map(|_| {
                    seed = seed.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1);
                    b"ab.\r\n\r\n-"[(seed >> 33) as usize % 8]
                })
                .collect();
            let bytes: Vec<&[u8]> = input.chunks(1).collect();
            let mut whole = DataFramer::new(1 << 20, 24);
            let mut one = DataFramer::new(1 << 20, 24);
            let (mut a, mut b) = (Vec::new(), Vec::new());
            let end_whole = whole.push(&input, &mut a);
            let mut end_one = DataStatus::More;
            for (i, c) in bytes.iter().enumerate() {
                if let DataStatus::End { .. } = one.push(c, &mut b) {
                    end_one = DataStatus::End { consumed: i + 1 };
                    break;
                }
            }
            assert_eq!(end_whole, end_one, "{input:?}");
            assert_eq!(
                (whole.verdict(), whole.size(), whole.header_size()),
                (one.verdict(), one.size(), one.header_size()),
                "{input:?}"
            );
            // Past a cap the message is refused: what was kept of it, and
            // its shape, go unused.
            if whole.verdict() == Verdict::Ok {
                assert_eq!(a, b, "{input:?}");
                assert_eq!(whole.structure_lines(), one.structure_lines(), "{input:?}");
            }
        }
    }
}
