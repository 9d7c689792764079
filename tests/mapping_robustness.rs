//! Both mappers must return (Ok or Err) on any input: broken MIME, non-UTF-8,
//! bare LF or CR, truncation at every byte, deep nesting, random bytes.
//! A panic anywhere fails the test.
//!
//! And the fidelity properties, on random MIME trees and mutations of them:
//! every attachment's bytes are a contiguous slice of its decoded part
//! (exactly the original payload when the message is intact), no delimiter
//! line of an enclosing multipart appears inside a decoded body or
//! attachment, and every leaf the structure walk finds ends as a body or an
//! attachment of the Postmark request, or the message is refused.

use std::fs;

use base64::Engine as _;
use postrelay::message::mime::{self, TransferEncoding};

use postrelay::mapping::{self, MappingOptions};
use postrelay::message::Envelope;
use postrelay::message::parse;

fn envelope(mail_from: &str) -> Envelope {
    Envelope {
        mail_from: mail_from.into(),
        rcpt_to: vec!["a@example.com".into(), "B@example.com".into()],
    }
}

fn opts() -> MappingOptions {
    MappingOptions {
        default_stream: "outbound".into(),
        ignore_unsupported: false,
        max_message_size: 1 << 20,
    }
}

fn map_both(raw: &[u8]) {
    for sender in ["s@example.com", ""] {
        let _ = mapping::postmark::map(&envelope(sender), raw, &opts());
        let _ = mapping::postal::map(&envelope(sender), raw, &opts());
    }
}

/// Small deterministic generator (xorshift), so failures reproduce.
struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
}

#[test]
fn hand_picked_garbage_maps_without_panicking() {
    let cases: &[&[u8]] = &[
        b"",
        b"\r\n",
        b"\n\n\n",
        b"\r",
        b":",
        b"From:",
        b"From: <>\r\nTo: ,,,;;;<<>>\r\n\r\n",
        b"no header at all, just text\n",
        b"Subject: =?UTF-8?B?////?= =?bogus?Q?=ZZ?=\r\n\r\nx",
        b"Subject: \xff\xfe\xc3\x28 latin1 \xe9\r\nFrom: \xe9t\xe9 <e@x.org>\r\n\r\n\xff\xfe body",
        b"Content-Type: multipart/mixed; boundary=\r\n\r\n--\r\n--\r\n",
        b"Content-Type: multipart/mixed; boundary=\"b\"\r\n\r\n--b\r\nContent-Type: message/rfc822\r\n\r\n--b--",
        b"Content-Type: multipart/mixed; boundary=\"b\"\r\n\r\n--b\r\nContent-Transfer-Encoding: base64\r\nContent-Type: image/png\r\n\r\n!!!!====@@@@\r\n--b--\r\n",
        b"Content-Type: message/rfc822\r\nContent-Transfer-Encoding: base64\r\n\r\n%%%%",
        b"Content-Type: text/plain\r\nContent-Transfer-Encoding: quoted-printable\r\n\r\n=\r\n=Z=\r\n=",
        b"X-PM-Tag: a\r\n X-PM-Tag: b\r\n\tfolded\r\n\r\n",
        b"X-PM-Metadata-: v\r\nX-PM-TrackOpens: \xff\r\n\r\n",
        b" leading continuation\r\nFrom: a@b\r\n\r\n",
        b"From: a@b\rTo: c@d\rSubject: bare CR only\r\r body",
        // Once tripped a debug assertion inside mail-parser 0.11.9.
        b"Content-Type:multipart;boundary=b\n\n--bContent-Type:message/rfc822\n\nContent-Type:message/rfc822\n\n\n--b--",
    ];
    for case in cases {
        map_both(case);
    }
}

#[test]
fn every_prefix_of_every_fixture_maps_without_panicking() {
    let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/mapping");
    for entry in fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_some_and(|e| e == "eml") {
            let raw = fs::read(&path).unwrap();
            for cut in 0..=raw.len() {
                let _ = mapping::postmark::map(&envelope("s@example.com"), &raw[..cut], &opts());
                let _ = mapping::postal::map(&envelope(""), &raw[..cut], &opts());
            }
        }
    }
}

#[test]
fn deeply_nested_multiparts_map_without_panicking() {
    let mut raw = String::from("From: a@b.org\r\n");
    for depth in 0..300 {
        raw +=
            &format!("Content-Type: multipart/mixed; boundary=\"b{depth}\"\r\n\r\n--b{depth}\r\n");
    }
    raw += "Content-Type: text/plain\r\n\r\ninnermost\r\n";
    map_both(raw.as_bytes());
    let rfc822_chain = "Content-Type: message/rfc822\r\n\r\n".repeat(300) + "From: x@y\r\n\r\nbody";
    map_both(rfc822_chain.as_bytes());
}

#[test]
fn random_and_mime_flavoured_bytes_map_without_panicking() {
    const ALPHABET: &[&[u8]] = &[
        b"\r\n",
        b"\n",
        b"--b",
        b"--b--",
        b": ",
        b"Content-Type: multipart/mixed; boundary=b\r\n",
        b"Content-Transfer-Encoding: base64\r\n",
        b"Content-Transfer-Encoding: quoted-printable\r\n",
        b"Content-Type: message/rfc822\r\n",
        b"Content-Disposition: attachment; filename*=UTF-8''%E2%82\r\n",
        b"=?UTF-8?B?",
        b"?=",
        b"=",
        b" ",
        b"\t",
        b"X-PM-Tag: t\r\n",
        b"From: \"a\" <b@c>\r\n",
        b"\xff",
        b"A",
    ];
    let mut rng = Rng(0x9E37_79B9_7F4A_7C15);
    for _ in 0..3000 {
        let len = (rng.next() % 60) as usize;
        let mut raw = Vec::new();
        for _ in 0..len {
            let r = rng.next();
            if r.is_multiple_of(4) {
                raw.push((r >> 8) as u8);
            } else {
                raw.extend_from_slice(ALPHABET[(r >> 8) as usize % ALPHABET.len()]);
            }
        }
        map_both(&raw);
    }
}

#[test]
fn unparseable_input_gives_an_empty_message_not_an_error() {
    assert_eq!(parse::parse(b""), parse::ParsedMessage::default());
}

/// A random MIME tree rendered to bytes, with the payload of every leaf in
/// document order.
struct Generated {
    raw: Vec<u8>,
    payloads: Vec<Vec<u8>>,
}

impl Rng {
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }

    /// Text whose lines never start with `-`, so no payload line can be
    /// read as a delimiter; sometimes bytes outside ASCII.
    fn text(&mut self) -> Vec<u8> {
        const ALPHABET: &[u8] = b"ab -=_.\r\n\t?b1x";
        let len = self.below(80);
        let mut out: Vec<u8> = (0..len)
            .map(|_| match self.below(12) {
                0 => 0xe9,
                _ => ALPHABET[self.below(ALPHABET.len())],
            })
            .collect();
        for i in 0..out.len() {
            if out[i] == b'-' && (i == 0 || out[i - 1] == b'\n') {
                out[i] = b'x';
            }
        }
        out
    }
}

fn qp_encode(data: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    let mut line = 0;
    for &b in data {
        let literal = (33..=126).contains(&b) && b != b'=';
        let piece = if literal {
            vec![b]
        } else {
            format!("={b:02X}").into_bytes()
        };
        if line + piece.len() > 70 {
            out.extend_from_slice(b"=\r\n");
            line = 0;
        }
        line += piece.len();
        out.extend_from_slice(&piece);
    }
    out
}

fn generate(rng: &mut Rng, depth: usize, counter: &mut usize, out: &mut Generated) -> Vec<u8> {
    *counter += 1;
    let id = *counter;
    if depth < 3 && rng.below(3) == 0 {
        let subtype = ["mixed", "alternative", "related", "digest"][rng.below(4)];
        // Boundaries sharing a prefix with their parent's: `b1`, `b1-2`, ...
        let boundary = format!("b{id}");
        let mut body = format!(
            "Content-Type: multipart/{subtype}; boundary=\"{boundary}\"\r\n\r\npreamble\r\n"
        )
        .into_bytes();
        for _ in 0..rng.below(4) {
            body.extend_from_slice(format!("--{boundary}\r\n").as_bytes());
            let child = generate(rng, depth + 1, counter, out);
            body.extend_from_slice(&child);
            body.extend_from_slice(b"\r\n");
        }
        body.extend_from_slice(format!("--{boundary}--\r\n").as_bytes());
        return body;
    }
    let (ctype, name) = match rng.below(6) {
        0 => ("text/plain; charset=iso-8859-1", None),
        1 => ("text/html; charset=iso-8859-1", None),
        2 => ("application/pdf", Some(format!("f{id}.pdf"))),
        3 => ("image/png", None),
        4 => ("text/plain", Some(format!("n{id}.txt"))),
        _ => ("application/octet-stream", Some(format!("d{id}.dat"))),
    };
    let mut head = format!("Content-Type: {ctype}\r\n");
    if let Some(name) = &name {
        let fold = if rng.below(2) == 0 { "\r\n " } else { " " };
        head += &format!("Content-Disposition: attachment;{fold}filename=\"{name}\"\r\n");
    }
    if ctype == "image/png" {
        head += &format!("Content-ID: <i{id}@x>\r\n");
    }
    let binary = !ctype.starts_with("text/");
    let payload: Vec<u8> = if binary {
        (0..rng.below(120)).map(|_| rng.next() as u8).collect()
    } else {
        rng.text()
    };
    let encoded = match (binary, rng.below(3)) {
        (true, 0) | (false, 0) => {
            head += "Content-Transfer-Encoding: base64\r\n";
            let mut b64 = base64::engine::general_purpose::STANDARD.encode(&payload);
            if rng.below(2) == 0 {
                b64 = b64.trim_end_matches('=').to_string();
            }
            b64.into_bytes()
        }
        (true, _) | (false, 1) => {
            head += "Content-Transfer-Encoding: quoted-printable\r\n";
            qp_encode(&payload)
        }
        (false, _) => payload.clone(),
    };
    out.payloads.push(payload);
    let mut part = head.into_bytes();
    part.extend_from_slice(b"\r\n");
    part.extend_from_slice(&encoded);
    part
}

fn random_message(rng: &mut Rng) -> Generated {
    let mut out = Generated {
        raw: Vec::new(),
        payloads: Vec::new(),
    };
    let mut counter = 0;
    let mut raw = b"From: s@example.com\r\nTo: a@example.com\r\nSubject: t\r\n".to_vec();
    raw.extend_from_slice(&generate(rng, 0, &mut counter, &mut out));
    out.raw = raw;
    out
}

fn mutate(rng: &mut Rng, raw: &[u8]) -> Vec<u8> {
    let mut raw = raw.to_vec();
    for _ in 0..1 + rng.below(3) {
        if raw.is_empty() {
            break;
        }
        let at = rng.below(raw.len());
        match rng.below(4) {
            0 => raw.truncate(at),
            1 => {
                let end = (at + rng.below(40)).min(raw.len());
                raw.drain(at..end);
            }
            2 => {
                let line = format!("\r\n--b{}\r\n", 1 + rng.below(8));
                raw.splice(at..at, line.into_bytes());
            }
            _ => {
                let end = (at + rng.below(60)).min(raw.len());
                let copy = raw[at..end].to_vec();
                raw.splice(at..at, copy);
            }
        }
    }
    raw
}

/// Checks the fidelity properties for one message; `payloads` are the
/// original leaf payloads when the message is intact.
fn check_fidelity(raw: &[u8], payloads: Option<&[Vec<u8>]>) -> Result<(), String> {
    let walked = mime::walk(raw);
    let chosen = mime::choose(&walked);
    let env = envelope("s@example.com");
    let mapped = match mapping::postmark::map(&env, raw, &opts()) {
        Ok(m) => m,
        // A refusal is reported to the client: nothing is silently lost.
        Err(_) => return Ok(()),
    };
    let body = mapped.calls[0].body();
    let attachments: Vec<Vec<u8>> = body["Attachments"]
        .as_array()
        .map(Vec::as_slice)
        .unwrap_or_default()
        .iter()
        .map(|a| {
            base64::engine::general_purpose::STANDARD
                .decode(a["Content"].as_str().unwrap_or_default())
                .unwrap_or_default()
        })
        .collect();
    if attachments.len() != chosen.attachments.len() {
        return Err(format!(
            "{} attachments sent, the walk found {}",
            attachments.len(),
            chosen.attachments.len()
        ));
    }
    for (sent, &leaf) in attachments.iter().zip(&chosen.attachments) {
        let leaf = &walked.leaves[leaf];
        if *sent != leaf.data {
            return Err(format!(
                "attachment bytes differ from leaf {:?}",
                leaf.filename
            ));
        }
        if leaf.transfer_encoding == TransferEncoding::Identity
            && !sent.is_empty()
            && !raw.windows(sent.len()).any(|w| w == &sent[..])
        {
            return Err("an unencoded attachment is not a contiguous slice of the message".into());
        }
    }
    for (field, index) in [("TextBody", chosen.text), ("HtmlBody", chosen.html)] {
        let Some(leaf) = index.map(|i| &walked.leaves[i]) else {
            continue;
        };
        let text = leaf.text().unwrap_or_default();
        if !text.trim().is_empty() && body[field].as_str() != Some(text.as_str()) {
            return Err(format!("{field} is not the chosen leaf's text"));
        }
    }
    for leaf in &walked.leaves {
        if leaf.transfer_encoding == TransferEncoding::Base64 {
            continue; // base64 may legitimately encode any line
        }
        for &parent in &leaf.parents {
            let boundary = format!("--{}", walked.multiparts[parent].boundary);
            let delimiter = leaf.data.split(|&b| b == b'\n').any(|line| {
                line.strip_prefix(boundary.as_bytes()).is_some_and(|rest| {
                    rest.starts_with(b"--") || rest.iter().all(u8::is_ascii_whitespace)
                })
            });
            if delimiter {
                return Err(format!("delimiter line {boundary} inside a decoded part"));
            }
        }
    }
    if let Some(payloads) = payloads {
        // Intact: every leaf is exactly its original payload, in order.
        let decoded: Vec<&Vec<u8>> = walked.leaves.iter().map(|l| &l.data).collect();
        let want: Vec<&Vec<u8>> = payloads.iter().collect();
        if decoded != want {
            return Err(format!(
                "decoded leaves differ from the payloads: {} leaves, {} payloads",
                decoded.len(),
                want.len()
            ));
        }
    }
    Ok(())
}

#[test]
fn random_and_mutated_messages_keep_every_part_whole_and_separate() {
    let mut rng = Rng(0x5DEE_CE66_D1CE_4E5B);
    let mut failures = Vec::new();
    for round in 0..1500 {
        let generated = random_message(&mut rng);
        if let Err(e) = check_fidelity(&generated.raw, Some(&generated.payloads)) {
            failures.push(format!(
                "round {round} intact: {e}\n{}",
                String::from_utf8_lossy(&generated.raw)
            ));
        }
        let mutated = mutate(&mut rng, &generated.raw);
        if let Err(e) = check_fidelity(&mutated, None) {
            failures.push(format!(
                "round {round} mutated: {e}\n{}",
                String::from_utf8_lossy(&mutated)
            ));
        }
        if failures.len() > 3 {
            break;
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n\n"));
}
