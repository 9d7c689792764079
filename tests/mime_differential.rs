//! Differential test of the MIME decoding, end to end through the Postmark
//! mapping: a varied set of messages (clients' shapes, charsets, transfer
//! encodings, broken structure), each with what a mail reader shows written
//! down by hand: `TextBody`, `HtmlBody`, and per attachment its name,
//! content type and the sha256 of its decoded bytes. The hashes were taken
//! from the original payloads before they were encoded into the messages,
//! never from the mapping's output. A part's bytes end before the line
//! break that precedes the next delimiter (RFC 2046: that break belongs to
//! the delimiter), so an 8-bit part has no trailing CRLF.

use base64::Engine as _;
use postrelay::mapping::{MappingOptions, postmark};
use postrelay::message::Envelope;
use serde_json::Value;

/// What the request must carry.
struct Expect {
    text: Option<&'static str>,
    html: Option<&'static str>,
    /// (name, content type, sha256 hex of the decoded bytes)
    attachments: &'static [(&'static str, &'static str, &'static str)],
}

const PDF_SHA: &str = "aa159efb3488421fe3429c7a4619cae5840eed12bafa58da6f2a4d474768e896";
const PDF_B64: &str = "JVBERi0xLjQKJeLjz9MKMSAwIG9iago8PD4+CmVuZG9iago=";
const PNG_SHA: &str = "b554362dbc1360da2a764e0e65175a8d913cf714fc65e866c3dfe26b167f89a8";
const PNG_B64: &str = "AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8gISIjJCUmJygpKissLS4vMDEyMzQ1Njc4\nOTo7PD0+P4lQTkcNChoK";
const CAL_SHA: &str = "0f29b418f1b0744e94814c1d833988287ad30c44598714aad1f9cf06a642e5f9";
const UU_SHA: &str = "ec5b72e2e378c9db50baa2885b62169f9412cd366b9b58ce6e6041700ad48bad";
const ZIP_SHA: &str = "d45a4c0a20e931d06d9ff57fc57ccdd4dc91520e190aecc4fc88b50fb58ddd8c";
const ZIP_B64_UNPADDED: &str = "UEsDBAABAgMEBQYHCAkKCwwNDg8QERITFBUWFxgZGhscHR4fICEiIyQlJic";
const RFC822_SHA: &str = "de02a5407af0d461020866a32181e921aad2c1067740bacffb5680f43508560f";
const EMPTY_SHA: &str = "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";
const CSV_SHA: &str = "d987df07c4e59cb9db331ce1c74becb1c3c66d9f9dab78ce4055b36c55110020";
const NOTE_SHA: &str = "228d3ec6ef922c31664afb78704ac45d79ff7b6a951973b038770f78b09ad708";

fn cases() -> Vec<(&'static str, Vec<u8>, Expect)> {
    let mut cases = Vec::new();
    let mut add = |name, raw: String, expect| {
        cases.push((name, raw.replace('\n', "\r\n").into_bytes(), expect));
    };
    add(
        "outlook related + alternative with inline image and RFC 2231 pdf",
        format!(
            "From: a@example.com\nTo: r@example.net\nSubject: report\nMIME-Version: 1.0\n\
             Content-Type: multipart/mixed; boundary=\"m\"\n\n--m\n\
             Content-Type: multipart/related; boundary=\"r\"\n\n--r\n\
             Content-Type: multipart/alternative; boundary=\"a\"\n\n--a\n\
             Content-Type: text/plain; charset=\"us-ascii\"\n\nSee the chart.\n--a\n\
             Content-Type: text/html; charset=\"us-ascii\"\n\n<p>See <img src=\"cid:chart@x\"></p>\n--a--\n\n--r\n\
             Content-Type: image/png\nContent-ID: <chart@x>\nContent-Transfer-Encoding: base64\n\n{PNG_B64}\n--r--\n\n--m\n\
             Content-Type: application/pdf\nContent-Transfer-Encoding: base64\n\
             Content-Disposition: attachment;\n filename*0*=utf-8''Q3%20report%20;\n filename*1*=%E2%82%AC.pdf\n\n{PDF_B64}\n--m--\n"
        ),
        Expect {
            text: Some("See the chart."),
            html: Some("<p>See <img src=\"cid:chart@x\"></p>"),
            attachments: &[
                ("attachment-1.png", "image/png", PNG_SHA),
                ("Q3 report €.pdf", "application/pdf", PDF_SHA),
            ],
        },
    );
    add(
        "latin-1 quoted-printable html with soft breaks, no text part",
        "From: a@example.com\nTo: r@example.net\nSubject: qp\n\
         Content-Type: text/html; charset=iso-8859-1\nContent-Transfer-Encoding: quoted-printable\n\n\
         <p>Gr=FC=DFe aus K=F6ln, a long line that the sender's client bro=\nke in two.</p>=\n"
            .into(),
        Expect {
            text: None,
            html: Some(
                "<p>Grüße aus Köln, a long line that the sender's client broke in two.</p>",
            ),
            attachments: &[],
        },
    );
    add(
        "unpadded base64 zip and an x-uuencode part",
        format!(
            "From: a@example.com\nTo: r@example.net\nSubject: files\n\
             Content-Type: multipart/mixed; boundary=b\n\n--b\n\nfiles attached\n--b\n\
             Content-Type: application/zip; name=\"bundle.zip\"\nContent-Transfer-Encoding: base64\n\n{ZIP_B64_UNPADDED}\n--b\n\
             Content-Type: application/octet-stream\nContent-Transfer-Encoding: x-uuencode\n\n\
             begin 644 data.dat\n:=75E;F-O9&5D('!A>6QO860@`/\\0(&5N9`H`\n`\nend\n--b--\n"
        ),
        Expect {
            text: Some("files attached"),
            html: None,
            attachments: &[
                ("bundle.zip", "application/zip", ZIP_SHA),
                ("data.dat", "application/octet-stream", UU_SHA),
            ],
        },
    );
    add(
        "euc-kr subject and base64 body",
        "From: a@example.com\nTo: r@example.net\nSubject: =?euc-kr?B?x9Gxub7uIMXXvbrGrg==?=\n\
         Content-Type: text/plain; charset=euc-kr\nContent-Transfer-Encoding: base64\n\nx9Gxub7uIMXXvbrGrg==\n"
            .into(),
        Expect {
            text: Some("한국어 테스트"),
            html: None,
            attachments: &[],
        },
    );
    add(
        "unclosed nested alternative does not swallow the pdf",
        format!(
            "From: a@example.com\nTo: r@example.net\nSubject: nested\n\
             Content-Type: multipart/mixed; boundary=outer\n\n--outer\n\
             Content-Type: multipart/alternative; boundary=inner\n\n--inner\n\
             Content-Type: text/plain\n\nplain\n--inner\nContent-Type: text/html\n\n<b>html</b>\n--outer\n\
             Content-Type: application/pdf; name=r.pdf\nContent-Transfer-Encoding: base64\n\n{PDF_B64}\n--outer--\n"
        ),
        Expect {
            text: Some("plain"),
            html: Some("<b>html</b>"),
            attachments: &[("r.pdf", "application/pdf", PDF_SHA)],
        },
    );
    add(
        "forwarded message, empty forwarded message and a calendar invite",
        "From: a@example.com\nTo: r@example.net\nSubject: fwd\n\
         Content-Type: multipart/mixed; boundary=f\n\n--f\n\nsee below\n--f\n\
         Content-Type: message/rfc822\n\nFrom: inner@example.org\nSubject: inner\n\ninner body\n--f\n\
         Content-Type: message/rfc822; name=empty.eml\n\n--f\n\
         Content-Type: text/calendar; method=REQUEST; charset=utf-8\nContent-Disposition: attachment; filename=invite.ics\n\n\
         BEGIN:VCALENDAR\nMETHOD:REQUEST\nEND:VCALENDAR\n--f--\n"
            .into(),
        Expect {
            text: Some("see below"),
            html: None,
            attachments: &[
                ("attachment-1.eml", "message/rfc822", RFC822_SHA),
                ("empty.eml", "message/rfc822", EMPTY_SHA),
                (
                    "invite.ics",
                    "text/calendar; charset=utf-8; method=REQUEST",
                    CAL_SHA,
                ),
            ],
        },
    );
    add(
        "html body then a nameless text part and a latin-1 csv in mixed",
        "From: a@example.com\nTo: r@example.net\nSubject: mixed\n\
         Content-Type: multipart/mixed; boundary=x\n\n--x\nContent-Type: text/html\n\n<p>body</p>\n--x\n\
         Content-Type: text/plain\n\nnameless note\n--x\n\
         Content-Type: text/csv; charset=iso-8859-1\nContent-Disposition: attachment; filename=\"=?utf-8?Q?d=C3=A9j=C3=A0?=\n =?utf-8?Q?_vu.csv?=\"\nContent-Transfer-Encoding: quoted-printable\n\ncaf=E9;1\n--x--\n"
            .into(),
        Expect {
            text: None,
            html: Some("<p>body</p>"),
            attachments: &[
                ("attachment-1.txt", "text/plain", NOTE_SHA),
                ("déjà vu.csv", "text/csv; charset=iso-8859-1", CSV_SHA),
            ],
        },
    );
    add(
        "undeclared 8-bit windows-1252 text",
        "From: a@example.com\nTo: r@example.net\nSubject: cp1252\n\nPLACEHOLDER".into(),
        Expect {
            text: Some("\u{201c}Prix\u{201d} 5 \u{20ac}, caf\u{e9}"),
            html: None,
            attachments: &[],
        },
    );
    cases
        .into_iter()
        .map(|(name, raw, expect)| {
            // Raw 8-bit bytes cannot live in a Rust string literal.
            let raw = replace(&raw, b"PLACEHOLDER", b"\x93Prix\x94 5 \x80, caf\xe9\r\n");
            (name, raw, expect)
        })
        .collect()
}

fn replace(haystack: &[u8], needle: &[u8], with: &[u8]) -> Vec<u8> {
    match haystack.windows(needle.len()).position(|w| w == needle) {
        Some(at) => [&haystack[..at], with, &haystack[at + needle.len()..]].concat(),
        None => haystack.to_vec(),
    }
}

fn trimmed(v: &Value) -> Option<String> {
    v.as_str()
        .map(|s| s.replace("\r\n", "\n").trim_end().to_string())
}

#[test]
fn decoded_bodies_and_attachment_bytes_match_what_a_reader_shows() {
    let envelope = Envelope {
        mail_from: "a@example.com".into(),
        rcpt_to: vec!["r@example.net".into()],
    };
    let opts = MappingOptions {
        default_stream: "outbound".into(),
        ignore_unsupported: false,
        max_message_size: 10 << 20,
    };
    let mut failures = Vec::new();
    for (name, raw, want) in cases() {
        let mapped = match postmark::map(&envelope, &raw, &opts) {
            Ok(m) => m,
            Err(e) => {
                failures.push(format!("{name}: refused: {e}"));
                continue;
            }
        };
        let body = mapped.calls[0].body();
        let text = trimmed(&body["TextBody"]).filter(|t| t != postmark::FALLBACK_TEXT_BODY);
        if text.as_deref() != want.text {
            failures.push(format!("{name}: TextBody {text:?}, want {:?}", want.text));
        }
        let html = trimmed(&body["HtmlBody"]);
        if html.as_deref() != want.html {
            failures.push(format!("{name}: HtmlBody {html:?}, want {:?}", want.html));
        }
        let got: Vec<(String, String, String)> = body["Attachments"]
            .as_array()
            .map(Vec::as_slice)
            .unwrap_or_default()
            .iter()
            .map(|a| {
                let bytes = base64::engine::general_purpose::STANDARD
                    .decode(a["Content"].as_str().unwrap())
                    .unwrap();
                (
                    a["Name"].as_str().unwrap().to_string(),
                    a["ContentType"].as_str().unwrap().to_string(),
                    hex(&sha256(&bytes)),
                )
            })
            .collect();
        let want_attachments: Vec<(String, String, String)> = want
            .attachments
            .iter()
            .map(|(n, t, h)| (n.to_string(), t.to_string(), h.to_string()))
            .collect();
        if got != want_attachments {
            failures.push(format!(
                "{name}: attachments\n  got  {got:?}\n  want {want_attachments:?}"
            ));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[test]
fn the_test_sha256_matches_known_answers() {
    assert_eq!(hex(&sha256(b"")), EMPTY_SHA);
    assert_eq!(
        hex(&sha256(b"abc")),
        "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
    );
    let long = vec![b'a'; 1000];
    assert_eq!(
        hex(&sha256(&long)),
        "41edece42d63e8d9bf515a9ba6932e1c20cbc9f5a5d134645adb5db1b9737ea3"
    );
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// FIPS 180-4 SHA-256 (the crate has no hashing dependency; this is only
/// for comparing decoded bytes with recorded digests).
fn sha256(data: &[u8]) -> [u8; 32] {
    const K: [u32; 64] = [
        0x428a2f98, 0x71374491, 0xb5c0fbcf, 0xe9b5dba5, 0x3956c25b, 0x59f111f1, 0x923f82a4,
        0xab1c5ed5, 0xd807aa98, 0x12835b01, 0x243185be, 0x550c7dc3, 0x72be5d74, 0x80deb1fe,
        0x9bdc06a7, 0xc19bf174, 0xe49b69c1, 0xefbe4786, 0x0fc19dc6, 0x240ca1cc, 0x2de92c6f,
        0x4a7484aa, 0x5cb0a9dc, 0x76f988da, 0x983e5152, 0xa831c66d, 0xb00327c8, 0xbf597fc7,
        0xc6e00bf3, 0xd5a79147, 0x06ca6351, 0x14292967, 0x27b70a85, 0x2e1b2138, 0x4d2c6dfc,
        0x53380d13, 0x650a7354, 0x766a0abb, 0x81c2c92e, 0x92722c85, 0xa2bfe8a1, 0xa81a664b,
        0xc24b8b70, 0xc76c51a3, 0xd192e819, 0xd6990624, 0xf40e3585, 0x106aa070, 0x19a4c116,
        0x1e376c08, 0x2748774c, 0x34b0bcb5, 0x391c0cb3, 0x4ed8aa4a, 0x5b9cca4f, 0x682e6ff3,
        0x748f82ee, 0x78a5636f, 0x84c87814, 0x8cc70208, 0x90befffa, 0xa4506ceb, 0xbef9a3f7,
        0xc67178f2,
    ];
    let mut h: [u32; 8] = [
        0x6a09e667, 0xbb67ae85, 0x3c6ef372, 0xa54ff53a, 0x510e527f, 0x9b05688c, 0x1f83d9ab,
        0x5be0cd19,
    ];
    let mut msg = data.to_vec();
    msg.push(0x80);
    while msg.len() % 64 != 56 {
        msg.push(0);
    }
    msg.extend_from_slice(&((data.len() as u64) * 8).to_be_bytes());
    for block in msg.chunks(64) {
        let mut w = [0u32; 64];
        for (i, word) in block.chunks(4).enumerate() {
            w[i] = u32::from_be_bytes([word[0], word[1], word[2], word[3]]);
        }
        for i in 16..64 {
            let s0 = w[i - 15].rotate_right(7) ^ w[i - 15].rotate_right(18) ^ (w[i - 15] >> 3);
            let s1 = w[i - 2].rotate_right(17) ^ w[i - 2].rotate_right(19) ^ (w[i - 2] >> 10);
            w[i] = w[i - 16]
                .wrapping_add(s0)
                .wrapping_add(w[i - 7])
                .wrapping_add(s1);
        }
        let [mut a, mut b, mut c, mut d, mut e, mut f, mut g, mut hh] = h;
        for i in 0..64 {
            let s1 = e.rotate_right(6) ^ e.rotate_right(11) ^ e.rotate_right(25);
            let ch = (e & f) ^ (!e & g);
            let t1 = hh
                .wrapping_add(s1)
                .wrapping_add(ch)
                .wrapping_add(K[i])
                .wrapping_add(w[i]);
            let s0 = a.rotate_right(2) ^ a.rotate_right(13) ^ a.rotate_right(22);
            let maj = (a & b) ^ (a & c) ^ (b & c);
            let t2 = s0.wrapping_add(maj);
            hh = g;
            g = f;
            f = e;
            e = d.wrapping_add(t1);
            d = c;
            c = b;
            b = a;
            a = t1.wrapping_add(t2);
        }
        for (slot, v) in h.iter_mut().zip([a, b, c, d, e, f, g, hh]) {
            *slot = slot.wrapping_add(v);
        }
    }
    let mut out = [0u8; 32];
    for (i, v) in h.iter().enumerate() {
        out[i * 4..i * 4 + 4].copy_from_slice(&v.to_be_bytes());
    }
    out
}
