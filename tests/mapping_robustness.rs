//! Both mappers must return (Ok or Err) on any input: broken MIME, non-UTF-8,
//! bare LF or CR, truncation at every byte, deep nesting, random bytes.
//! A panic anywhere fails the test.

use std::fs;

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
