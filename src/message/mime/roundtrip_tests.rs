//! Property test: random MIME trees are rendered to bytes and walked back.
//! The trees are built to provoke the failure classes: child boundaries
//! that extend their parent's (`b7`, `b7-1`, `b7-1-0`), lines that start
//! with a boundary but are not delimiters, missing close delimiters at any
//! level, empty and header-only parts, preambles and epilogues, quoted-
//! printable parts ending in a soft break, unpadded base64, and file names
//! in every parameter encoding. Whatever the tree, the walk must return
//! every leaf, in order, with its exact bytes and name: so no part is lost,
//! none swallows a sibling, and no delimiter line leaks into a body.

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use super::walk;

struct Expected {
    data: Vec<u8>,
    name: String,
}

fn text(rng: &mut StdRng, boundaries: &[String]) -> Vec<u8> {
    // No 'b' or digits: random text can never spell a delimiter.
    const ALPHABET: &[u8] = b"ace -=.\t\r\n\xc3\xa9";
    let mut out: Vec<u8> = (0..rng.random_range(0..80))
        .map(|_| ALPHABET[rng.random_range(0..ALPHABET.len())])
        .collect();
    if let Some(b) = boundaries.get(rng.random_range(0..boundaries.len().max(1))) {
        // Looks like a delimiter of an enclosing boundary, but is not one.
        out.extend_from_slice(format!("\r\n--{b}-x\r\nmid --{b}\r\n--{b}x--").as_bytes());
    }
    out
}

fn qp_encode(data: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    for (i, b) in data.iter().enumerate() {
        if i > 0 && i % 20 == 0 {
            out.extend_from_slice(b"=\r\n");
        }
        out.extend_from_slice(format!("={b:02X}").as_bytes());
    }
    out.extend_from_slice(b"=");
    out
}

fn name_params(rng: &mut StdRng, name: &str) -> String {
    match rng.random_range(0..4) {
        0 => format!("attachment; filename={name}"),
        1 => format!("attachment;\r\n\tfilename=\r\n \"{name}\""),
        2 => {
            let (a, b) = name.split_at(2);
            format!("attachment; filename*0*=utf-8''{a}; filename*1=\"{b}\"")
        }
        _ => format!(
            "attachment; filename=\"=?utf-8?q?{}?= =?utf-8?b?{}?=\"",
            &name[..2],
            {
                use base64::Engine as _;
                base64::engine::general_purpose::STANDARD_NO_PAD.encode(&name[2..])
            }
        ),
    }
}

fn leaf(rng: &mut StdRng, boundaries: &[String], out: &mut Vec<u8>, expected: &mut Vec<Expected>) {
    let name = format!("f{}.bin", expected.len());
    let disposition = name_params(rng, &name);
    let data: Vec<u8>;
    match rng.random_range(0..5) {
        0 => {
            data = (0..rng.random_range(0..60)).map(|_| rng.random()).collect();
            use base64::Engine as _;
            let encoded = base64::engine::general_purpose::STANDARD_NO_PAD.encode(&data);
            out.extend_from_slice(format!("Content-Type: application/octet-stream\r\nContent-Disposition: {disposition}\r\nContent-Transfer-Encoding: base64\r\n\r\n{encoded}").as_bytes());
        }
        1 => {
            data = (0..rng.random_range(0..60)).map(|_| rng.random()).collect();
            out.extend_from_slice(format!("Content-Type: application/octet-stream\r\nContent-Disposition: {disposition}\r\nContent-Transfer-Encoding: quoted-printable\r\n\r\n").as_bytes());
            out.extend(qp_encode(&data));
        }
        2 => {
            // Header-only: no blank line, no body.
            data = Vec::new();
            out.extend_from_slice(
                format!(
                    "Content-Type: application/octet-stream\r\nContent-Disposition: {disposition}"
                )
                .as_bytes(),
            );
        }
        _ => {
            data = text(rng, boundaries);
            out.extend_from_slice(format!("Content-Type: application/octet-stream\r\nContent-Disposition: {disposition}\r\n\r\n").as_bytes());
            out.extend_from_slice(&data);
        }
    }
    expected.push(Expected { data, name });
}

fn multipart(
    rng: &mut StdRng,
    boundaries: &mut Vec<String>,
    depth: usize,
    out: &mut Vec<u8>,
    expected: &mut Vec<Expected>,
) {
    let boundary = match boundaries.last() {
        Some(parent) => format!("{parent}-{}", rng.random_range(0..3)),
        None => format!("b{}", rng.random_range(0..10)),
    };
    out.extend_from_slice(
        format!("Content-Type: multipart/mixed; boundary=\"{boundary}\"\r\n\r\n").as_bytes(),
    );
    boundaries.push(boundary.clone());
    let parts = rng.random_range(0..4);
    // A multipart with no delimiter at all is kept as text (see walk.rs),
    // so a preamble only goes before real parts.
    if parts > 0 && rng.random_bool(0.5) {
        out.extend(text(rng, &[]));
    }
    // Each delimiter owns the line break before it (RFC 2046), so the
    // part bytes end exactly where the next delimiter's CRLF starts.
    for _ in 0..parts {
        out.extend_from_slice(format!("\r\n--{boundary}\r\n").as_bytes());
        if depth < 3 && rng.random_bool(0.3) {
            multipart(rng, boundaries, depth + 1, out, expected);
        } else {
            leaf(rng, boundaries, out, expected);
        }
    }
    boundaries.pop();
    if rng.random_bool(0.7) {
        out.extend_from_slice(format!("\r\n--{boundary}--").as_bytes());
        if rng.random_bool(0.5) {
            out.extend_from_slice(b"\r\n");
            out.extend(text(rng, &[]));
        }
    }
}

#[test]
fn random_trees_walk_back_to_every_leaf_with_its_exact_bytes_and_name() {
    let mut rng = StdRng::seed_from_u64(0x7472_6565);
    let mut leaves = 0;
    for round in 0..1500 {
        let mut raw = b"From: a@example.com\r\nMIME-Version: 1.0\r\n".to_vec();
        let mut expected = Vec::new();
        multipart(&mut rng, &mut Vec::new(), 0, &mut raw, &mut expected);
        let mime = walk(&raw);
        let got: Vec<(&[u8], Option<&str>)> = mime
            .leaves
            .iter()
            .map(|l| (l.data.as_slice(), l.filename.as_deref()))
            .collect();
        let want: Vec<(&[u8], Option<&str>)> = expected
            .iter()
            .map(|e| (e.data.as_slice(), Some(e.name.as_str())))
            .collect();
        assert_eq!(
            got,
            want,
            "round {round}:\n{}",
            String::from_utf8_lossy(&raw)
        );
        leaves += want.len();
    }
    assert!(leaves > 2000, "generator too tame: {leaves} leaves");
}
