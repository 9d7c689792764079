//! `smtp_session`: client bytes → the codec and the session state machine →
//! reply bytes, with DATA decoded and checked in memory the way the
//! connection does (the spool is a `Vec`: storing always succeeds).
//!
//! Input: the first byte holds options (bit 0: bytes as sent, else folded
//! onto the SMTP alphabet; bit 1: an untrusted client; bit 2:
//! `ignore_unsupported_features`; bits 3-5: how the bytes are cut into
//! reads). Properties: every reply line is well formed (a 2xx-5xx code, `-`
//! only on continuation lines of one code, no CR or LF inside, at most 512
//! octets); a stored message has no bare LF and fits the size caps; and the
//! replies and stored messages are the same whichever way the bytes were
//! cut into reads.

use std::sync::Arc;

use smtp_proto::Error as ProtoError;

use crate::mapping::{Mapper, MapperKind, MappingOptions, POSTMARK_MAX_MESSAGE_SIZE};
use crate::message::Envelope;
use crate::smtp::capabilities::Capabilities;
use crate::smtp::codec::{self, DataFramer, DataStatus, Frame, LineFramer, Verdict};
use crate::smtp::reply::{self, Reply};
use crate::smtp::session::{Action, Client, Limits, Session};

/// The connection's line limit (`MAX_LINE` in `smtp::connection`).
const MAX_LINE: usize = 4096;
/// RFC 5321 §4.5.3.1.5: a reply line, code and CRLF included.
const MAX_REPLY_LINE: usize = 512;
const MAX_MESSAGE: usize = 16 * 1024;
const MAX_HEADER: usize = 4 * 1024;

/// What bytes below `TOKENS.len()` stand for once folded.
const TOKENS: &[&[u8]] = &[
    b"EHLO ",
    b"HELO ",
    b"MAIL FROM:",
    b"RCPT TO:",
    b"DATA",
    b"RSET",
    b"NOOP",
    b"QUIT",
    b"VRFY ",
    b"BDAT ",
    b"AUTH PLAIN ",
    b"STARTTLS",
    b"HELP",
    b"\r\n",
    b"\r\n",
    b"\n",
    b"\r",
    b".",
    b"\r\n.\r\n",
    b"<",
    b">",
    b":",
    b"@",
    b" ",
    b"a",
    b"b.example",
    b"postmaster",
    b"\"q x\"",
    b" SIZE=",
    b" BODY=8BITMIME",
    b" SMTPUTF8",
    b"1",
    b"9",
    b"From: a@b.example\r\n",
    b"To: c@b.example\r\n",
    b"Subject: s\r\n",
    b"X-PM-Tag: t\r\n",
    b"Content-Type: multipart/mixed; boundary=z\r\n",
    b"--z\r\n",
    b"\xc3\xa9",
];

/// Read sizes the input is cut into, by the option bits 3-5.
const CUTS: &[&[usize]] = &[
    &[1],
    &[2, 3],
    &[5, 1, 7],
    &[13],
    &[64, 1],
    &[3, 4096],
    &[1, 2, 3, 5, 8, 13, 21],
    &[511, 2],
];

pub fn smtp_session(data: &[u8]) {
    let (options, rest) = super::split_options(data);
    let input = if options & 1 == 0 {
        fold(rest)
    } else {
        rest.to_vec()
    };
    let client = if options & 2 == 0 {
        Client::trusted()
    } else {
        Client::default()
    };
    let ignore_unsupported = options & 4 != 0;
    let cuts = CUTS[usize::from(options >> 3) % CUTS.len()];

    let whole = Dialogue::new(client, ignore_unsupported).run([input.as_slice()]);
    check_replies(&whole.out);
    for (envelope, message) in &whole.stored {
        check_stored(envelope, message);
    }
    let pieces = cut(&input, cuts);
    let split = Dialogue::new(client, ignore_unsupported).run(pieces);
    assert!(
        whole.out == split.out,
        "replies depend on read boundaries:\n{}\n---\n{}",
        String::from_utf8_lossy(&whole.out),
        String::from_utf8_lossy(&split.out)
    );
    assert_eq!(
        whole.stored, split.stored,
        "stored messages depend on read boundaries"
    );
}

/// Bytes below `TOKENS.len()` become their token; the rest stay as they are.
fn fold(data: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(data.len() * 4);
    for &b in data {
        match TOKENS.get(usize::from(b)) {
            Some(token) => out.extend_from_slice(token),
            None => out.push(b),
        }
    }
    out
}

fn cut<'a>(input: &'a [u8], sizes: &[usize]) -> Vec<&'a [u8]> {
    let mut pieces = Vec::new();
    let mut rest = input;
    for &size in sizes.iter().cycle() {
        if rest.is_empty() {
            break;
        }
        let (piece, tail) = rest.split_at(size.min(rest.len()));
        pieces.push(piece);
        rest = tail;
    }
    pieces
}

/// One connection, driven as `smtp::connection` drives it, minus the socket.
struct Dialogue {
    session: Session,
    mapper: Arc<Mapper>,
    framer: LineFramer,
    /// The DATA section in progress and its decoded bytes.
    data: Option<(DataFramer, Vec<u8>)>,
    closed: bool,
    out: Vec<u8>,
    stored: Vec<(Envelope, Vec<u8>)>,
}

impl Dialogue {
    fn new(client: Client, ignore_unsupported: bool) -> Dialogue {
        let limits = Limits {
            max_message_size: MAX_MESSAGE,
            max_recipients: 60,
            max_errors: 10,
            max_header_size: MAX_HEADER,
            max_transactions: 5,
            postmaster: "postmaster@relay.test".into(),
        };
        let session = Session::new(
            "relay.test".into(),
            limits,
            Capabilities::standard(MAX_MESSAGE),
            client,
        );
        let mapper = Mapper::new(
            MapperKind::Postmark,
            MappingOptions {
                default_stream: "outbound".into(),
                ignore_unsupported,
                max_message_size: POSTMARK_MAX_MESSAGE_SIZE,
            },
        );
        let mut out = Vec::new();
        reply::greeting(session.hostname()).write_to(&mut out);
        Dialogue {
            session,
            mapper: Arc::new(mapper),
            framer: LineFramer::new(MAX_LINE),
            data: None,
            closed: false,
            out,
            stored: Vec::new(),
        }
    }

    fn run<'a>(mut self, reads: impl IntoIterator<Item = &'a [u8]>) -> Dialogue {
        for read in reads {
            if self.closed {
                break;
            }
            self.read(read);
        }
        self
    }

    /// One read's bytes: into the DATA section in progress, or the framer.
    fn read(&mut self, bytes: &[u8]) {
        let mut bytes = bytes.to_vec();
        loop {
            if let Some((framer, message)) = self.data.as_mut() {
                match framer.push(&bytes, message) {
                    DataStatus::More => return,
                    DataStatus::End { consumed } => {
                        bytes.drain(..consumed);
                        self.end_data();
                    }
                }
            }
            self.framer.push(&bytes);
            match self.commands() {
                Some(rest) => bytes = rest,
                None => return,
            }
        }
    }

    /// Answers every complete command; `Some(rest)` when DATA began, with
    /// the bytes received after its line.
    fn commands(&mut self) -> Option<Vec<u8>> {
        while let Some(frame) = self.framer.next_frame() {
            let action = match &frame {
                Frame::Command(line) => self.session.command(codec::parse_command(line)),
                Frame::TooLong => self.session.command(Err(ProtoError::ResponseTooLong)),
                Frame::Raw(_) => self.session.command(Err(ProtoError::UnknownCommand)),
            };
            match action {
                Action::Reply(r) => r.write_to(&mut self.out),
                Action::Close(r) => return self.close(r),
                Action::Discard { reply, bytes } => {
                    reply.write_to(&mut self.out);
                    self.framer.discard(bytes);
                }
                // Not offered to this client (no accounts, no TLS): the
                // session must not start either.
                Action::Auth { .. } => panic!("AUTH started without accounts"),
                Action::StartTls => panic!("STARTTLS started without TLS"),
                Action::StartData => {
                    reply::start_data().write_to(&mut self.out);
                    self.data = Some((DataFramer::new(MAX_MESSAGE, MAX_HEADER), Vec::new()));
                    return Some(self.framer.take_rest());
                }
            }
        }
        None
    }

    fn close(&mut self, r: Reply) -> Option<Vec<u8>> {
        r.write_to(&mut self.out);
        self.closed = true;
        None
    }

    /// The end of DATA: the verdict, the backend check, then "storing".
    fn end_data(&mut self) {
        let (framer, message) = self.data.take().expect("DATA in progress");
        let r = match framer.verdict() {
            Verdict::TooLarge => reply::too_large(MAX_MESSAGE),
            Verdict::HeaderTooLarge => reply::header_too_large(MAX_HEADER),
            Verdict::Ok => {
                let envelope = self.session.envelope();
                match self.mapper.check(&envelope, &message) {
                    Ok(_) => {
                        self.stored.push((envelope, message));
                        reply::queued(&format!("{:026}", self.stored.len()))
                    }
                    Err(e) => {
                        let (code, status, text) = e.smtp_reply();
                        Reply::new(code, status, text)
                    }
                }
            }
        };
        r.write_to(&mut self.out);
        self.session.reset();
    }
}

/// Every reply line: `ddd text` or `ddd-text`, CRLF-terminated, within
/// 512 octets; continuation lines keep their code.
fn check_replies(out: &[u8]) {
    assert!(
        out.is_empty() || out.ends_with(b"\r\n"),
        "reply not CRLF-terminated"
    );
    let mut open: Option<&[u8]> = None;
    for line in out.split_inclusive(|&b| b == b'\n') {
        let shown = String::from_utf8_lossy(line);
        assert!(
            line.len() <= MAX_REPLY_LINE,
            "reply line over 512 octets: {shown:?}"
        );
        let body = line
            .strip_suffix(b"\r\n")
            .expect("each reply line ends with CRLF");
        assert!(
            !body.contains(&b'\r') && !body.contains(&b'\n'),
            "CR or LF inside a reply line: {shown:?}"
        );
        assert!(body.len() >= 4, "reply line too short: {shown:?}");
        let (code, sep) = (&body[..3], body[3]);
        assert!(
            (b'2'..=b'5').contains(&code[0]) && code[1..].iter().all(u8::is_ascii_digit),
            "bad reply code: {shown:?}"
        );
        if let Some(want) = open {
            assert_eq!(want, code, "continuation line changes code: {shown:?}");
        }
        open = match sep {
            b'-' => Some(code),
            b' ' => None,
            _ => panic!("bad separator after the code: {shown:?}"),
        };
    }
    assert!(open.is_none(), "multi-line reply never ends");
}

/// A stored message: CRLF line ends only, within the size cap, for an
/// envelope with at least one recipient.
fn check_stored(envelope: &Envelope, message: &[u8]) {
    assert!(
        !envelope.rcpt_to.is_empty(),
        "message stored without recipients"
    );
    assert!(
        message.len() <= MAX_MESSAGE,
        "message over the size cap stored"
    );
    for (i, &b) in message.iter().enumerate() {
        if b == b'\n' {
            assert!(i > 0 && message[i - 1] == b'\r', "bare LF stored at {i}");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_dialogue_stores_its_messages_and_answers_each_command() {
        let input = b"EHLO c\r\nMAIL FROM:<a@b.example>\r\nRCPT TO:<c@b.example>\r\nDATA\r\n\
            From: a@b.example\r\n\r\n..dot\nx\r\n.\r\nMAIL FROM:<>\r\nRCPT TO:<postmaster>\r\n\
            DATA\r\nFrom: a@b.example\r\n\r\ny\r\n.\r\nQUIT\r\nNOOP\r\n";
        let cut_up = cut(input, &[1, 2, 3]);
        for reads in [vec![&input[..]], cut_up] {
            let d = Dialogue::new(Client::trusted(), false).run(reads);
            let out = String::from_utf8(d.out).unwrap();
            let codes: Vec<&str> = out.lines().map(|l| &l[..4]).collect();
            assert_eq!(
                codes,
                [
                    "220 ", "250-", "250-", "250-", "250-", "250-", "250 ", "250 ", "250 ", "354 ",
                    "250 ", "250 ", "250 ", "354 ", "250 ", "221 "
                ],
                "{out}"
            );
            assert_eq!(d.stored.len(), 2);
            assert_eq!(d.stored[0].1, b"From: a@b.example\r\n\r\n.dot\r\nx\r\n");
            assert_eq!(d.stored[1].0.rcpt_to, ["postmaster@relay.test"]);
        }
    }

    #[test]
    fn folding_turns_low_bytes_into_tokens_and_keeps_the_rest() {
        assert_eq!(fold(&[0, b'a', 13, 200]), b"EHLO a\r\n\xc8");
    }
}
