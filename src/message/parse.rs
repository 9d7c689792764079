//! Raw MIME bytes → [`ParsedMessage`]: decoded headers, the text and HTML
//! bodies a mail reader would show, and every other part as an attachment.
//!
//! This is the only module that touches `mail-parser` (0.11.x); everything
//! downstream sees plain owned Rust types, so a parser upgrade stays local.
//! It is pure and total: any byte string, including empty, truncated, non-UTF-8
//! or bare-LF input, yields a (possibly empty) `ParsedMessage`. Header values
//! are decoded from the raw bytes (mail-parser leaves unknown headers raw).
//!
//! Body choice: the first `text/plain` leaf is the text body, the first
//! `text/html` leaf the HTML body, unless it has `Content-Disposition:
//! attachment`. mail-parser's own body lists are not used, because they
//! synthesise text from HTML (and back) and classify by RFC 8621 rules.

use base64::Engine as _;
use mail_parser::decoders::quoted_printable::quoted_printable_decode;
use mail_parser::parsers::MessageStream;
use mail_parser::{
    Address, Encoding, HeaderValue, Message, MessageParser, MessagePart, MimeHeaders, PartType,
};

/// Multipart nesting deeper than this is not walked (mail-parser itself caps
/// nesting far below this; the guard keeps our recursion bounded regardless).
const MAX_DEPTH: usize = 64;

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
}

/// One header field: the name as spelled in the message, the value unfolded
/// and decoded (never containing CR or LF).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HeaderField {
    pub name: String,
    pub value: String,
}

/// An address with its decoded display name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Mailbox {
    pub name: Option<String>,
    pub addr: String,
}

/// A non-body part.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Attachment {
    /// RFC 2231 / RFC 2047 decoded `filename` or `name` parameter.
    pub name: Option<String>,
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
/// becomes the text body; empty input (or a parser panic) gives an empty
/// message.
pub fn parse(raw: &[u8]) -> ParsedMessage {
    let parser = MessageParser::new()
        .with_mime_headers()
        .with_address_headers();
    // mail-parser has debug assertions on "impossible" states; a panic inside
    // it must not take the daemon down, so treat it like unparseable input.
    let parsed = std::panic::catch_unwind(|| parser.parse(raw));
    match parsed {
        Ok(Some(message)) => convert(&message, raw),
        // No header section at all: like an MTA, treat the text as the body.
        Ok(None) if !raw.is_empty() => ParsedMessage {
            text_body: Some(String::from_utf8_lossy(raw).into_owned()),
            ..ParsedMessage::default()
        },
        _ => ParsedMessage::default(),
    }
}

fn convert(msg: &Message<'_>, raw: &[u8]) -> ParsedMessage {
    let mut out = ParsedMessage::default();
    let mut seen = std::collections::HashSet::new();
    for h in msg.headers() {
        let name = slice(raw, h.offset_field, h.offset_start);
        let name = String::from_utf8_lossy(name)
            .trim_end_matches([':', ' ', '\t'])
            .trim()
            .to_string();
        let value = decode_value(slice(raw, h.offset_start, h.offset_end));
        let first = seen.insert(name.to_ascii_lowercase());
        match name.to_ascii_lowercase().as_str() {
            "from" if first => out.from = mailboxes(h.value()),
            "reply-to" if first => out.reply_to = mailboxes(h.value()),
            "to" => out.to.extend(mailboxes(h.value())),
            "cc" => out.cc.extend(mailboxes(h.value())),
            "subject" if first => out.subject = Some(value.clone()),
            "message-id" if first && !value.is_empty() => out.message_id = Some(value.clone()),
            _ => {}
        }
        out.headers.push(HeaderField { name, value });
    }
    let mut walker = Walker { raw, out: &mut out };
    walker.walk(msg, 0, 0);
    recover_unseparated_body(msg, raw, &mut out);
    out
}

/// mail-parser drops everything after the headers when the blank line that
/// should separate them from the body is missing (`Subject: x\nhello\n`).
/// MTAs start the body at the first line that is not a header; so do we.
fn recover_unseparated_body(msg: &Message<'_>, raw: &[u8], out: &mut ParsedMessage) {
    let [root] = msg.parts.as_slice() else { return };
    let headers_end = root
        .headers
        .iter()
        .map(|h| h.offset_end as usize)
        .max()
        .unwrap_or(0);
    let rest = raw.get(headers_end..).unwrap_or_default();
    let empty_body = matches!(&root.body, PartType::Text(t) if t.is_empty());
    if root.is_encoding_problem && empty_body && rest.iter().any(|b| !b.is_ascii_whitespace()) {
        out.text_body = Some(String::from_utf8_lossy(rest).into_owned());
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

fn slice(raw: &[u8], start: u32, end: u32) -> &[u8] {
    raw.get(start as usize..end as usize).unwrap_or_default()
}

/// Unfolds and RFC 2047-decodes a raw header value; CR/LF never survive.
fn decode_value(raw_value: &[u8]) -> String {
    let text = match MessageStream::new(raw_value).parse_unstructured() {
        HeaderValue::Text(t) => t.into_owned(),
        HeaderValue::TextList(list) => list.join(" "),
        _ => String::new(),
    };
    one_line(&text)
}

fn one_line(s: &str) -> String {
    s.replace(['\r', '\n'], " ").trim().to_string()
}

fn mailboxes(value: &HeaderValue<'_>) -> Vec<Mailbox> {
    let Some(addresses) = value.as_address() else {
        return Vec::new();
    };
    let list: Box<dyn Iterator<Item = _>> = match addresses {
        Address::List(list) => Box::new(list.iter()),
        Address::Group(groups) => Box::new(groups.iter().flat_map(|g| g.addresses.iter())),
    };
    list.filter_map(|a| {
        let addr = one_line(a.address.as_deref()?);
        let name = a.name.as_deref().map(one_line).filter(|n| !n.is_empty());
        (!addr.is_empty()).then_some(Mailbox { name, addr })
    })
    .collect()
}

struct Walker<'a> {
    raw: &'a [u8],
    out: &'a mut ParsedMessage,
}

impl Walker<'_> {
    fn walk(&mut self, msg: &Message<'_>, id: usize, depth: usize) {
        let Some(part) = msg.parts.get(id) else {
            return;
        };
        if let PartType::Multipart(children) = &part.body {
            for &child in children {
                // Children always come after their parent; anything else is a
                // corrupt tree and is skipped rather than looped over.
                if (child as usize) > id && depth < MAX_DEPTH {
                    self.walk(msg, child as usize, depth + 1);
                }
            }
            return;
        }
        let essence = essence(part);
        let is_attachment = part
            .content_disposition()
            .is_some_and(|d| d.ctype().eq_ignore_ascii_case("attachment"));
        let slot = match essence.as_str() {
            "text/plain" if !is_attachment => &mut self.out.text_body,
            "text/html" if !is_attachment => &mut self.out.html_body,
            _ => return self.attach(part, essence, is_attachment),
        };
        if slot.is_none() {
            *slot = Some(body_text(part));
        } else {
            self.attach(part, essence, is_attachment);
        }
    }

    fn attach(&mut self, part: &MessagePart<'_>, essence: String, is_attachment: bool) {
        let mut content_type = essence;
        if let Some(ct) = part.content_type() {
            for param in ["charset", "method"] {
                if let Some(v) = ct.attribute(param) {
                    content_type.push_str(&format!("; {param}={v}"));
                }
            }
        }
        let data = match &part.body {
            PartType::Binary(_) | PartType::InlineBinary(_) | PartType::Message(_)
                if !part.is_encoding_problem =>
            {
                part.contents().to_vec()
            }
            _ => transfer_decode(part, self.raw),
        };
        self.out.attachments.push(Attachment {
            name: part
                .attachment_name()
                .map(one_line)
                .filter(|n| !n.is_empty()),
            content_type,
            content_id: part
                .content_id()
                .map(|id| one_line(id.trim_matches(['<', '>']))),
            inline: !is_attachment,
            data,
        });
    }
}

/// `type/subtype` in lower case. No Content-Type means text/plain; a leaf
/// that claims to be multipart lost its boundary and is kept as text.
fn essence(part: &MessagePart<'_>) -> String {
    let Some(ct) = part.content_type() else {
        return "text/plain".into();
    };
    let ctype = ct.ctype().to_ascii_lowercase();
    match (ctype.as_str(), ct.subtype()) {
        ("multipart", _) | ("text", None) => "text/plain".into(),
        (_, None) => "application/octet-stream".into(),
        (_, Some(sub)) => format!("{ctype}/{}", sub.to_ascii_lowercase()),
    }
}

fn body_text(part: &MessagePart<'_>) -> String {
    match &part.body {
        PartType::Text(t) | PartType::Html(t) => t.to_string(),
        _ => String::from_utf8_lossy(part.contents()).into_owned(),
    }
}

/// The part's own bytes with only the transfer encoding undone. Used for text
/// parts (mail-parser hands those out charset-converted) and for parts it
/// could not decode, e.g. base64 cut short by a missing closing boundary.
fn transfer_decode(part: &MessagePart<'_>, raw: &[u8]) -> Vec<u8> {
    let body = slice(raw, part.offset_body, part.offset_end);
    let decoded = match part.encoding {
        Encoding::Base64 => lenient_base64(body),
        Encoding::QuotedPrintable => quoted_printable_decode(body),
        Encoding::None if !part.is_encoding_problem => Some(body.to_vec()),
        Encoding::None => match part.content_transfer_encoding() {
            Some(cte) if cte.eq_ignore_ascii_case("base64") => lenient_base64(body),
            Some(cte) if cte.eq_ignore_ascii_case("quoted-printable") => {
                quoted_printable_decode(body)
            }
            _ => Some(body.to_vec()),
        },
    };
    decoded.unwrap_or_else(|| part.contents().to_vec())
}

/// Decodes base64 ignoring line breaks and junk, stopping at padding.
fn lenient_base64(body: &[u8]) -> Option<Vec<u8>> {
    let mut clean: Vec<u8> = body
        .iter()
        .copied()
        .take_while(|&b| b != b'=')
        .filter(|b| b.is_ascii_alphanumeric() || *b == b'+' || *b == b'/')
        .collect();
    if clean.len() % 4 == 1 {
        clean.pop();
    }
    LENIENT.decode(&clean).ok()
}

const LENIENT: base64::engine::GeneralPurpose = base64::engine::GeneralPurpose::new(
    &base64::alphabet::STANDARD,
    base64::engine::GeneralPurposeConfig::new()
        .with_decode_padding_mode(base64::engine::DecodePaddingMode::RequireNone)
        .with_decode_allow_trailing_bits(true),
);
