//! `mime_postmark` and `postal_rewrite`: raw MIME (any bytes) and an
//! envelope → the backend's API calls, or a refusal.
//!
//! Input: the first byte holds options (bit 0: `ignore_unsupported_features`;
//! bit 1: the null sender; bits 2-7: how many envelope recipients, up to 63,
//! so a message can need two Postmark calls); the rest is the message.
//! Properties, both backends: a refusal is a 550/554 with a one-line text;
//! every envelope recipient is in exactly one call and no other address is;
//! each body serializes to valid JSON of the length the mapper measured,
//! within the size limit. Postmark: at most 50 recipients per call, To + Cc +
//! Bcc name exactly the call's recipients, bodies within 5 MB, attachment
//! names present and of no forbidden type, custom headers on one line.
//! Postal: the message sent is the input (CRLF) with whole header fields
//! removed or renamed, the body untouched, and no `Bcc`, `X-PM-Tag`,
//! `X-PM-KeepID` or `X-Postal-MsgID` field left.

use std::collections::HashSet;

use base64::Engine as _;
use serde_json::Value;

use crate::mapping::postmark::{
    MAX_BODY_BYTES, MAX_METADATA_FIELDS, MAX_RECIPIENTS_PER_CALL, MAX_TAG_CHARS,
    forbidden_extension,
};
use crate::mapping::{
    Mapped, Mapper, MapperKind, MappingError, MappingOptions, POSTAL_MAX_MESSAGE_SIZE,
    POSTMARK_MAX_MESSAGE_SIZE, unique_recipients,
};
use crate::message::address::{self, key};
use crate::message::crlf::to_crlf;
use crate::message::{Envelope, parse};

pub fn mime_postmark(data: &[u8]) {
    let (options, raw) = super::split_options(data);
    let envelope = envelope(options);
    let mapper = mapper(MapperKind::Postmark, options, POSTMARK_MAX_MESSAGE_SIZE);
    let Some(mapped) = mapped(&mapper, &envelope, raw) else {
        return;
    };
    check_calls(&mapped, &envelope, Some(POSTMARK_MAX_MESSAGE_SIZE));
    for call in &mapped.calls {
        assert!(call.recipients.len() <= MAX_RECIPIENTS_PER_CALL);
        let body = call.body();
        let text = |k: &str| body.get(k).and_then(Value::as_str).unwrap_or_default();
        assert!(!text("From").is_empty(), "no From");
        assert!(!text("MessageStream").is_empty(), "no MessageStream");
        assert!(
            text("TextBody").len() <= MAX_BODY_BYTES && text("HtmlBody").len() <= MAX_BODY_BYTES
        );
        assert!(
            !text("TextBody").is_empty() || !text("HtmlBody").is_empty(),
            "no body at all"
        );
        assert!(text("Tag").chars().count() <= MAX_TAG_CHARS);
        let metadata = body.get("Metadata").and_then(Value::as_object);
        assert!(metadata.is_none_or(|m| m.len() <= MAX_METADATA_FIELDS));
        let named: Vec<String> = ["To", "Cc", "Bcc"]
            .iter()
            .flat_map(|field| address::parse_list(text(field).as_bytes()))
            .map(|m| key(&m.addr))
            .collect();
        let wanted: HashSet<String> = call.recipients.iter().map(|r| key(r)).collect();
        assert_eq!(
            named.len(),
            call.recipients.len(),
            "To/Cc/Bcc do not name each recipient once: {body}"
        );
        assert_eq!(
            named.into_iter().collect::<HashSet<_>>(),
            wanted,
            "To/Cc/Bcc: {body}"
        );
        for a in body
            .get("Attachments")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
        {
            let name = a.get("Name").and_then(Value::as_str).unwrap_or_default();
            assert!(!name.is_empty(), "attachment without a name");
            assert!(
                forbidden_extension(name).is_none(),
                "forbidden attachment {name:?}"
            );
        }
        for h in body
            .get("Headers")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
        {
            for k in ["Name", "Value"] {
                let v = h.get(k).and_then(Value::as_str).unwrap_or_default();
                assert!(
                    !v.contains(['\r', '\n']),
                    "header {k} with a line break: {v:?}"
                );
            }
        }
    }
}

pub fn postal_rewrite(data: &[u8]) {
    let (options, raw) = super::split_options(data);
    let envelope = envelope(options);
    let mapper = mapper(MapperKind::Postal, options, POSTAL_MAX_MESSAGE_SIZE);
    let Some(mapped) = mapped(&mapper, &envelope, raw) else {
        return;
    };
    // Postal measures the message, not the request: checked by the mapper.
    check_calls(&mapped, &envelope, None);
    assert!(mapped.calls.len() <= 1, "Postal takes one call");
    let Some(call) = mapped.calls.first() else {
        return;
    };
    let body = call.body();
    assert_eq!(body["bounce"], Value::Bool(envelope.mail_from.is_empty()));
    let sent = base64::engine::general_purpose::STANDARD
        .decode(body["data"].as_str().expect("data is a string"))
        .expect("data is base64");
    let input = to_crlf(raw);
    let fields_in = parse::header_fields(&input);
    let body_in = &input[fields_in.last().map_or(0, |f| f.end)..];
    assert!(sent.ends_with(body_in), "the body changed");
    for field in parse::header_fields(&sent) {
        let line = &sent[field];
        let colon = line.iter().position(|&b| b == b':').unwrap_or(line.len());
        let name = String::from_utf8_lossy(&line[..colon])
            .trim_end()
            .to_ascii_lowercase();
        assert!(
            !matches!(
                name.as_str(),
                "bcc" | "x-pm-tag" | "x-pm-keepid" | "x-postal-msgid"
            ),
            "{name} left in the message sent"
        );
    }
}

/// The envelope the option bits describe: 0-63 recipients from a pool
/// that overlaps the addresses seeds put in To and Cc.
fn envelope(options: u8) -> Envelope {
    let n = usize::from(options >> 2);
    let pool = [
        "a@b.example",
        "C@B.example",
        "\"q x\"@b.example",
        "d@e.example",
    ];
    let rcpt_to = (0..n)
        .map(|i| match pool.get(i) {
            Some(a) => a.to_string(),
            None => format!("r{i}@x.example"),
        })
        .collect();
    let mail_from = if options & 2 == 0 {
        "s@b.example".into()
    } else {
        String::new()
    };
    Envelope { mail_from, rcpt_to }
}

fn mapper(kind: MapperKind, options: u8, max_message_size: usize) -> Mapper {
    Mapper::new(
        kind,
        MappingOptions {
            default_stream: "outbound".into(),
            ignore_unsupported: options & 1 != 0,
            max_message_size,
        },
    )
}

/// The mapping, after checking that `check` agrees with it and that a
/// refusal reads as one SMTP reply line; `None` when refused.
fn mapped(mapper: &Mapper, envelope: &Envelope, raw: &[u8]) -> Option<Mapped> {
    let result = mapper.map(envelope, raw);
    let checked = mapper.check(envelope, raw);
    assert_eq!(
        result.as_ref().map(|m| &m.warnings),
        checked.as_ref(),
        "check disagrees with map"
    );
    match result {
        Ok(mapped) => Some(mapped),
        Err(e) => {
            let (code, status, text) = e.smtp_reply();
            let want = match e {
                MappingError::Unsupported(_) => (550, "5.7.1"),
                MappingError::Limit(_) => (554, "5.6.0"),
            };
            assert_eq!((code, status), want);
            assert!(
                !text.contains(['\r', '\n']),
                "refusal text with a line break"
            );
            None
        }
    }
}

/// Recipients partitioned over the calls; each body valid JSON of the
/// measured length, within `max` when the request's size is what counts.
fn check_calls(mapped: &Mapped, envelope: &Envelope, max: Option<usize>) {
    let mut seen = Vec::new();
    for call in &mapped.calls {
        assert!(!call.recipients.is_empty(), "a call without recipients");
        seen.extend(call.recipients.iter().cloned());
        let bytes = call.to_json();
        let back: Value = serde_json::from_slice(&bytes).expect("the body is valid JSON");
        assert_eq!(back, call.body(), "serialized body differs from the call");
        assert_eq!(
            bytes,
            serde_json::to_vec(&back).expect("a JSON value encodes"),
            "not the bytes serde_json writes"
        );
        assert_eq!(bytes.len(), call.encoded_len(), "measured length is wrong");
        assert!(
            max.is_none_or(|max| bytes.len() <= max),
            "body over the limit"
        );
    }
    assert_eq!(
        seen,
        unique_recipients(&envelope.rcpt_to),
        "recipients not partitioned"
    );
}
