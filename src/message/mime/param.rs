//! Structured field values: `type/subtype; name=value; ...` for
//! Content-Type and Content-Disposition. Owns parameter decoding: quoted
//! strings with escapes, unquoted values with spaces, folds already removed
//! by [`super::header`], RFC 2231 `name*=charset'lang'%XX` values and
//! `name*0*=`/`name*1=` continuations (joined in index order, decoded as one
//! byte string), and RFC 2047 words inside plain values. An extended
//! (RFC 2231) value wins over a plain one of the same name.

use std::collections::BTreeMap;

use super::charset;
use super::words;

/// A parsed structured value: the main token lower-cased, the parameters
/// with lower-cased names and decoded values, in order of first appearance.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Params {
    pub value: String,
    pub params: Vec<(String, String)>,
}

impl Params {
    /// The decoded value of parameter `name` (lower case).
    pub fn get(&self, name: &str) -> Option<&str> {
        self.params
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }
}

/// One raw `attr=value` before RFC 2231 joining.
struct Raw {
    base: String,
    section: Option<u32>,
    extended: bool,
    value: Vec<u8>,
}

/// Parses a structured field value.
pub fn parse(input: &[u8]) -> Params {
    let main_end = input.iter().position(|&b| b == b';').unwrap_or(input.len());
    let value: String = String::from_utf8_lossy(&strip_comments(&input[..main_end]))
        .chars()
        .filter(|c| !c.is_whitespace())
        .collect::<String>()
        .to_ascii_lowercase();
    let raws = raw_params(&input[main_end..]);
    Params {
        value,
        params: join(raws),
    }
}

fn strip_comments(input: &[u8]) -> Vec<u8> {
    let mut depth = 0usize;
    let mut out = Vec::with_capacity(input.len());
    for &b in input {
        match b {
            b'(' => depth += 1,
            b')' if depth > 0 => depth -= 1,
            _ if depth == 0 => out.push(b),
            _ => {}
        }
    }
    out
}

/// Splits `; a=b; c="d;e"` into raw attributes, one pass.
fn raw_params(input: &[u8]) -> Vec<Raw> {
    let mut out = Vec::new();
    let mut i = 0;
    while i < input.len() {
        while i < input.len() && (input[i] == b';' || input[i].is_ascii_whitespace()) {
            i += 1;
        }
        let name_start = i;
        while i < input.len() && input[i] != b'=' && input[i] != b';' {
            i += 1;
        }
        let name = String::from_utf8_lossy(input[name_start..i].trim_ascii()).to_ascii_lowercase();
        if i >= input.len() || input[i] == b';' {
            continue;
        }
        i += 1; // '='
        while i < input.len() && input[i].is_ascii_whitespace() {
            i += 1;
        }
        let mut value = Vec::new();
        if input.get(i) == Some(&b'"') {
            i += 1;
            while i < input.len() && input[i] != b'"' {
                if input[i] == b'\\' && i + 1 < input.len() {
                    i += 1;
                }
                value.push(input[i]);
                i += 1;
            }
            while i < input.len() && input[i] != b';' {
                i += 1;
            }
        } else {
            let start = i;
            while i < input.len() && input[i] != b';' {
                i += 1;
            }
            value.extend_from_slice(input[start..i].trim_ascii());
        }
        if !name.is_empty() {
            out.push(split_name(name, value));
        }
    }
    out
}

/// `filename*1*` → base `filename`, section 1, extended.
fn split_name(name: String, value: Vec<u8>) -> Raw {
    let (name, extended) = match name.strip_suffix('*') {
        Some(n) => (n.to_string(), true),
        None => (name, false),
    };
    if let Some((base, index)) = name.rsplit_once('*')
        && let Ok(section) = index.parse::<u32>()
    {
        return Raw {
            base: base.to_string(),
            section: Some(section),
            extended,
            value,
        };
    }
    Raw {
        base: name,
        section: None,
        extended,
        value,
    }
}

/// Joins RFC 2231 sections and decodes every value.
fn join(raws: Vec<Raw>) -> Vec<(String, String)> {
    let mut order: Vec<String> = Vec::new();
    let mut seen = std::collections::HashSet::new();
    let mut plain: BTreeMap<String, Vec<u8>> = BTreeMap::new();
    let mut sections: BTreeMap<String, Vec<Raw>> = BTreeMap::new();
    for raw in raws {
        if seen.insert(raw.base.clone()) {
            order.push(raw.base.clone());
        }
        if raw.extended || raw.section.is_some() {
            sections.entry(raw.base.clone()).or_default().push(raw);
        } else {
            plain.entry(raw.base.clone()).or_insert(raw.value);
        }
    }
    order
        .into_iter()
        .map(|name| {
            let value = match sections.get_mut(&name) {
                Some(parts) => continued(parts),
                None => words::decode(plain.get(&name).map_or(&[][..], Vec::as_slice)),
            };
            (name, value)
        })
        .collect()
}

/// Decodes one parameter's RFC 2231 sections, sorted by index.
fn continued(parts: &mut [Raw]) -> String {
    parts.sort_by_key(|p| p.section.unwrap_or(0));
    let mut label: Option<String> = None;
    let mut bytes = Vec::new();
    for (n, part) in parts.iter().enumerate() {
        let mut value = part.value.as_slice();
        if n == 0 && part.extended {
            let mut fields = value.splitn(3, |&b| b == b'\'');
            if let (Some(cs), Some(_lang), Some(rest)) =
                (fields.next(), fields.next(), fields.next())
            {
                label = Some(String::from_utf8_lossy(cs).into_owned());
                value = rest;
            }
        }
        if part.extended {
            bytes.extend(percent_decode(value));
        } else {
            bytes.extend_from_slice(value);
        }
    }
    charset::decode(label.as_deref(), &bytes)
}

fn percent_decode(input: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(input.len());
    let mut i = 0;
    while i < input.len() {
        let hex = |k: usize| input.get(k).and_then(|&b| (b as char).to_digit(16));
        if input[i] == b'%'
            && let (Some(h), Some(l)) = (hex(i + 1), hex(i + 2))
        {
            out.push((h * 16 + l) as u8);
            i += 3;
        } else {
            out.push(input[i]);
            i += 1;
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn get(input: &str, name: &str) -> Option<String> {
        parse(input.as_bytes()).get(name).map(str::to_string)
    }

    #[test]
    fn type_is_lowercased_and_comments_dropped() {
        let p = parse(b"Text/HTML (a comment); Charset=\"UTF-8\"");
        assert_eq!(p.value, "text/html");
        assert_eq!(p.get("charset"), Some("UTF-8"));
    }

    #[test]
    fn folded_filename_value_is_read_after_whitespace() {
        assert_eq!(
            get("attachment; filename=\t\"report.pdf\"", "filename").as_deref(),
            Some("report.pdf")
        );
    }

    #[test]
    fn quoted_values_keep_semicolons_and_unescape() {
        assert_eq!(
            get(r#"a; name="x;y \"z\".txt""#, "name").as_deref(),
            Some(r#"x;y "z".txt"#)
        );
    }

    #[test]
    fn unquoted_values_may_contain_spaces() {
        assert_eq!(
            get("a; name=my file.pdf ; x=1", "name").as_deref(),
            Some("my file.pdf")
        );
    }

    #[test]
    fn rfc2231_extended_value_decodes_with_its_charset() {
        let cases = [
            (
                "attachment; filename*=UTF-8''%E2%82%AC%20rates.pdf",
                "€ rates.pdf",
            ),
            ("attachment; filename*=iso-8859-1'en'%E9t%E9.txt", "été.txt"),
            ("attachment; filename*=''plain.txt", "plain.txt"),
            (
                "attachment; filename*=ks_c_5601-1987''%C7%D1%B1%B9.doc",
                "한국.doc",
            ),
        ];
        for (input, want) in cases {
            assert_eq!(get(input, "filename").as_deref(), Some(want), "{input}");
        }
    }

    #[test]
    fn rfc2231_continuations_join_in_index_order() {
        let cases = [
            (
                "a; filename*1=\"rt.pdf\"; filename*0=\"repo\"",
                "report.pdf",
            ),
            (
                "a; filename*0*=UTF-8''%C3%A4; filename*1*=%C3%B6; filename*2=\".txt\"",
                "äö.txt",
            ),
            // A multibyte character split across two sections.
            ("a; filename*0*=UTF-8''%C3; filename*1*=%A9.txt", "é.txt"),
        ];
        for (input, want) in cases {
            assert_eq!(get(input, "filename").as_deref(), Some(want), "{input}");
        }
    }

    #[test]
    fn extended_value_wins_over_plain() {
        let input = "a; filename=\"fallback.pdf\"; filename*=UTF-8''r%C3%A9el.pdf";
        assert_eq!(get(input, "filename").as_deref(), Some("réel.pdf"));
    }

    #[test]
    fn encoded_words_in_plain_values_decode_without_stray_spaces() {
        let input = "application/pdf; name=\"=?UTF-8?B?w6TDtsO8?= =?UTF-8?B?LnBkZg==?=\"";
        assert_eq!(get(input, "name").as_deref(), Some("äöü.pdf"));
    }

    #[test]
    fn valueless_and_empty_parameters_are_skipped() {
        let p = parse(b"text/plain; ; flag; charset=utf-8;");
        assert_eq!(p.params, [("charset".to_string(), "utf-8".to_string())]);
    }
}
