//! Postmark `POST /email`: the message decomposed into From/To/Cc/Bcc,
//! bodies, attachments and custom headers, with `X-PM-*` control headers
//! turned into API fields (see design.md, "Header mapping (Postmark)").
//!
//! Recipients come from the envelope only, split into calls of at most 50.
//! Limits Postmark enforces are checked here so they can be refused at DATA:
//! size (the serialized JSON request, which is what Postmark measures "after
//! base64"), 5 MB per body, forbidden attachment types, metadata shape.
//!
//! A message with neither a text nor an HTML body (or only blank ones) gets
//! `TextBody` = U+200B ZERO WIDTH SPACE: Postmark rejects a request without a
//! body (ErrorCode 300), and an all-whitespace body risks being trimmed to
//! empty by the API, while U+200B is not whitespace yet renders as nothing.

use std::collections::{BTreeMap, HashSet};

use base64::Engine as _;
use serde::Serialize;

use super::{
    ApiCall, Mapped, MappingError, MappingOptions, SharedBody, format_address, unique_recipients,
};
use crate::message::parse::{self, Mailbox, ParsedMessage};
use crate::message::{Envelope, address};

mod controls;
use controls::{Controls, read_controls};
pub use controls::{
    MAX_METADATA_FIELDS, MAX_METADATA_KEY_CHARS, MAX_METADATA_VALUE_CHARS, MAX_TAG_CHARS,
    SendDefaults,
};

/// Postmark accepts at most this many recipients (To + Cc + Bcc) per message.
pub const MAX_RECIPIENTS_PER_CALL: usize = 50;
/// Postmark's limit for each of `TextBody` and `HtmlBody`.
pub const MAX_BODY_BYTES: usize = 5 * 1024 * 1024;
/// Sent as `TextBody` when the message has no visible body at all.
pub const FALLBACK_TEXT_BODY: &str = "\u{200B}";
/// Attachment extensions Postmark refuses (ErrorCode 411), lower case.
pub const FORBIDDEN_EXTENSIONS: &[&str] = &[
    "vbs", "exe", "bin", "bat", "chm", "com", "cpl", "crt", "hlp", "hta", "inf", "ins", "isp",
    "jse", "lnk", "mdb", "pcd", "pif", "reg", "scr", "sct", "shs", "vbe", "vba", "wsf", "wsh",
    "wsl", "msc", "msi", "msp", "mst",
];

/// The JSON body of `POST /email`. Empty fields are left out.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "PascalCase")]
pub struct Email {
    pub from: String,
    #[serde(skip_serializing_if = "String::is_empty")]
    pub to: String,
    #[serde(skip_serializing_if = "String::is_empty")]
    pub cc: String,
    #[serde(skip_serializing_if = "String::is_empty")]
    pub bcc: String,
    #[serde(skip_serializing_if = "String::is_empty")]
    pub reply_to: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub subject: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tag: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub text_body: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub html_body: Option<String>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub headers: Vec<Header>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub track_opens: Option<bool>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub track_links: Option<TrackLinks>,
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub metadata: BTreeMap<String, String>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub attachments: Vec<Attachment>,
    pub message_stream: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "PascalCase")]
pub struct Header {
    pub name: String,
    pub value: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "PascalCase")]
pub struct Attachment {
    pub name: String,
    /// Base64 of the decoded part bytes.
    pub content: String,
    pub content_type: String,
    /// `cid:<id>` for inline parts that have a Content-ID.
    #[serde(rename = "ContentID", skip_serializing_if = "Option::is_none")]
    pub content_id: Option<String>,
}

pub use crate::config::postmark::TrackLinks;

/// Maps one message to Postmark calls (one per 50 envelope recipients),
/// without send defaults.
pub fn map(envelope: &Envelope, raw: &[u8], opts: &MappingOptions) -> Result<Mapped, MappingError> {
    map_with(envelope, raw, opts, &SendDefaults::default())
}

/// [`map`] with the configured send defaults for messages without the
/// matching `X-PM-*` header.
pub fn map_with(
    envelope: &Envelope,
    raw: &[u8],
    opts: &MappingOptions,
    defaults: &SendDefaults,
) -> Result<Mapped, MappingError> {
    map_traced(envelope, raw, opts, defaults, None)
}

/// The `Metadata` key that carries the spool id (`postmark.trace_metadata`).
pub const TRACE_KEY: &str = "postrelay-id";
/// How the warning starts when a message has no room for [`TRACE_KEY`].
pub const TRACE_SKIPPED: &str = "no room for the postrelay-id trace";

/// [`map_with`] with `trace` (a spool id) as `Metadata["postrelay-id"]`.
/// The trace wins over the message's own field of that name (any case),
/// since tracing is its purpose. A message that already has Postmark's
/// maximum of fields keeps them all and goes without the trace (with a
/// warning starting [`TRACE_SKIPPED`]): an optional trace never costs a
/// message its delivery or its sender's data.
pub fn map_traced(
    envelope: &Envelope,
    raw: &[u8],
    opts: &MappingOptions,
    defaults: &SendDefaults,
    trace: Option<&str>,
) -> Result<Mapped, MappingError> {
    let mut parsed = parse::parse(raw);
    let mut warnings = Vec::new();
    let mut controls = read_controls(&parsed, opts, defaults, &mut warnings)?;
    if let Some(id) = trace {
        controls
            .metadata
            .retain(|(k, _)| !k.eq_ignore_ascii_case(TRACE_KEY));
        if controls.metadata.len() < MAX_METADATA_FIELDS {
            controls
                .metadata
                .push((TRACE_KEY.to_string(), id.to_string()));
        } else {
            warnings.push(format!(
                "{TRACE_SKIPPED}: the message has {MAX_METADATA_FIELDS} metadata fields, \
                 Postmark's maximum; sent without it"
            ));
        }
    }
    let mut template = build_template(envelope, &mut parsed, controls, opts, &mut warnings)?;

    // The bodies, most of a message, move into the fields instead of being
    // copied through `to_value` (same names and presence as serde gives).
    let bodies = [
        ("TextBody", template.text_body.take()),
        ("HtmlBody", template.html_body.take()),
    ];
    let shared = match serde_json::to_value(&template) {
        Ok(serde_json::Value::Object(mut fields)) => {
            for (key, body) in bodies {
                if let Some(body) = body {
                    fields.insert(key.to_string(), serde_json::Value::String(body));
                }
            }
            SharedBody::new(fields)
        }
        Ok(_) => unreachable!("a struct serializes as a JSON object"),
        Err(e) => {
            return Err(MappingError::Limit(format!(
                "cannot encode the Postmark request: {e}"
            )));
        }
    };
    drop(template);

    let recipients = unique_recipients(&envelope.rcpt_to);
    let mut calls = Vec::new();
    for chunk in recipients.chunks(MAX_RECIPIENTS_PER_CALL) {
        let (to, cc, bcc) = address_fields(&parsed, chunk);
        let own: serde_json::Map<String, serde_json::Value> =
            [("To", to), ("Cc", cc), ("Bcc", bcc)]
                .into_iter()
                .filter(|(_, v)| !v.is_empty())
                .map(|(k, v)| (k.to_string(), serde_json::Value::String(v)))
                .collect();
        let call = ApiCall::new(chunk.to_vec(), shared.clone(), own);
        let size = call.encoded_len();
        if size > opts.max_message_size {
            return Err(MappingError::Limit(format!(
                "message size {size} bytes after base64 exceeds Postmark's {}-byte limit",
                opts.max_message_size
            )));
        }
        calls.push(call);
    }
    Ok(Mapped { calls, warnings })
}

/// Everything but the recipient fields, which differ per call.
fn build_template(
    envelope: &Envelope,
    parsed: &mut ParsedMessage,
    controls: Controls,
    opts: &MappingOptions,
    warnings: &mut Vec<String>,
) -> Result<Email, MappingError> {
    let from = match parsed.from.first() {
        Some(m) => format_address(m.name.as_deref(), &m.addr),
        None if !envelope.mail_from.is_empty() => {
            warnings.push("no From header; using the envelope sender as From".into());
            address::rfc5322(&envelope.mail_from)
        }
        None => {
            return Err(MappingError::Limit(
                "message has no From header, which Postmark requires".into(),
            ));
        }
    };
    if parsed.parts_over_limit {
        return Err(MappingError::Limit(format!(
            "message has more than {} MIME parts; the rest would be lost",
            crate::message::mime::Limits::default().max_parts
        )));
    }
    if parsed.truncated {
        warnings.push(format!(
            "MIME nesting deeper than {} levels: the deepest part is sent whole as message/rfc822",
            crate::message::mime::Limits::default().max_depth
        ));
    }
    let (text_body, html_body) = bodies(parsed)?;
    Ok(Email {
        from,
        to: String::new(),
        cc: String::new(),
        bcc: String::new(),
        reply_to: join(parsed.reply_to.iter()),
        subject: parsed.subject.clone().filter(|s| !s.is_empty()),
        tag: controls.tag,
        text_body,
        html_body,
        headers: custom_headers(parsed, controls.keep_id, warnings),
        track_opens: controls.track_opens,
        track_links: controls.track_links,
        metadata: controls.metadata.into_iter().collect(),
        attachments: attachments(parsed)?,
        message_stream: controls
            .stream
            .unwrap_or_else(|| opts.default_stream.clone()),
    })
}

/// The message's bodies, taken out of `parsed`.
fn bodies(parsed: &mut ParsedMessage) -> Result<(Option<String>, Option<String>), MappingError> {
    let present = |b: &mut Option<String>| b.take().filter(|s| !s.is_empty());
    let (mut text, html) = (
        present(&mut parsed.text_body),
        present(&mut parsed.html_body),
    );
    let visible = |b: &Option<String>| b.as_deref().is_some_and(|s| !s.trim().is_empty());
    if !visible(&text) && !visible(&html) {
        text = Some(FALLBACK_TEXT_BODY.to_string());
    }
    for (field, body) in [("TextBody", &text), ("HtmlBody", &html)] {
        let len = body.as_ref().map_or(0, String::len);
        if len > MAX_BODY_BYTES {
            return Err(MappingError::Limit(format!(
                "{field} is {len} bytes, over Postmark's {MAX_BODY_BYTES}-byte limit per body"
            )));
        }
    }
    Ok((text, html))
}

/// To/Cc keep the header's display names and spelling but only for this
/// call's recipients (matched by canonical form: `"john.doe"@x` is
/// `john.doe@x`); every other recipient of the call goes to Bcc. Each
/// address appears once across the three fields, always valid RFC 5322.
fn address_fields(parsed: &ParsedMessage, chunk: &[String]) -> (String, String, String) {
    let wanted: HashSet<String> = chunk.iter().map(|r| address::key(r)).collect();
    let mut placed = HashSet::new();
    let mut pick = |list: &[Mailbox]| -> String {
        let chosen = list.iter().filter(|m| {
            let key = address::key(&m.addr);
            wanted.contains(&key) && placed.insert(key)
        });
        join(chosen)
    };
    let to = pick(&parsed.to);
    let cc = pick(&parsed.cc);
    let bcc: Vec<String> = chunk
        .iter()
        .filter(|r| placed.insert(address::key(r)))
        .map(|r| address::rfc5322(r))
        .collect();
    (to, cc, bcc.join(", "))
}

fn join<'a>(mailboxes: impl Iterator<Item = &'a Mailbox>) -> String {
    mailboxes
        .map(|m| format_address(m.name.as_deref(), &m.addr))
        .collect::<Vec<_>>()
        .join(", ")
}

/// Custom headers in message order: structural and `X-PM-*` ones are left
/// out (Message-ID is kept when `X-PM-KeepID: true`), as are empty values.
fn custom_headers(
    parsed: &ParsedMessage,
    keep_id: bool,
    warnings: &mut Vec<String>,
) -> Vec<Header> {
    if keep_id && parsed.message_id.is_none() {
        warnings.push("X-PM-KeepID is true but the message has no Message-ID".into());
    }
    parsed
        .headers
        .iter()
        .filter(|h| {
            let keep_message_id = keep_id && h.name.eq_ignore_ascii_case("message-id");
            let control = h.name.to_ascii_lowercase().starts_with("x-pm-");
            !h.value.is_empty() && !control && (keep_message_id || !parse::is_structural(&h.name))
        })
        .map(|h| Header {
            name: h.name.clone(),
            value: h.value.clone(),
        })
        .collect()
}

fn attachments(parsed: &ParsedMessage) -> Result<Vec<Attachment>, MappingError> {
    let engine = &base64::engine::general_purpose::STANDARD;
    let mut out = Vec::with_capacity(parsed.attachments.len());
    for (i, part) in parsed.attachments.iter().enumerate() {
        let name = part
            .name
            .clone()
            .unwrap_or_else(|| synthetic_name(i + 1, &part.content_type));
        // Every name the part declares, decoded: a reader or the recipient's
        // system may use any of them, so none may carry a forbidden type.
        for declared in part.names.iter().chain([&name]) {
            if let Some(ext) = forbidden_extension(declared) {
                return Err(MappingError::Limit(format!(
                    "attachment \"{declared}\" has a file type Postmark forbids (.{ext})"
                )));
            }
        }
        let content_id = part
            .content_id
            .as_ref()
            .filter(|id| part.inline && !id.is_empty());
        out.push(Attachment {
            name,
            content: engine.encode(&part.data),
            content_type: part.content_type.clone(),
            content_id: content_id.map(|id| format!("cid:{id}")),
        });
    }
    Ok(out)
}

/// `attachment-N.ext` for parts without a file name. The extension comes
/// from the content type and is never one Postmark forbids (`dat`, not `bin`).
fn synthetic_name(n: usize, content_type: &str) -> String {
    let essence = content_type.split(';').next().unwrap_or_default();
    let ext = match essence {
        "text/plain" | "message/delivery-status" => "txt",
        "text/html" => "html",
        "text/calendar" | "application/ics" => "ics",
        "text/csv" => "csv",
        "message/rfc822" => "eml",
        "image/png" => "png",
        "image/jpeg" => "jpg",
        "image/gif" => "gif",
        "application/pdf" => "pdf",
        "application/json" => "json",
        "application/zip" => "zip",
        "application/xml" | "text/xml" => "xml",
        _ => "dat",
    };
    format!("attachment-{n}.{ext}")
}

/// The forbidden extension of `name`, if any. Trailing dots and spaces are
/// ignored, since Windows ignores them too (`setup.exe.` runs as `.exe`).
pub fn forbidden_extension(name: &str) -> Option<String> {
    let trimmed = name.trim_end_matches(['.', ' ']);
    let (_, ext) = trimmed.rsplit_once('.')?;
    let ext = ext.to_ascii_lowercase();
    FORBIDDEN_EXTENSIONS.contains(&ext.as_str()).then_some(ext)
}
