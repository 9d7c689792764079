//! Addresses: recipient identity, header address lists, and the one
//! formatter for addresses sent to an API.
//!
//! One identity rule for the whole relay (SMTP's duplicate `RCPT`, the
//! spool's per-recipient state, the mapping's `To`/`Cc`/`Bcc` placement):
//! two addresses are the same mailbox when their canonical forms ([`key`])
//! are equal: surrounding whitespace removed, a quoted local part unquoted
//! when the quotes are not needed (`"john.doe"@x` is `john.doe@x`), ASCII
//! case folded (domain and local part: RFC 5321 lets a server treat local
//! parts case-sensitively, but every API we deliver to does not).
//!
//! Addresses keep the form they were written in (RFC 5321 for the
//! envelope, the header's own quoting for `To`/`Cc`); [`rfc5322`] is the
//! only way an address leaves the relay, and always yields a valid RFC 5322
//! addr-spec (a local part with specials is quoted, never a bare comma).

use super::mime::words;

/// An address with its decoded display name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Mailbox {
    pub name: Option<String>,
    pub addr: String,
}

/// The comparison key of an address: its canonical form, lower-cased.
pub fn key(addr: &str) -> String {
    let addr = addr.trim();
    let (local, domain) = split(addr);
    // The common case, a dot-atom local part with no quotes anywhere: the
    // canonical form is the address itself.
    if !addr.contains('"') && is_dot_atom(local) {
        return addr.to_ascii_lowercase();
    }
    let local = unquote(local);
    let local = if is_dot_atom(&local) {
        local
    } else {
        quote(&local)
    };
    match domain {
        Some(domain) => format!("{local}@{domain}").to_ascii_lowercase(),
        None => local.to_ascii_lowercase(),
    }
}

/// Whether `a` and `b` name the same mailbox.
pub fn same(a: &str, b: &str) -> bool {
    key(a) == key(b)
}

/// `addr` as a valid RFC 5322 addr-spec: a local part that is a dot-atom or
/// a well-formed quoted string is kept as written, any other is quoted.
pub fn rfc5322(addr: &str) -> String {
    let (local, domain) = split(addr.trim());
    let local = if is_dot_atom(local) || is_quoted_string(local) {
        local.to_string()
    } else {
        quote(local)
    };
    match domain {
        Some(domain) => format!("{local}@{domain}"),
        None => local,
    }
}

/// Splits at the last `@` outside a quoted string.
fn split(addr: &str) -> (&str, Option<&str>) {
    let mut in_quotes = false;
    let mut escaped = false;
    let mut at = None;
    for (i, c) in addr.char_indices() {
        match c {
            _ if escaped => escaped = false,
            '\\' if in_quotes => escaped = true,
            '"' => in_quotes = !in_quotes,
            '@' if !in_quotes => at = Some(i),
            _ => {}
        }
    }
    // An unbalanced quote: the quote is a character, not a delimiter.
    let at = if in_quotes { addr.rfind('@') } else { at };
    match at {
        Some(i) => (&addr[..i], Some(&addr[i + 1..])),
        None => (addr, None),
    }
}

/// The content of a local part: a quoted string without its quotes and
/// quoted-pair escapes; anything else as written.
fn unquote(local: &str) -> String {
    if !is_quoted_string(local) {
        return local.to_string();
    }
    let mut out = String::with_capacity(local.len());
    let mut chars = local[1..local.len() - 1].chars();
    while let Some(c) = chars.next() {
        match c {
            '\\' => out.extend(chars.next()),
            c => out.push(c),
        }
    }
    out
}

fn quote(content: &str) -> String {
    let mut out = String::with_capacity(content.len() + 2);
    out.push('"');
    for c in content.chars() {
        if c == '"' || c == '\\' {
            out.push('\\');
        }
        out.push(c);
    }
    out.push('"');
    out
}

fn is_atext(c: char) -> bool {
    c.is_ascii_alphanumeric() || "!#$%&'*+-/=?^_`{|}~".contains(c) || !c.is_ascii()
}

fn is_dot_atom(s: &str) -> bool {
    !s.is_empty()
        && s.split('.')
            .all(|a| !a.is_empty() && a.chars().all(is_atext))
}

fn is_quoted_string(s: &str) -> bool {
    let Some(inner) = s.strip_prefix('"').and_then(|s| s.strip_suffix('"')) else {
        return false;
    };
    let mut chars = inner.chars();
    while let Some(c) = chars.next() {
        match c {
            '\\' if chars.next().is_none() => return false,
            '\\' => {}
            '"' | '\r' | '\n' => return false,
            _ => {}
        }
    }
    true
}

/// The mailboxes of an address-list header value (raw bytes, unfolded):
/// groups flattened, comments dropped, entries without an address dropped,
/// entries without an `@` (a bare local name) dropped, display names RFC 2047 decoded (any charset, raw 8-bit text too), quoted
/// local parts kept with their quotes.
pub fn parse_list(raw: &[u8]) -> Vec<Mailbox> {
    let mut out = Vec::new();
    for entry in entries(raw) {
        if let Some(mailbox) = mailbox(entry) {
            out.push(mailbox);
        }
    }
    out
}

/// The top-level entries of a list: split at `,` and `;` outside quotes,
/// comments and angle brackets, with a group's `name:` prefix removed.
fn entries(raw: &[u8]) -> Vec<&[u8]> {
    let mut out = Vec::new();
    let mut start = 0;
    let (mut in_quotes, mut escaped, mut depth, mut in_angle) = (false, false, 0usize, false);
    for (i, &b) in raw.iter().enumerate() {
        let top = !in_quotes && depth == 0 && !in_angle;
        match b {
            _ if escaped => escaped = false,
            b'\\' if in_quotes || depth > 0 => escaped = true,
            b'"' if depth == 0 && !in_angle => in_quotes = !in_quotes,
            b'(' if !in_quotes => depth += 1,
            b')' if !in_quotes && depth > 0 => depth -= 1,
            b'<' if top => in_angle = true,
            b'>' if in_angle && !in_quotes => in_angle = false,
            b',' | b';' if top => {
                out.push(&raw[start..i]);
                start = i + 1;
            }
            // A group's display name: everything so far in this entry.
            b':' if top => start = i + 1,
            _ => {}
        }
    }
    out.push(&raw[start..]);
    out
}

/// One entry: `name <addr>` or a bare addr-spec (a comment may name it).
fn mailbox(entry: &[u8]) -> Option<Mailbox> {
    let (phrase, spec, comment) = pieces(entry);
    let addr = spec.trim().to_string();
    if !addr.contains('@') {
        return None;
    }
    let name = phrase.or(comment).map(|raw| display_name(&raw));
    Some(Mailbox {
        name: name.filter(|n| !n.is_empty()),
        addr,
    })
}

/// (display phrase before `<` with its comments, the address with blanks
/// and comments outside quotes removed, the first comment's text).
fn pieces(entry: &[u8]) -> (Option<Vec<u8>>, String, Option<Vec<u8>>) {
    let mut phrase = Vec::new();
    let mut spec = Vec::with_capacity(entry.len());

    let mut comment: Option<Vec<u8>> = None;
    let mut current_comment = Vec::new();
    let (mut in_quotes, mut escaped, mut depth) = (false, false, 0usize);
    let (mut angle, mut ignored) = (Vec::with_capacity(entry.len()), Vec::new());
    let (mut has_angle, mut angle_done) = (false, false);
    // Everything before `<` as written, comments included: the phrase.
    let mut written = Vec::with_capacity(entry.len());
    for &b in entry {
        if !has_angle {
            written.push(b);
        }
        if depth > 0 {
            match b {
                _ if escaped => {
                    escaped = false;
                    current_comment.push(b);
                }
                b'\\' => escaped = true,
                b'(' => depth += 1,
                b')' => {
                    depth -= 1;
                    if depth == 0 && comment.is_none() {
                        comment = Some(std::mem::take(&mut current_comment));
                    }
                }
                _ => current_comment.push(b),
            }
            continue;
        }
        let in_angle = has_angle && !angle_done;
        let target = if angle_done {
            &mut ignored
        } else if has_angle {
            &mut angle
        } else {
            &mut spec
        };
        match b {
            _ if escaped => {
                escaped = false;
                target.push(b);
            }
            b'\\' if in_quotes => {
                escaped = true;
                target.push(b);
            }
            b'"' => {
                in_quotes = !in_quotes;
                target.push(b);
            }
            b'(' if !in_quotes => depth = 1,
            b'<' if !in_quotes && !has_angle => {
                written.pop();
                phrase = std::mem::take(&mut written);
                has_angle = true;
            }
            b'>' if !in_quotes && in_angle => angle_done = true,
            b' ' | b'\t' | b'\r' | b'\n' if !in_quotes && in_angle => {}
            _ => target.push(b),
        }
    }
    match has_angle.then_some(angle) {
        Some(addr) => {
            // An obsolete source route (`<@relay:user@x>`) is not the address.
            let addr = match addr.iter().position(|&b| b == b':') {
                Some(colon) if addr.first() == Some(&b'@') => addr[colon + 1..].to_vec(),
                _ => addr,
            };
            let phrase = (!phrase.trim_ascii().is_empty()).then_some(phrase);
            (phrase, String::from_utf8_lossy(&addr).into_owned(), comment)
        }
        None => {
            let spec = remove_blanks_outside_quotes(&spec);
            (None, String::from_utf8_lossy(&spec).into_owned(), comment)
        }
    }
}

fn remove_blanks_outside_quotes(raw: &[u8]) -> Vec<u8> {
    let (mut in_quotes, mut escaped) = (false, false);
    let mut out = Vec::with_capacity(raw.len());
    for &b in raw {
        match b {
            _ if escaped => escaped = false,
            b'\\' if in_quotes => escaped = true,
            b'"' => in_quotes = !in_quotes,
            b' ' | b'\t' | b'\r' | b'\n' if !in_quotes => continue,
            _ => {}
        }
        out.push(b);
    }
    out
}

/// A display phrase: quotes and quoted-pair escapes removed, encoded words
/// (also inside quotes, as senders write them) and 8-bit text decoded.
fn display_name(raw: &[u8]) -> String {
    let mut plain = Vec::with_capacity(raw.len());
    let mut bytes = raw.iter();
    while let Some(&b) = bytes.next() {
        match b {
            b'"' => {}
            b'\\' => plain.extend(bytes.next()),
            _ => plain.push(b),
        }
    }
    super::mime::header::one_line(&words::decode(plain.trim_ascii()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn case_quotes_and_surrounding_space_do_not_make_a_different_mailbox() {
        let cases = [
            ("a@example.com", "A@Example.COM", true),
            (" a@example.com", "a@example.com ", true),
            ("\"john.doe\"@example.com", "john.doe@example.com", true),
            ("\"a,b\"@example.com", "\"a,b\"@EXAMPLE.com", true),
            ("\"a\\,b\"@example.com", "\"a,b\"@example.com", true),
            ("\"john doe\"@example.com", "john.doe@example.com", false),
            ("a@example.com", "b@example.com", false),
            ("a@example.com", "a@example.co", false),
        ];
        for (a, b, want) in cases {
            assert_eq!(same(a, b), want, "{a} vs {b}");
            assert_eq!(key(a) == key(b), want, "{a} vs {b}");
        }
    }

    #[test]
    fn the_canonical_form_is_unquoted_where_it_can_be_and_lower_case() {
        let cases = [
            ("A.B@Example.COM", "a.b@example.com"),
            ("  x@y  ", "x@y"),
            ("NoDomain", "nodomain"),
            ("a@b@C", "\"a@b\"@c"),
            ("\"J.D\"@X", "j.d@x"),
            ("\"John Doe\"@X", "\"john doe\"@x"),
            ("john doe@x", "\"john doe\"@x"),
            ("a..b@x", "\"a..b\"@x"),
            ("\"unbalanced@x", "\"\\\"unbalanced\"@x"),
            ("J\u{e9}r\u{f4}me@X", "j\u{e9}r\u{f4}me@x"),
        ];
        for (addr, want) in cases {
            assert_eq!(key(addr), want, "{addr}");
        }
    }

    #[test]
    fn sent_addresses_are_valid_rfc5322_quoting_only_what_needs_it() {
        let cases = [
            ("a@example.com", "a@example.com"),
            ("\"a,b\"@example.com", "\"a,b\"@example.com"),
            ("\"john.doe\"@example.com", "\"john.doe\"@example.com"),
            ("a,b@example.com", "\"a,b\"@example.com"),
            ("john doe@example.com", "\"john doe\"@example.com"),
            ("x\"y@example.com", "\"x\\\"y\"@example.com"),
            ("\"a\\\"b\"@example.com", "\"a\\\"b\"@example.com"),
            ("\"a\"b\"@example.com", "\"\\\"a\\\"b\\\"\"@example.com"),
        ];
        for (addr, want) in cases {
            assert_eq!(rfc5322(addr), want, "{addr}");
        }
    }

    #[test]
    fn address_lists_keep_quoted_local_parts_and_decode_display_names() {
        let list = parse_list(
            b"\"a,b\"@example.com, root (Cron Daemon) <r@h.org>, \"Doe, J.\" <\"john doe\"@Example.com>, =?iso-2022-jp?B?GyRCRnxLXDhsGyhC?= <j@x.jp>, team: x@y.org (Ex Why), <@relay:z@y.org>;, root",
        );
        let got: Vec<(Option<&str>, &str)> = list
            .iter()
            .map(|m| (m.name.as_deref(), m.addr.as_str()))
            .collect();
        assert_eq!(
            got,
            [
                (None, "\"a,b\"@example.com"),
                (Some("root (Cron Daemon)"), "r@h.org"),
                (Some("Doe, J."), "\"john doe\"@Example.com"),
                (Some("日本語"), "j@x.jp"),
                (Some("Ex Why"), "x@y.org"),
                (None, "z@y.org"),
            ]
        );
    }

    #[test]
    fn empty_groups_and_entries_without_an_address_give_no_mailbox() {
        assert!(parse_list(b"undisclosed-recipients:;").is_empty());
        assert!(parse_list(b" , ,<>").is_empty());
    }
}
