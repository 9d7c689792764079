//! Encoding a message's JSON fields once, quickly: a string (a body or an
//! attachment of tens of kilobytes or more) is quoted by copying the runs
//! that need no escape whole, eight bytes checked at a time, instead of
//! byte by byte.
//!
//! Invariant: [`encode`] writes exactly what `serde_json::to_vec` writes
//! for the same value: the same escapes, nothing else escaped, so what we
//! send is what serde_json would send (table, random and fuzz tests hold
//! the two side by side).

use serde_json::Value;

const LO: u64 = 0x0101_0101_0101_0101;
const HI: u64 = 0x8080_8080_8080_8080;

/// `value` as compact JSON, exactly as `serde_json::to_vec` writes it.
pub fn encode(value: &Value) -> Vec<u8> {
    let mut out = Vec::new();
    encode_into(value, &mut out);
    out
}

fn encode_into(value: &Value, out: &mut Vec<u8>) {
    match value {
        Value::String(s) => quote_into(s, out),
        Value::Array(items) => {
            out.push(b'[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push(b',');
                }
                encode_into(item, out);
            }
            out.push(b']');
        }
        Value::Object(map) => {
            out.push(b'{');
            for (i, (k, v)) in map.iter().enumerate() {
                if i > 0 {
                    out.push(b',');
                }
                quote_into(k, out);
                out.push(b':');
                encode_into(v, out);
            }
            out.push(b'}');
        }
        // null, booleans and numbers: short, and serde_json's own text.
        other => out.extend_from_slice(other.to_string().as_bytes()),
    }
}

/// The length of `s` as a JSON string literal.
pub fn quoted_len(s: &str) -> usize {
    let mut out = Vec::with_capacity(s.len() + 2);
    quote_into(s, &mut out);
    out.len()
}

/// Appends `s` as a JSON string literal, escaped as serde_json escapes it:
/// runs that need no escape are found eight bytes at a time and copied whole.
pub fn quote_into(s: &str, out: &mut Vec<u8>) {
    let bytes = s.as_bytes();
    // Room for the quotes and a line break's escapes every 32 bytes or so.
    out.reserve(bytes.len() + bytes.len() / 16 + 8);
    out.push(b'"');
    let (mut run, mut at) = (0, 0);
    while let Some(word) = bytes.get(at..at + 8) {
        let mask = escape_mask(u64::from_le_bytes(word.try_into().expect("8 bytes")));
        if mask == 0 {
            at += 8;
            continue;
        }
        // The lowest flagged byte is exactly the first one to escape.
        let i = at + (mask.trailing_zeros() / 8) as usize;
        out.extend_from_slice(&bytes[run..i]);
        push_escape(out, bytes[i]);
        (run, at) = (i + 1, i + 1);
    }
    for (i, &b) in bytes.iter().enumerate().skip(at) {
        if needs_escape(b) {
            out.extend_from_slice(&bytes[run..i]);
            push_escape(out, b);
            run = i + 1;
        }
    }
    out.extend_from_slice(&bytes[run..]);
    out.push(b'"');
}

/// The high bit of each byte of `w` that is below 0x20, `"` or `\`, and
/// possibly of bytes above such a byte (a borrow carries up), never below
/// the first: its lowest set bit marks the first byte to escape.
fn escape_mask(w: u64) -> u64 {
    let below_space = w.wrapping_sub(LO * 0x20) & !w & HI;
    below_space | zero_bytes(w ^ (LO * u64::from(b'"'))) | zero_bytes(w ^ (LO * u64::from(b'\\')))
}

fn zero_bytes(w: u64) -> u64 {
    w.wrapping_sub(LO) & !w & HI
}

fn needs_escape(b: u8) -> bool {
    b < 0x20 || b == b'"' || b == b'\\'
}

/// serde_json's escape of `b`: a short one where JSON has it, else `\u00XX`.
fn push_escape(out: &mut Vec<u8>, b: u8) {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let short = match b {
        b'"' => b'"',
        b'\\' => b'\\',
        0x08 => b'b',
        0x09 => b't',
        0x0A => b'n',
        0x0C => b'f',
        0x0D => b'r',
        _ => {
            out.extend_from_slice(&[
                b'\\',
                b'u',
                b'0',
                b'0',
                HEX[usize::from(b >> 4)],
                HEX[usize::from(b & 0xF)],
            ]);
            return;
        }
    };
    out.extend_from_slice(&[b'\\', short]);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn strings_encode_exactly_as_serde_json_encodes_them() {
        let mut cases: Vec<String> = [
            "",
            "plain text of some length, more than eight bytes",
            "\"quoted\" and back\\slash",
            "tab\there, cr\r\nlf, bell\u{7}, nul\u{0}, del\u{7f}, unit\u{1f}",
            "h\u{e9}llo w\u{f6}rld \u{1F600} \u{2028}",
            "/ solidus and <script> stay as they are",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        // Every byte below 0x80 at every offset of a word.
        for b in 0u8..0x80 {
            for at in 0..9 {
                let mut s = "abcdefghijklmnop".to_string();
                s.insert(at, char::from(b));
                cases.push(s);
            }
        }
        for s in cases {
            let value = Value::String(s.clone());
            let want = serde_json::to_string(&value).unwrap();
            let mut quoted = Vec::new();
            quote_into(&s, &mut quoted);
            assert_eq!(String::from_utf8(quoted).unwrap(), want, "{s:?}");
            assert_eq!(quoted_len(&s), want.len(), "{s:?}");
            assert_eq!(encode(&value), want.as_bytes(), "{s:?}");
        }
    }

    #[test]
    fn random_strings_encode_exactly_as_serde_json_encodes_them() {
        use rand::{Rng, SeedableRng};
        let alphabet: Vec<char> = ('\u{0}'..='\u{7f}')
            .chain(['\u{e9}', '\u{2028}', '\u{1F600}', '\u{ffff}'])
            .collect();
        let mut rng = rand::rngs::StdRng::seed_from_u64(20261202);
        for _ in 0..3000 {
            let len = rng.random_range(0..64);
            let s: String = (0..len)
                .map(|_| {
                    // Mostly plain text, as mail is, with escapes among it.
                    if rng.random_bool(0.8) {
                        'a'
                    } else {
                        alphabet[rng.random_range(0..alphabet.len())]
                    }
                })
                .collect();
            let value = Value::String(s);
            assert_eq!(encode(&value), serde_json::to_vec(&value).unwrap());
        }
    }

    #[test]
    fn other_values_encode_as_serde_json_encodes_them() {
        let values = [
            serde_json::json!(null),
            serde_json::json!(true),
            serde_json::json!(1.5),
            serde_json::json!(-9_223_372_036_854_775_808i64),
            serde_json::json!(u64::MAX),
            serde_json::json!(1.7976931348623157e308),
            serde_json::json!(1e-7),
            serde_json::json!([]),
            serde_json::json!({}),
            serde_json::json!([{"Name": "a\"b", "Content": "x\ny"}]),
            serde_json::json!({"k": "v\u{1}"}),
        ];
        for value in values {
            assert_eq!(encode(&value), serde_json::to_vec(&value).unwrap());
        }
    }
}
