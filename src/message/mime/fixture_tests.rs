//! Fixture and evidence tests: every `tests/fixtures/mime/*.eml` is walked
//! and compared with its `.expect` file (what a mail reader shows: subject,
//! text and HTML bodies, each attachment's name, type and exact bytes), and
//! the same through `message::parse`, which the mapping uses. Also the
//! robustness sweep: every prefix of every fixture and
//! seeded random bytes, walked without a panic and within the limits.
//!
//! `.expect` lines: `subject: S`, `text: T`, `html: H`, and per attachment
//! `attachment: NAME | TYPE | BYTES` (`-` for no name). Escapes: `\r \n \t
//! \\ \xNN` (a byte). Bodies compare with CRLF read as LF and trailing
//! whitespace ignored; attachment bytes compare exactly.

use std::path::PathBuf;

use rand::{Rng, SeedableRng};

use super::{Limits, bodies, walk, walk_with};
use crate::message::parse;

const DIR: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/mime");

/// What a mail reader shows for a message.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
struct View {
    subject: Option<String>,
    text: Option<String>,
    html: Option<String>,
    attachments: Vec<(Option<String>, String, Vec<u8>)>,
}

fn unescape(s: &str) -> Vec<u8> {
    let mut out = Vec::new();
    let mut chars = s.chars();
    while let Some(c) = chars.next() {
        if c != '\\' {
            let mut buf = [0; 4];
            out.extend_from_slice(c.encode_utf8(&mut buf).as_bytes());
            continue;
        }
        match chars.next() {
            Some('r') => out.push(b'\r'),
            Some('n') => out.push(b'\n'),
            Some('t') => out.push(b'\t'),
            Some('x') => {
                let hex: String = chars.by_ref().take(2).collect();
                out.push(u8::from_str_radix(&hex, 16).expect("\\xNN escape"));
            }
            Some(other) => out.push(other as u8),
            None => out.push(b'\\'),
        }
    }
    out
}

fn body(s: &str) -> String {
    s.replace("\r\n", "\n").trim_end().to_string()
}

fn expected(text: &str) -> View {
    let mut view = View::default();
    for line in text.lines().filter(|l| !l.is_empty()) {
        let (key, value) = line
            .split_once(": ")
            .unwrap_or((line.trim_end_matches(':'), ""));
        let decoded = || body(&String::from_utf8(unescape(value)).expect("utf-8 expectation"));
        match key {
            "subject" => view.subject = Some(decoded()),
            "text" => view.text = Some(decoded()),
            "html" => view.html = Some(decoded()),
            "attachment" => {
                let mut fields = value.splitn(3, " | ");
                let name = fields.next().unwrap_or("-");
                let ctype = fields.next().expect("attachment type").to_string();
                let data = unescape(fields.next().unwrap_or(""));
                let name = (name != "-").then(|| name.to_string());
                view.attachments.push((name, ctype, data));
            }
            other => panic!("unknown expectation key {other}"),
        }
    }
    view
}

fn walker_view(raw: &[u8]) -> View {
    let mime = walk(raw);
    let chosen = bodies::choose(&mime);
    let text_of = |i: Option<usize>| i.map(|i| body(&mime.leaves[i].text().unwrap_or_default()));
    View {
        subject: mime.header_text("subject"),
        text: text_of(chosen.text),
        html: text_of(chosen.html),
        attachments: chosen
            .attachments
            .iter()
            .map(|&i| {
                let leaf = &mime.leaves[i];
                (
                    leaf.filename.clone(),
                    leaf.mime_type().to_string(),
                    leaf.data.clone(),
                )
            })
            .collect(),
    }
}

fn parsed_view(raw: &[u8]) -> View {
    let parsed = parse::parse(raw);
    View {
        subject: parsed.subject.clone(),
        text: parsed.text_body.as_deref().map(body),
        html: parsed.html_body.as_deref().map(body),
        attachments: parsed
            .attachments
            .iter()
            .map(|a| {
                let essence = a.content_type.split(';').next().unwrap_or_default();
                (a.name.clone(), essence.to_string(), a.data.clone())
            })
            .collect(),
    }
}

fn fixtures() -> Vec<(String, Vec<u8>, View)> {
    let mut stems: Vec<PathBuf> = std::fs::read_dir(DIR)
        .unwrap_or_else(|e| panic!("{DIR}: {e}"))
        .map(|e| e.expect("dir entry").path())
        .filter(|p| p.extension().is_some_and(|x| x == "eml"))
        .collect();
    stems.sort();
    stems
        .into_iter()
        .map(|eml| {
            let raw = std::fs::read(&eml).expect("fixture");
            let expect = std::fs::read_to_string(eml.with_extension("expect"))
                .unwrap_or_else(|e| panic!("{}: expectation: {e}", eml.display()));
            let name = eml
                .file_stem()
                .unwrap_or_default()
                .to_string_lossy()
                .into_owned();
            (name, raw, expected(&expect))
        })
        .collect()
}

/// Fields where `actual` differs from `want`.
fn differences(want: &View, actual: &View) -> Vec<&'static str> {
    let mut out = Vec::new();
    if want.subject != actual.subject {
        out.push("subject");
    }
    if want.text != actual.text {
        out.push("text");
    }
    if want.html != actual.html {
        out.push("html");
    }
    let names = |v: &View| {
        v.attachments
            .iter()
            .map(|a| (a.0.clone(), a.1.clone()))
            .collect::<Vec<_>>()
    };
    if names(want) != names(actual) {
        out.push("attachment names/types");
    }
    let bytes = |v: &View| {
        v.attachments
            .iter()
            .map(|a| a.2.clone())
            .collect::<Vec<_>>()
    };
    if bytes(want) != bytes(actual) {
        out.push("attachment bytes");
    }
    out
}

#[test]
fn every_fixture_walks_to_what_a_mail_reader_shows() {
    let fixtures = fixtures();
    assert!(fixtures.len() >= 40, "fixtures missing from {DIR}");
    let mut failures = Vec::new();
    for (name, raw, want) in &fixtures {
        let actual = walker_view(raw);
        if !differences(want, &actual).is_empty() {
            failures.push(format!("{name}:\n  want {want:?}\n  got  {actual:?}"));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

/// `message::parse` (walk + choose + address lists) shows each fixture as
/// the reader does: subject, bodies and attachments survive the conversion.
#[test]
fn parse_shows_every_fixture_as_a_mail_reader_does() {
    let mut failures = Vec::new();
    for (name, raw, want) in fixtures() {
        let diff = differences(&want, &parsed_view(&raw));
        if !diff.is_empty() {
            failures.push(format!("{name}: {}", diff.join(", ")));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[test]
fn every_prefix_of_every_fixture_walks_without_panic() {
    for (_, raw, _) in fixtures() {
        for end in 0..=raw.len() {
            let mime = walk(&raw[..end]);
            let _ = bodies::choose(&mime);
            assert!(mime.leaves.len() + mime.multiparts.len() <= Limits::default().max_parts);
        }
    }
}

#[test]
fn random_bytes_walk_without_panic() {
    let mut rng = rand::rngs::StdRng::seed_from_u64(0x6d696d65);
    let alphabet: &[u8] = b"-\r\n \t=?;:\"'*%BQbq0123456789abcdefABCDEF/<>_\x80\xff";
    let seed_fixtures = fixtures();
    for round in 0..3000 {
        let len = rng.random_range(0..600);
        let mut raw: Vec<u8> = if round % 2 == 0 {
            (0..len)
                .map(|_| alphabet[rng.random_range(0..alphabet.len())])
                .collect()
        } else {
            (0..len).map(|_| rng.random()).collect()
        };
        if round % 3 == 0 {
            // Splice noise into a real message so the walk reaches deep states.
            let (_, base, _) = &seed_fixtures[round % seed_fixtures.len()];
            let at = rng.random_range(0..=base.len());
            raw = [&base[..at], &raw, &base[at..]].concat();
        }
        let mime = walk(&raw);
        let _ = bodies::choose(&mime);
        for h in &mime.headers {
            let _ = h.text();
        }
    }
}

#[test]
fn nesting_past_the_depth_limit_is_kept_whole_and_flagged() {
    let mut raw = String::new();
    for level in 0..50 {
        raw.push_str(&format!(
            "Content-Type: multipart/mixed; boundary=\"l{level}\"\r\n\r\n--l{level}\r\n"
        ));
    }
    raw.push_str("\r\ndeep text\r\n");
    let mime = walk_with(
        raw.as_bytes(),
        Limits {
            max_depth: 8,
            max_parts: 100,
        },
    );
    assert!(mime.truncated);
    assert_eq!(mime.multiparts.len(), 8);
    assert_eq!(mime.leaves.len(), 1);
    assert_eq!(mime.leaves[0].mime_type(), "message/rfc822");
    assert!(String::from_utf8_lossy(&mime.leaves[0].data).contains("deep text"));
}

#[test]
fn parts_past_the_count_limit_are_not_walked_and_flagged() {
    let mut raw = String::from("Content-Type: multipart/mixed; boundary=b\r\n\r\n");
    for n in 0..100 {
        raw.push_str(&format!("--b\r\n\r\npart {n}\r\n"));
    }
    let mime = walk_with(
        raw.as_bytes(),
        Limits {
            max_depth: 8,
            max_parts: 10,
        },
    );
    assert!(mime.truncated);
    assert_eq!(mime.leaves.len() + mime.multiparts.len(), 10);
    let full = walk(raw.as_bytes());
    assert!(!full.truncated);
    assert_eq!(full.leaves.len(), 100);
}
