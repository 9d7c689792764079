//! Header sections: where they end and what their fields hold. Owns
//! unfolding (a line break before whitespace is removed, the whitespace
//! kept) and the rule for where the body starts: after the first empty line,
//! or at the first line that is neither a field nor a continuation, so a
//! missing blank line never swallows the body. Values stay raw bytes;
//! decoding them is [`super::words`]'s and [`super::param`]'s job.

/// One header field: its name as spelled, its value unfolded and trimmed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Field {
    pub name: String,
    pub value: Vec<u8>,
}

impl Field {
    /// The value with RFC 2047 words and 8-bit text decoded, on one line.
    pub fn text(&self) -> String {
        one_line(&super::words::decode(&self.value))
    }

    /// The value as lossy UTF-8 without word decoding (for tokens and ids).
    pub fn raw_text(&self) -> String {
        one_line(&String::from_utf8_lossy(&self.value))
    }
}

/// Replaces CR, LF and other controls with spaces and trims.
pub(crate) fn one_line(s: &str) -> String {
    // Controls at either end would become spaces and be trimmed: trim them
    // with the whitespace, then replace those inside.
    let s = s.trim_matches(|c: char| c.is_control() || c.is_whitespace());
    if !s.chars().any(char::is_control) {
        return s.to_string();
    }
    let mut out = String::with_capacity(s.len());
    out.extend(s.chars().map(|c| if c.is_control() { ' ' } else { c }));
    out
}

/// The first field named `name` (ASCII case-insensitive).
pub fn find<'a>(fields: &'a [Field], name: &str) -> Option<&'a Field> {
    fields.iter().find(|f| f.name.eq_ignore_ascii_case(name))
}

/// Splits an entity into its fields and the offset where its body starts.
pub fn split(raw: &[u8]) -> (Vec<Field>, usize) {
    let (fields, body) = split_untrimmed(raw);
    (trimmed(fields), body)
}

fn split_untrimmed(raw: &[u8]) -> (Vec<Field>, usize) {
    let mut fields: Vec<Field> = Vec::new();
    let mut pos = 0;
    while pos < raw.len() {
        let end = memchr::memchr(b'\n', &raw[pos..]).map_or(raw.len(), |n| pos + n + 1);
        let line = &raw[pos..end];
        let content = line.strip_suffix(b"\n").unwrap_or(line);
        let content = content.strip_suffix(b"\r").unwrap_or(content);
        if content.is_empty() {
            return (fields, end);
        }
        if matches!(content[0], b' ' | b'\t') {
            match fields.last_mut() {
                Some(last) => last.value.extend_from_slice(content),
                None => return (fields, pos),
            }
        } else if let Some(field) = field_start(content) {
            fields.push(field);
        } else if pos == 0 && content.starts_with(b"From ") {
            // An mbox separator line before the first field.
        } else {
            return (fields, pos);
        }
        pos = end;
    }
    (fields, raw.len())
}

/// `name: value` when `line` starts a field (printable name, no spaces
/// inside it; spaces before the colon are tolerated).
fn field_start(line: &[u8]) -> Option<Field> {
    let colon = line.iter().position(|&b| b == b':')?;
    let name = line[..colon].trim_ascii_end();
    let valid = !name.is_empty() && name.iter().all(|&b| (33..=126).contains(&b));
    valid.then(|| Field {
        name: String::from_utf8_lossy(name).into_owned(),
        value: line[colon + 1..].to_vec(),
    })
}

/// Each value without the ASCII whitespace around it, trimmed in place.
fn trimmed(mut fields: Vec<Field>) -> Vec<Field> {
    for f in &mut fields {
        let v = &mut f.value;
        let end = v.len()
            - v.iter()
                .rev()
                .take_while(|b| b.is_ascii_whitespace())
                .count();
        v.truncate(end);
        let start = v.iter().take_while(|b| b.is_ascii_whitespace()).count();
        v.drain(..start);
    }
    fields
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names_values(raw: &[u8]) -> (Vec<(String, String)>, String) {
        let (fields, body) = split(raw);
        let fields = fields
            .into_iter()
            .map(|f| (f.name, String::from_utf8_lossy(&f.value).into_owned()))
            .collect();
        (fields, String::from_utf8_lossy(&raw[body..]).into_owned())
    }

    #[test]
    fn folded_values_are_unfolded_keeping_the_whitespace() {
        let (fields, body) = names_values(
            b"Content-Disposition: attachment; filename=\r\n\t\"report.pdf\"\r\n\r\nbody",
        );
        assert_eq!(
            fields,
            [(
                "Content-Disposition".into(),
                "attachment; filename=\t\"report.pdf\"".into()
            )]
        );
        assert_eq!(body, "body");
    }

    #[test]
    fn body_starts_at_the_first_non_field_line_without_a_blank_line() {
        let (fields, body) = names_values(b"Subject: x\nhello: there friend\nnot a field\nmore\n");
        assert_eq!(fields.len(), 2);
        assert_eq!(body, "not a field\nmore\n");
    }

    #[test]
    fn a_leading_blank_line_means_no_fields() {
        let (fields, body) = names_values(b"\r\nFrom: a@example.org\r\n");
        assert!(fields.is_empty());
        assert_eq!(body, "From: a@example.org\r\n");
    }

    #[test]
    fn header_only_entity_has_an_empty_body() {
        let (fields, body) = names_values(b"Content-Type: message/rfc822\r\nX-A: b\r\n");
        assert_eq!(fields.len(), 2);
        assert_eq!(body, "");
    }

    #[test]
    fn field_text_decodes_words_and_stays_on_one_line() {
        let field = Field {
            name: "Subject".into(),
            value: b"=?utf-8?q?a=0Ab?= c".to_vec(),
        };
        assert_eq!(field.text(), "a b c");
    }

    #[test]
    fn one_line_turns_controls_into_spaces_and_trims_both_ends() {
        let cases = [
            ("plain", "plain"),
            ("  padded\t", "padded"),
            ("\r\nbroken\r\nacross\r\n", "broken  across"),
            ("\u{1}\u{7f} bell\u{7}inside \u{0}", "bell inside"),
            ("\u{a0}non-breaking\u{2003}", "non-breaking"),
            ("caf\u{e9}\u{85}", "caf\u{e9}"),
            ("\u{0}\u{1b}", ""),
            ("", ""),
        ];
        for (input, want) in cases {
            assert_eq!(one_line(input), want, "{input:?}");
        }
    }
}
