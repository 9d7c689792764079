//! Raw MIME bytes → [`ParsedMessage`]: decoded headers, the text and HTML
//! bodies a mail reader would show, and every other part as an attachment.
//!
//! `parse` is [`mime::walk`] plus [`mime::choose`]: the structure walk owns
//! boundaries, part headers, RFC 2231/2047 parameters, transfer and charset
//! decoding (every `encoding_rs` charset); [`address::parse_list`] reads the
//! address headers. Everything downstream sees plain owned Rust types. It is
//! pure and total: any byte string, including empty, truncated, non-UTF-8
//! or bare-LF input, yields a (possibly empty) `ParsedMessage`, and every
//! leaf the walk finds ends as a body or an attachment.

use super::address;
use super::mime::{self, Disposition};

pub use super::address::Mailbox;

/// A message reduced to what the API mappers need. Strings are UTF-8 with
/// RFC 2047 words decoded and header folding removed.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ParsedMessage {
    /// Top-level header fields in message order (structural ones included).
    pub headers: Vec<HeaderField>,
    /// Mailboxes of the first `From` header.
    pub from: Vec<Mailbox>,
    /// Mailboxes of all `To` headers, groups flattened.
    pub to: Vec<Mailbox>,
    /// Mailboxes of all `Cc` headers, groups flattened.
    pub cc: Vec<Mailbox>,
    /// Mailboxes of the first `Reply-To` header.
    pub reply_to: Vec<Mailbox>,
    pub subject: Option<String>,
    /// The `Message-ID` value as written, angle brackets included.
    pub message_id: Option<String>,
    pub text_body: Option<String>,
    pub html_body: Option<String>,
    pub attachments: Vec<Attachment>,
    /// True when the walk stopped at a nesting or part-count limit: a
    /// subtree past the depth limit is kept whole as `message/rfc822`.
    pub truncated: bool,
    /// True when the part-count limit stopped the walk: the parts after it
    /// are in no body and no attachment.
    pub parts_over_limit: bool,
}

/// One header field: the name as spelled in the message, the value unfolded
/// and decoded (never containing CR or LF).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HeaderField {
    pub name: String,
    pub value: String,
}

/// A non-body part.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Attachment {
    /// RFC 2231 / RFC 2047 decoded `filename` or `name` parameter.
    pub name: Option<String>,
    /// Every distinct name the part declares (filename, name, x-uuencode
    /// `begin` name), decoded: what a file-type check must look at.
    pub names: Vec<String>,
    /// `type/subtype` in lower case, plus the declared `charset` and (for
    /// calendars) `method` parameters, which the bytes still depend on.
    pub content_type: String,
    /// Content-ID without angle brackets.
    pub content_id: Option<String>,
    /// False when the part says `Content-Disposition: attachment`.
    pub inline: bool,
    /// The part's bytes with the transfer encoding removed (charset untouched).
    pub data: Vec<u8>,
}

impl ParsedMessage {
    /// Header fields that are not part of the message structure (see
    /// [`is_structural`]), in message order.
    pub fn custom_headers(&self) -> impl Iterator<Item = &HeaderField> {
        self.headers.iter().filter(|h| !is_structural(&h.name))
    }
}

/// Headers the API rebuilds itself or that describe transport, not content:
/// they must not be copied into an API request as custom headers.
pub fn is_structural(name: &str) -> bool {
    const EXACT: &[&str] = &[
        "from",
        "to",
        "cc",
        "bcc",
        "reply-to",
        "subject",
        "date",
        "message-id",
        "mime-version",
        "received",
        "return-path",
        "sender",
        "dkim-signature",
        "authentication-results",
        "received-spf",
    ];
    const PREFIXES: &[&str] = &["content-", "x-postal-", "arc-"];
    let lower = name.to_ascii_lowercase();
    EXACT.contains(&lower.as_str()) || PREFIXES.iter().any(|p| lower.starts_with(p))
}

/// Parses raw message bytes. Never fails: text without any header section
/// becomes the text body; empty input gives an empty message.
pub fn parse(raw: &[u8]) -> ParsedMessage {
    if raw.is_empty() {
        return ParsedMessage::default();
    }
    let walked = mime::walk(raw);
    let mut out = ParsedMessage {
        truncated: walked.truncated,
        parts_over_limit: walked.parts_over_limit(mime::Limits::default()),
        ..ParsedMessage::default()
    };
    let mut seen = std::collections::HashSet::new();
    for field in &walked.headers {
        let lower = field.name.to_ascii_lowercase();
        let first = seen.insert(lower.clone());
        let value = field.text();
        match lower.as_str() {
            "from" if first => out.from = address::parse_list(&field.value),
            "reply-to" if first => out.reply_to = address::parse_list(&field.value),
            "to" => out.to.extend(address::parse_list(&field.value)),
            "cc" => out.cc.extend(address::parse_list(&field.value)),
            "subject" if first => out.subject = Some(value.clone()),
            "message-id" if first => {
                out.message_id = Some(field.raw_text()).filter(|id| !id.is_empty())
            }
            _ => {}
        }
        out.headers.push(HeaderField {
            name: field.name.clone(),
            value,
        });
    }
    let chosen = mime::choose(&walked);
    let mut leaves: Vec<Option<mime::Leaf>> = walked.leaves.into_iter().map(Some).collect();
    let mut body = |i: Option<usize>| {
        i.and_then(|i| leaves[i].take())
            .map(|leaf| leaf.into_text().unwrap_or_default())
    };
    out.text_body = body(chosen.text);
    out.html_body = body(chosen.html);
    out.attachments = chosen
        .attachments
        .iter()
        .filter_map(|&i| leaves[i].take())
        .map(attachment)
        .collect();
    out
}

fn attachment(leaf: mime::Leaf) -> Attachment {
    Attachment {
        content_type: leaf.content_type_with(&["charset", "method"]),
        inline: leaf.disposition != Disposition::Attachment,
        name: leaf.filename,
        names: leaf.names,
        content_id: leaf.content_id,
        data: leaf.data,
    }
}

/// The one rule for the raw header block: byte ranges of the header fields
/// of CRLF input, each with its continuation lines and
/// line ending, up to the first blank line (or the end of input when there
/// is none). Lines without a colon are not fields and are left where they are.
pub fn header_fields(msg: &[u8]) -> Vec<std::ops::Range<usize>> {
    let mut fields: Vec<std::ops::Range<usize>> = Vec::new();
    let mut pos = 0;
    while pos < msg.len() {
        let end = msg[pos..]
            .windows(2)
            .position(|w| w == b"\r\n")
            .map_or(msg.len(), |i| pos + i + 2);
        let line = &msg[pos..end];
        if line == b"\r\n" {
            return fields;
        }
        let continuation = matches!(line[0], b' ' | b'\t');
        match fields.last_mut() {
            Some(last) if continuation && last.end == pos => last.end = end,
            _ if !continuation && line.contains(&b':') => fields.push(pos..end),
            _ => {}
        }
        pos = end;
    }
    fields
}
