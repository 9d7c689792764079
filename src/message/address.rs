//! Recipient identity: when two envelope addresses name the same mailbox.
//!
//! One rule for the whole relay (SMTP's duplicate `RCPT`, the spool's
//! per-recipient state, the mapping's `To`/`Cc`/`Bcc` placement): addresses
//! are compared with surrounding whitespace removed and ASCII case folded.
//! RFC 5321 lets a server treat local parts case-sensitively, but every API
//! we deliver to, and every mail system in practice, does not.

/// The comparison key of an address: trimmed, ASCII-lowercased.
pub fn key(addr: &str) -> String {
    addr.trim().to_ascii_lowercase()
}

/// Whether `a` and `b` name the same mailbox.
pub fn same(a: &str, b: &str) -> bool {
    a.trim().eq_ignore_ascii_case(b.trim())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn case_and_surrounding_space_do_not_make_a_different_mailbox() {
        let cases = [
            ("a@example.com", "A@Example.COM", true),
            (" a@example.com", "a@example.com ", true),
            ("a@example.com", "b@example.com", false),
            ("a@example.com", "a@example.co", false),
        ];
        for (a, b, want) in cases {
            assert_eq!(same(a, b), want, "{a} vs {b}");
            assert_eq!(key(a) == key(b), want, "{a} vs {b}");
        }
    }
}
