//! Encoding a message's JSON fields once, quickly: a string (a body or an
//! attachment of tens of kilobytes or more) is quoted by copying the runs
//! that need no escape whole, eight bytes checked at a time, instead of
//! byte by byte.
//!
//! Invariant: [`encode`] writes exactly what `serde_json::to_string` writes
//! for the same value (the same escapes, nothing else escaped), and the
//! result is checked to parse as JSON before it is used; anything else
//! falls back to serde_json's own encoding.

use serde_json::Value;
use serde_json::value::RawValue;

const LO: u64 = 0x0101_0101_0101_0101;
const HI: u64 = 0x8080_8080_8080_8080;

/// `value` encoded as JSON.
pub fn encode(value: &Value) -> Box<RawValue> {
    let mut out = String::new();
    encode_into(value, &mut out);
    RawValue::from_string(out).unwrap_or_else(|_| {
        // A JSON value has string keys and finite numbers only: encoding
        // one cannot fail.
        serde_json::value::to_raw_value(value).expect("a JSON value encodes")
    })
}

/// Appends `value` as compact JSON, as `serde_json::to_string` writes it.
fn encode_into(value: &Value, out: &mut String) {
    match value {
        Value::String(s) => quote_into(s, out),
        Value::Array(items) => {
            out.push('[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                encode_into(item, out);
            }
            out.push(']');
        }
        Value::Object(map) => {
            out.push('{');
            for (i, (k, v)) in map.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                quote_into(k, out);
                out.push(':');
                encode_into(v, out);
            }
            out.push('}');
        }
        // null, booleans and numbers: short, and serde_json's own text.
        other => out.push_str(&other.to_string()),
    }
}

/// Appends `s` as a JSON string literal, escaped as serde_json escapes it.
fn quote_into(s: &str, out: &mut String) {
    let bytes = s.as_bytes();
    out.reserve(bytes.len() + 2);
    out.push('"');
    let mut start = 0;
    let mut at = 0;
    while at < bytes.len() {
        if at + 8 <= bytes.len() {
            let w = u64::from_le_bytes(bytes[at..at + 8].try_into().expect("8 bytes"));
            if !needs_escape(w) {
                at += 8;
                continue;
            }
        }
        let b = bytes[at];
        if let Some(escape) = escape(b) {
            out.push_str(&s[start..at]);
            push_escape(out, b, escape);
            start = at + 1;
        }
        at += 1;
    }
    out.push_str(&s[start..]);
    out.push('"');
}

/// Whether some byte of `w` may need an escape (below 0x20, `"` or `\`);
/// a false alarm only sends that word through the byte-wise path.
fn needs_escape(w: u64) -> bool {
    let below_space = w.wrapping_sub(LO * 0x20) & !w & HI;
    let quote = has_zero(w ^ (LO * u64::from(b'"')));
    let backslash = has_zero(w ^ (LO * u64::from(b'\\')));
    below_space | quote | backslash != 0
}

fn has_zero(w: u64) -> u64 {
    w.wrapping_sub(LO) & !w & HI
}

/// serde_json's escape for byte `b`: `Some('u')` for `\u00XX`.
fn escape(b: u8) -> Option<char> {
    Some(match b {
        b'"' => '"',
        b'\\' => '\\',
        0x08 => 'b',
        0x09 => 't',
        0x0A => 'n',
        0x0C => 'f',
        0x0D => 'r',
        0x00..=0x1F => 'u',
        _ => return None,
    })
}

fn push_escape(out: &mut String, b: u8, escape: char) {
    out.push('\\');
    if escape == 'u' {
        const HEX: &[u8; 16] = b"0123456789abcdef";
        out.push_str("u00");
        out.push(char::from(HEX[usize::from(b >> 4)]));
        out.push(char::from(HEX[usize::from(b & 0xF)]));
    } else {
        out.push(escape);
    }
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
            let mut quoted = String::new();
            quote_into(&s, &mut quoted);
            assert_eq!(quoted, want, "{s:?}");
            assert_eq!(encode(&value).get(), want, "{s:?}");
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
            assert_eq!(encode(&value).get(), serde_json::to_string(&value).unwrap());
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
            assert_eq!(encode(&value).get(), serde_json::to_string(&value).unwrap());
        }
    }
}
