//! Client-supplied text on its way to a log line or a terminal.
//!
//! Invariant: what [`escape`] returns holds no control character (C0, DEL,
//! C1: no ESC for a terminal to obey, no CR or LF to forge a log line),
//! and printable text, non-ASCII included, reads as it was sent.

/// `text` with each control character written as `\u{..}` and each
/// backslash doubled, so the escaping is unambiguous.
pub fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            c if c.is_control() => out.push_str(&format!("\\u{{{:x}}}", c as u32)),
            c => out.push(c),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::escape;

    #[test]
    fn control_characters_are_spelled_out_and_text_kept() {
        let table = [
            ("billing", "billing"),
            ("Grüße", "Grüße"),
            ("\x1b]0;pwned\x07", "\\u{1b}]0;pwned\\u{7}"),
            ("a\r\nFAKE log line", "a\\u{d}\\u{a}FAKE log line"),
            ("\u{9b}31m", "\\u{9b}31m"),
            ("back\\slash", "back\\\\slash"),
        ];
        for (input, want) in table {
            assert_eq!(escape(input), want, "{input:?}");
        }
    }
}
