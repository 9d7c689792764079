//! Charset labels → text. Owns the one rule for turning bytes into UTF-8:
//! a label `encoding_rs` knows (plus the aliases mail software writes that
//! the Encoding Standard lacks) decodes with that encoding; a missing or
//! unknown label keeps valid UTF-8 and reads anything else as Windows-1252,
//! which is what undeclared 8-bit mail almost always is. Never fails.

use encoding_rs::{Encoding, REPLACEMENT, UTF_8, WINDOWS_1252};

/// Labels seen in mail that the WHATWG label table does not list.
const ALIASES: &[(&str, &str)] = &[
    ("cp932", "shift_jis"),
    ("ms932", "shift_jis"),
    ("cp936", "gbk"),
    ("ms936", "gbk"),
    ("cp949", "euc-kr"),
    ("ms949", "euc-kr"),
    ("uhc", "euc-kr"),
    ("ks_c_5601", "euc-kr"),
    ("ks_c_5601-1989", "euc-kr"),
    ("cp950", "big5"),
    ("ms950", "big5"),
    ("euc-cn", "gbk"),
    ("x-gb2312", "gbk"),
    ("x-big5", "big5"),
    ("x-euc-kr", "euc-kr"),
    ("ansi_x3.4-1986", "us-ascii"),
    ("iso646-us", "us-ascii"),
    ("646", "us-ascii"),
];

/// Labels that declare plain ASCII; mail mislabelled this way is usually UTF-8.
const ASCII_LABELS: &[&str] = &["us-ascii", "ascii", "ansi_x3.4-1968", "ansi_x3.4-1986"];

/// The encoding a charset label names, or `None` when it is unknown (the
/// WHATWG "replacement" encoding counts as unknown: it would drop the text).
pub fn lookup(label: &str) -> Option<&'static Encoding> {
    let label = label.trim().trim_matches(['"', '\'']).to_ascii_lowercase();
    let label = ALIASES
        .iter()
        .find(|(alias, _)| *alias == label)
        .map_or(label.as_str(), |(_, canonical)| canonical);
    let found = Encoding::for_label_no_replacement(label.as_bytes()).or_else(|| {
        // `cp1250`..`cp1258` are labels already; `cp-1252` and `windows1252` are not.
        let digits: String = label.chars().filter(char::is_ascii_digit).collect();
        let windows = label.starts_with("cp") || label.starts_with("windows");
        (windows && digits.len() == 4)
            .then(|| Encoding::for_label(format!("windows-{digits}").as_bytes()))
            .flatten()
    });
    found.filter(|e| *e != REPLACEMENT)
}

/// Decodes `bytes` declared as `label` (if any) to UTF-8.
pub fn decode(label: Option<&str>, bytes: &[u8]) -> String {
    let declared = label.filter(|l| !l.trim().is_empty());
    match declared.and_then(lookup) {
        Some(enc) if enc == UTF_8 => UTF_8.decode_with_bom_removal(bytes).0.into_owned(),
        Some(_) if is_ascii_label(declared) => undeclared(bytes),
        Some(enc) => enc.decode(bytes).0.into_owned(),
        None => undeclared(bytes),
    }
}

/// [`decode`], taking the bytes: when `decode` would return them as they
/// are (valid UTF-8 read as UTF-8, no byte-order mark to drop), they become
/// the string without a copy.
pub fn decode_owned(label: Option<&str>, bytes: Vec<u8>) -> String {
    let declared = label.filter(|l| !l.trim().is_empty());
    let as_is = match declared.and_then(lookup) {
        Some(enc) if enc == UTF_8 => !bytes.starts_with(b"\xef\xbb\xbf"),
        Some(_) => is_ascii_label(declared),
        None => true,
    };
    if !as_is {
        return decode(label, &bytes);
    }
    String::from_utf8(bytes).unwrap_or_else(|e| decode(label, e.as_bytes()))
}

/// A label naming ASCII, under which UTF-8 bytes are still read as UTF-8.
fn is_ascii_label(declared: Option<&str>) -> bool {
    declared.is_some_and(|l| {
        ASCII_LABELS.contains(&l.trim().trim_matches('"').to_ascii_lowercase().as_str())
    })
}

/// Bytes with no usable label: UTF-8 when they are valid UTF-8, else Windows-1252.
pub fn undeclared(bytes: &[u8]) -> String {
    match std::str::from_utf8(bytes) {
        Ok(s) => s.to_string(),
        Err(_) => WINDOWS_1252
            .decode_without_bom_handling(bytes)
            .0
            .into_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mail_aliases_resolve_to_their_encoding() {
        let cases = [
            ("ks_c_5601-1987", "EUC-KR"),
            ("KS_C_5601-1987", "EUC-KR"),
            ("x-sjis", "Shift_JIS"),
            ("gb2312", "GBK"),
            ("cp936", "GBK"),
            ("cp949", "EUC-KR"),
            ("cp932", "Shift_JIS"),
            ("\"iso-2022-jp\"", "ISO-2022-JP"),
            ("big5", "Big5"),
            ("gb18030", "gb18030"),
            ("cp-1251", "windows-1251"),
            ("latin1", "windows-1252"),
        ];
        for (label, name) in cases {
            assert_eq!(lookup(label).map(|e| e.name()), Some(name), "{label}");
        }
    }

    #[test]
    fn unknown_and_replacement_labels_are_unknown() {
        for label in ["x-unknown", "iso-2022-kr", "hz-gb-2312", ""] {
            assert_eq!(lookup(label), None, "{label}");
        }
    }

    #[test]
    fn undeclared_8bit_that_is_not_utf8_reads_as_windows_1252() {
        assert_eq!(decode(None, b"Gr\xfc\xdfe \x80"), "Grüße €");
        assert_eq!(decode(None, "Grüße".as_bytes()), "Grüße");
        assert_eq!(decode(Some("x-unknown"), b"K\xf6ln"), "Köln");
    }

    #[test]
    fn decoding_owned_bytes_gives_what_decoding_borrowed_ones_does() {
        let labels = [
            None,
            Some(""),
            Some("utf-8"),
            Some("us-ascii"),
            Some("iso-8859-1"),
            Some("windows-1251"),
            Some("shift_jis"),
            Some("x-unknown"),
        ];
        let texts: [&[u8]; 6] = [
            b"plain",
            "K\u{f6}ln \u{65e5}\u{672c}".as_bytes(),
            b"\xef\xbb\xbfwith a BOM",
            b"K\xf6ln",
            b"\x93\xfa\x96\x7b",
            b"",
        ];
        for label in labels {
            for bytes in texts {
                assert_eq!(
                    decode_owned(label, bytes.to_vec()),
                    decode(label, bytes),
                    "{label:?} {bytes:?}"
                );
            }
        }
    }

    #[test]
    fn ascii_label_on_utf8_bytes_keeps_utf8() {
        assert_eq!(decode(Some("us-ascii"), "Köln".as_bytes()), "Köln");
        assert_eq!(decode(Some("us-ascii"), b"K\xf6ln"), "Köln");
    }

    #[test]
    fn declared_cjk_charsets_decode() {
        let cases: [(&str, &[u8], &str); 5] = [
            ("shift_jis", b"\x93\xfa\x96\x7b", "日本"),
            ("euc-jp", b"\xc6\xfc\xcb\xdc", "日本"),
            ("ks_c_5601-1987", b"\xc7\xd1\xb1\xb9", "한국"),
            ("gb2312", b"\xd6\xd0\xce\xc4", "中文"),
            ("big5", b"\xa4\xa4\xa4\xe5", "中文"),
        ];
        for (label, bytes, text) in cases {
            assert_eq!(decode(Some(label), bytes), text, "{label}");
        }
    }
}
