//! SMTP framing: the same bytes give the same replies and the same stored
//! message however TCP cuts them. Driven through the pure codec (the
//! session and both framers, as the connection runs them) in many random
//! splits, and through a real socket in a few.

mod support;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;

use postrelay::smtp::capabilities::Capabilities;
use postrelay::smtp::codec::{self, DataFramer, DataStatus, Frame, LineFramer, Verdict};
use postrelay::smtp::session::{Action, Client, Limits, Session};
use smtp_proto::Error as ProtoError;
use support::{Relay, Setup, queued_id, tempdir, unreachable_postmark};

const MAX_SIZE: usize = 100_000;
const MAX_HEADER: usize = 1024;

/// A conversation exercising every framing rule, as one byte stream.
fn conversation() -> Vec<u8> {
    let chunk = b"RCPT TO:<c@example.org>\r\nDATA\r\n";
    let mut s = Vec::new();
    s.extend_from_slice(b"EHLO client.example\r\n");
    s.extend_from_slice(b"MAIL FROM\r\nRCPT TO\r\n");
    s.extend_from_slice(b"MAIL FROM:<a@example.com>\r\nRCPT TO:<b@example.org>\r\n");
    s.extend_from_slice(format!("BDAT {}\r\n", chunk.len()).as_bytes());
    s.extend_from_slice(chunk);
    s.extend_from_slice(b"DATA\r\n");
    s.extend_from_slice(b"From: a@example.com\r\nTo: b@example.org\r\nSubject: framing\r\n\r\n");
    s.extend_from_slice(b"..stuffed\r\nbare lf\nbare\rcr\r\n.\r\r\n");
    s.extend_from_slice(b"MAIL FROM:<x@example.com>\r\nRCPT TO:<y@example.org>\r\nDATA\r\n");
    s.extend_from_slice(b"Subject: smuggled\r\n\r\nsecond\r\n.\r\n");
    s.extend_from_slice(format!("NOOP {}\r\nNOOP\r\n", "x".repeat(5000)).as_bytes());
    s.extend_from_slice(b"MAIL FROM:<a@example.com>\r\nRCPT TO:<b@example.org>\r\nDATA\r\n");
    for _ in 0..100 {
        s.extend_from_slice(b"X-Flood: 0123456789\r\n");
    }
    s.extend_from_slice(b"\r\nbody\r\n.\r\nQUIT\r\n");
    s
}

/// The session and both framers without I/O, as the connection runs them.
struct Driver {
    framer: LineFramer,
    session: Session,
    data: Option<DataFramer>,
    message: Vec<u8>,
    /// Final reply codes, with `552h` for a header block over the cap.
    replies: Vec<String>,
    messages: Vec<Vec<u8>>,
    closed: bool,
}

impl Driver {
    fn new(max_errors: u32) -> Driver {
        let limits = Limits {
            max_message_size: MAX_SIZE,
            max_recipients: 100,
            max_errors,
            max_header_size: MAX_HEADER,
            max_transactions: 1000,
            postmaster: "postmaster@relay.test".into(),
        };
        Driver {
            framer: LineFramer::new(4096),
            session: Session::new(
                "relay.test".into(),
                limits,
                Capabilities::standard(MAX_SIZE),
                Client::trusted(),
            ),
            data: None,
            message: Vec::new(),
            replies: Vec::new(),
            messages: Vec::new(),
            closed: false,
        }
    }

    fn feed(&mut self, chunk: &[u8]) {
        if self.closed {
            return;
        }
        let rest = match self.data_input(chunk) {
            Some(rest) => rest,
            None => return,
        };
        self.framer.push(&rest);
        while let Some(frame) = self.framer.next_frame() {
            let action = match &frame {
                Frame::Command(line) => self.session.command(codec::parse_command(line)),
                Frame::TooLong => self.session.command(Err(ProtoError::ResponseTooLong)),
                Frame::Raw(_) => unreachable!("raw mode is never entered"),
            };
            match action {
                Action::Reply(r) => self.replies.push(r.code.to_string()),
                Action::Close(r) => {
                    self.replies.push(r.code.to_string());
                    self.closed = true;
                    return;
                }
                Action::Discard { reply, bytes } => {
                    self.replies.push(reply.code.to_string());
                    self.framer.discard(bytes);
                }
                // STARTTLS is not advertised here, so never started.
                Action::StartTls => self.replies.push("220".into()),
                // Nor is AUTH.
                Action::Auth { .. } => self.replies.push("334".into()),
                Action::StartData => {
                    self.replies.push("354".into());
                    self.data = Some(DataFramer::new(MAX_SIZE, MAX_HEADER));
                    let rest = self.framer.take_rest();
                    if let Some(after) = self.data_input(&rest) {
                        self.framer.push(&after);
                    }
                }
            }
        }
    }

    /// Feeds DATA if it is running; returns the bytes for the line framer.
    fn data_input(&mut self, chunk: &[u8]) -> Option<Vec<u8>> {
        let Some(data) = self.data.as_mut() else {
            return Some(chunk.to_vec());
        };
        let DataStatus::End { consumed } = data.push(chunk, &mut self.message) else {
            return None;
        };
        let reply = match data.verdict() {
            Verdict::Ok => {
                self.messages.push(std::mem::take(&mut self.message));
                "250"
            }
            Verdict::TooLarge => "552",
            Verdict::HeaderTooLarge => "552h",
        };
        self.replies.push(reply.into());
        self.message.clear();
        self.data = None;
        self.session.reset();
        Some(chunk[consumed..].to_vec())
    }
}

/// Deterministic pseudo-random numbers (xorshift), so a failure replays.
struct Rng(u64);

impl Rng {
    fn below(&mut self, n: usize) -> usize {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        (self.0 % n as u64) as usize
    }

    /// Random cut points of `len` bytes, from none to one per byte.
    fn cuts(&mut self, len: usize) -> Vec<usize> {
        let n = match self.below(4) {
            0 => len, // every byte on its own
            1 => 1 + self.below(4),
            _ => 1 + self.below(64),
        };
        let mut cuts: Vec<usize> = (0..n.min(len)).map(|_| self.below(len)).collect();
        if n >= len {
            cuts = (0..len).collect();
        }
        cuts.sort_unstable();
        cuts.dedup();
        cuts
    }
}

fn pieces<'a>(bytes: &'a [u8], cuts: &[usize]) -> Vec<&'a [u8]> {
    let mut out = Vec::new();
    let mut start = 0;
    for &c in cuts.iter().chain(std::iter::once(&bytes.len())) {
        out.push(&bytes[start..c]);
        start = c;
    }
    out
}

fn drive(chunks: &[&[u8]]) -> Driver {
    drive_with(chunks, 10)
}

fn drive_with(chunks: &[&[u8]], max_errors: u32) -> Driver {
    let mut d = Driver::new(max_errors);
    for c in chunks {
        d.feed(c);
    }
    d
}

#[test]
fn the_codec_gives_the_same_replies_and_messages_in_any_split() {
    let stream = conversation();
    let whole = drive(&[&stream]);
    assert_eq!(
        whole.replies,
        [
            "250", "501", "501", "250", "250", "502", "354", "250", "500", "250", "250", "250",
            "354", "552h", "221"
        ]
    );
    assert_eq!(
        whole.messages.len(),
        1,
        "the smuggled message stays inside the first"
    );
    let message = &whole.messages[0];
    assert!(message.starts_with(b"From: a@example.com\r\n"));
    assert!(message.ends_with(
        b".stuffed\r\nbare lf\r\nbare\rcr\r\n\r\r\nMAIL FROM:<x@example.com>\r\nRCPT TO:<y@example.org>\r\nDATA\r\nSubject: smuggled\r\n\r\nsecond\r\n"
    ));
    let mut rng = Rng(0x2545_F491_4F6C_DD1D);
    for round in 0..400 {
        let cuts = rng.cuts(stream.len());
        let split = drive(&pieces(&stream, &cuts));
        assert_eq!(split.replies, whole.replies, "round {round}, cuts {cuts:?}");
        assert_eq!(
            split.messages, whole.messages,
            "round {round}, cuts {cuts:?}"
        );
    }
}

/// Random transactions: broken and good commands, then DATA with a body
/// of dots, bare CRs and LFs and near-miss end markers.
fn noise(rng: &mut Rng, len: usize) -> Vec<u8> {
    let commands: [&[u8]; 7] = [
        b"MAIL FROM\r\n",
        b"RCPT TO\n",
        b"NOOP\r\n",
        b"BDAT 7\r\n",
        b"MAIL FROM:<c@example.com>\r\n",
        b"RCPT TO:<d@example.org>\r\n",
        b"RSET\r\n",
    ];
    let body: [&[u8]; 10] = [
        b"Subject: x",
        b"text",
        b"\r\n",
        b"\n",
        b"\r",
        b".",
        b"..",
        b"\r\n.\r\r\n",
        b"\r\n.\n",
        b"\r\n.\r\n",
    ];
    let mut out = b"EHLO x\r\n".to_vec();
    while out.len() < len {
        out.extend_from_slice(b"MAIL FROM:<a@example.com>\r\nRCPT TO:<b@example.org>\r\n");
        for _ in 0..rng.below(3) {
            out.extend_from_slice(commands[rng.below(commands.len())]);
        }
        out.extend_from_slice(b"DATA\r\n");
        for _ in 0..rng.below(40) {
            out.extend_from_slice(body[rng.below(body.len())]);
        }
        out.extend_from_slice(b"\r\n.\r\n");
    }
    out
}

#[test]
fn random_streams_give_the_same_replies_and_messages_in_any_split() {
    let mut rng = Rng(0xD1B5_4A32_D192_ED03);
    let mut messages = 0;
    for stream_no in 0..200 {
        let stream = noise(&mut rng, 1000);
        let whole = drive_with(&[&stream], 1000);
        messages += whole.messages.len();
        for _ in 0..10 {
            let cuts = rng.cuts(stream.len());
            let split = drive_with(&pieces(&stream, &cuts), 1000);
            let input = String::from_utf8_lossy(&stream);
            assert_eq!(
                split.replies, whole.replies,
                "stream {stream_no} {input:?}, cuts {cuts:?}"
            );
            assert_eq!(
                split.messages, whole.messages,
                "stream {stream_no} {input:?}, cuts {cuts:?}"
            );
        }
    }
    // The noise reaches DATA often enough to test the data framer too.
    assert!(messages > 500, "only {messages} messages");
}

/// Sends `chunks` over a fresh connection with a pause between writes, so
/// each chunk reaches the server in a read of its own (nothing to wait on:
/// the boundary is the point), and returns every reply line until close.
fn over_socket(relay: &Relay, chunks: &[&[u8]]) -> Vec<String> {
    let mut s = TcpStream::connect(relay.smtp).expect("connect");
    s.set_nodelay(true).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    for c in chunks {
        s.write_all(c).expect("write");
        std::thread::sleep(Duration::from_millis(3));
    }
    let mut all = Vec::new();
    s.read_to_end(&mut all).expect("read replies");
    String::from_utf8_lossy(&all)
        .lines()
        .filter(|l| l.as_bytes().get(3) == Some(&b' '))
        .map(str::to_string)
        .collect()
}

/// Final reply codes after the greeting, with queued messages read back.
fn codes_and_messages(relay: &Relay, lines: &[String]) -> (Vec<String>, Vec<Vec<u8>>) {
    let mut codes = Vec::new();
    let mut messages = Vec::new();
    for l in &lines[1..] {
        if l.starts_with("250 2.0.0 Ok: queued as") {
            let eml = relay.queued(&queued_id(l)).expect("queued message").1;
            messages.push(eml);
        }
        let header = l.starts_with("552") && l.contains("Header block");
        codes.push(if header {
            "552h".to_string()
        } else {
            l[..3].to_string()
        });
    }
    (codes, messages)
}

#[test]
fn a_real_socket_gives_the_same_replies_and_stored_bytes_in_any_split() {
    let dir = tempdir();
    let toml = format!(
        "{}\n[smtp]\nmax_header_size = {MAX_HEADER}\n",
        unreachable_postmark()
    );
    let relay = Relay::start(
        dir.path(),
        &Setup::toml(&toml).env("POSTRELAY_SMTP__RECEIVED_HEADER", "false"),
    );
    let stream = conversation();
    let want = drive(&[&stream]);
    let mut rng = Rng(0x9E37_79B9_7F4A_7C15);
    let end_cr = stream.windows(5).position(|w| w == b"\r\n.\r\n").unwrap() + 3;
    let mut splits = vec![vec![], vec![end_cr + 1], vec![end_cr, end_cr + 1]];
    for _ in 0..3 {
        let mut cuts: Vec<usize> = (0..8).map(|_| rng.below(stream.len())).collect();
        cuts.sort_unstable();
        cuts.dedup();
        splits.push(cuts);
    }
    for cuts in splits {
        let lines = over_socket(&relay, &pieces(&stream, &cuts));
        let (codes, messages) = codes_and_messages(&relay, &lines);
        assert_eq!(codes, want.replies, "cuts {cuts:?}: {lines:?}");
        assert_eq!(messages, want.messages, "cuts {cuts:?}");
    }
}
