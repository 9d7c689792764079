//! Postal `POST /api/v1/send/raw`: the message itself, base64, for all
//! envelope recipients in one call (send/raw has no recipient cap).
//!
//! The bytes go through unchanged except that bare LF line endings become
//! CRLF (Postal splits headers from body at the first CRLFCRLF) and, in the
//! header section only (up to the first blank line), `X-PM-Tag` is renamed
//! `X-Postal-Tag`, `X-Postal-MsgID` is removed (Postal skips DKIM signing
//! when it is present), and a `Bcc` header is removed (its recipients are in
//! `rcpt_to`; left in, every recipient would see them). `X-PM-*` headers that ask for something Postal cannot
//! do are refused, or removed under `ignore_unsupported`; `X-PM-KeepID` is
//! removed silently (send/raw keeps the Message-ID anyway). Other `X-PM-*`
//! headers are left alone.
//!
//! Null sender: Postal answers `parameter-error` for a blank `mail_from`
//! (`mail_from.blank?` in its send controller), and ignores the value for
//! `bounce: true` messages anyway, so `MAIL FROM:<>` is sent as `"<>"`.

use base64::Engine as _;
use serde_json::{Map, Value};

use super::{ApiCall, Mapped, MappingError, MappingOptions, SharedBody, unique_recipients};
use crate::message::Envelope;
use crate::message::crlf::to_crlf;
use crate::message::parse;

/// `mail_from` sent for the null sender, which Postal would reject as blank.
pub const NULL_SENDER: &str = "<>";

// The JSON body of `send/raw`: `mail_from`, `rcpt_to`, `data` (base64 of the
// rewritten message) and `bounce` (true for the null sender, so Postal sends
// no bounce about a bounce).

/// Maps one message to a single Postal call for all envelope recipients.
pub fn map(envelope: &Envelope, raw: &[u8], opts: &MappingOptions) -> Result<Mapped, MappingError> {
    let mut warnings = Vec::new();
    let data = rewrite(&to_crlf(raw), opts, &mut warnings)?;
    if data.len() > opts.max_message_size {
        return Err(MappingError::Limit(format!(
            "message size {} bytes exceeds Postal's {}-byte limit",
            data.len(),
            opts.max_message_size
        )));
    }
    let recipients = unique_recipients(&envelope.rcpt_to);
    if recipients.is_empty() {
        return Ok(Mapped {
            calls: Vec::new(),
            warnings,
        });
    }
    let bounce = envelope.mail_from.is_empty();
    let mail_from = if bounce {
        NULL_SENDER.to_string()
    } else {
        envelope.mail_from.clone()
    };
    let data = base64::engine::general_purpose::STANDARD.encode(&data);
    let shared = SharedBody::new(
        [
            ("mail_from", Value::String(mail_from)),
            ("data", Value::String(data)),
            ("bounce", Value::Bool(bounce)),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v))
        .collect(),
    );
    let own = Map::from_iter([(
        "rcpt_to".to_string(),
        Value::Array(recipients.iter().cloned().map(Value::String).collect()),
    )]);
    Ok(Mapped {
        calls: vec![ApiCall::new(recipients, shared, own)],
        warnings,
    })
}

/// What happens to one header field.
enum Action {
    Keep,
    Drop,
    RenameTag,
}

/// Applies the header rules to CRLF input and returns the new message.
fn rewrite(
    msg: &[u8],
    opts: &MappingOptions,
    warnings: &mut Vec<String>,
) -> Result<Vec<u8>, MappingError> {
    let fields = parse::header_fields(msg);
    let mut actions = Vec::with_capacity(fields.len());
    let mut tags = 0;
    let mut unsupported = Vec::new();
    for field in &fields {
        let name = field_name(&msg[field.clone()]);
        let lower = name.to_ascii_lowercase();
        let action = match lower.as_str() {
            "x-pm-tag" => {
                tags += 1;
                if tags == 1 {
                    Action::RenameTag
                } else {
                    Action::Drop
                }
            }
            // Bcc recipients are in rcpt_to; the header would show them to everyone.
            "x-postal-msgid" | "x-pm-keepid" | "bcc" => Action::Drop,
            "x-pm-trackopens" | "x-pm-tracklinks" | "x-pm-message-stream" => {
                unsupported.push(name);
                Action::Drop
            }
            _ if lower.starts_with("x-pm-metadata-") => {
                unsupported.push(name);
                Action::Drop
            }
            _ => Action::Keep,
        };
        actions.push(action);
    }
    if tags > 1 {
        if !opts.ignore_unsupported {
            return Err(MappingError::Unsupported(
                "multiple X-PM-Tag headers".into(),
            ));
        }
        warnings.push(format!(
            "Postal takes one tag: kept the first X-PM-Tag, dropped {} (ignore_unsupported_features = true)",
            tags - 1
        ));
    }
    if let Some(first) = unsupported.first() {
        if !opts.ignore_unsupported {
            return Err(MappingError::Unsupported(first.clone()));
        }
        for name in &unsupported {
            warnings.push(format!(
                "Postal cannot express {name}: header removed (ignore_unsupported_features = true)"
            ));
        }
    }

    let mut out = Vec::with_capacity(msg.len());
    let mut copied_to = 0;
    for (field, action) in fields.iter().zip(&actions) {
        out.extend_from_slice(&msg[copied_to..field.start]);
        copied_to = field.end;
        match action {
            Action::Keep => out.extend_from_slice(&msg[field.clone()]),
            Action::Drop => {}
            Action::RenameTag => {
                let name_len = field_name(&msg[field.clone()]).len();
                out.extend_from_slice(b"X-Postal-Tag");
                out.extend_from_slice(&msg[field.start + name_len..field.end]);
            }
        }
    }
    out.extend_from_slice(&msg[copied_to..]);
    Ok(out)
}

/// The field name: the bytes before the colon, trailing blanks removed.
fn field_name(field: &[u8]) -> String {
    let colon = field.iter().position(|&b| b == b':').unwrap_or(field.len());
    String::from_utf8_lossy(&field[..colon])
        .trim_end()
        .to_string()
}
