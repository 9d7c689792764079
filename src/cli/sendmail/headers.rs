//! From the header block and the options to the envelope and the header
//! bytes to send: recipients from the arguments (and with `-t` from
//! To/Cc/Bcc), the sender, the generated From/Date/Message-ID, bare local
//! names qualified with `[local] domain`.
//!
//! Invariant: every header line this module generates goes through
//! [`field`], which cannot emit a line break: whatever an argument or a
//! header value holds, it cannot add a header field or end the header block.

use std::collections::HashSet;
use std::time::SystemTime;

use super::args::Options;
use super::input::{Field, Head};
use crate::message::Envelope;
use crate::message::local::{is_local, qualify, route_recipient};

/// Who is sending, and the local naming rules.
#[derive(Debug, Clone)]
pub struct Local {
    /// The real uid's login name.
    pub login: String,
    pub domain: String,
    pub admin: Option<String>,
}

#[derive(Debug, PartialEq, Eq)]
pub struct Prepared {
    pub envelope: Envelope,
    /// The header block to send, blank line included (and the first body
    /// line when the block ended on one).
    pub header: Vec<u8>,
}

/// One header line `Name: value\r\n`; any control character in the value
/// (CR, LF, NUL, ...) becomes a space, so the result is always one line.
pub fn field(name: &'static str, value: &str) -> Vec<u8> {
    let clean: String = value
        .chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect();
    format!("{name}: {clean}\r\n").into_bytes()
}

/// A mailbox with an optional display name: `"Name" <addr>`, the name
/// quoted (or RFC 2047-encoded when it is not ASCII).
pub fn mailbox(name: Option<&str>, addr: &str) -> String {
    match name.map(str::trim).filter(|n| !n.is_empty()) {
        None => addr.to_string(),
        Some(n) if n.is_ascii() => {
            let quoted = n.replace('\\', "\\\\").replace('"', "\\\"");
            format!("\"{quoted}\" <{addr}>")
        }
        Some(n) => {
            use base64::Engine;
            let b64 = base64::engine::general_purpose::STANDARD.encode(n);
            format!("=?UTF-8?B?{b64}?= <{addr}>")
        }
    }
}

/// Parses an address list as RFC 5322 writes it (`Name <a@x>, b@y`,
/// `root (Cron Daemon)`); returns (display name, address) pairs.
pub fn parse_list(text: &str) -> Vec<(Option<String>, String)> {
    let raw = format!("To: {}\r\n\r\n", text.replace(['\r', '\n'], " "));
    let parsed = mail_parser::MessageParser::default().parse_headers(raw.as_bytes());
    let found: Vec<(Option<String>, String)> = parsed
        .as_ref()
        .and_then(|m| m.to())
        .map(|list| {
            list.iter()
                .filter_map(|a| {
                    Some((
                        a.name().map(str::to_string),
                        a.address()?.trim().to_string(),
                    ))
                })
                .filter(|(_, a)| !a.is_empty())
                .collect()
        })
        .unwrap_or_default();
    if found.is_empty() && !text.trim().is_empty() && !text.contains([',', '<', ' ']) {
        return vec![(None, text.trim().to_string())];
    }
    found
}

fn field_value(f: &Field) -> String {
    let joined: Vec<u8> = f.lines.join(&b" "[..]);
    let text = String::from_utf8_lossy(&joined);
    text.split_once(':')
        .map(|(_, v)| v.trim().to_string())
        .unwrap_or_default()
}

/// Pure: options + header block + who is sending → envelope and headers.
pub fn prepare(
    o: &Options,
    head: &Head,
    local: &Local,
    now: SystemTime,
) -> Result<Prepared, String> {
    let d = local.domain.as_str();
    let mut rcpts = Vec::new();
    for (i, arg) in o.recipients.iter().enumerate() {
        let list = parse_list(arg);
        if list.is_empty() {
            return Err(format!(
                "recipient argument {} ({arg:?}) is not an address",
                i + 1
            ));
        }
        rcpts.extend(list.into_iter().map(|(_, a)| a));
    }
    let headers = |name: &'static str| head.fields.iter().filter(move |f| f.name == name);
    if o.read_headers {
        for name in ["to", "cc", "bcc"] {
            for f in headers(name) {
                rcpts.extend(parse_list(&field_value(f)).into_iter().map(|(_, a)| a));
            }
        }
    }
    let admin = local.admin.as_deref();
    let mut seen = HashSet::new();
    let rcpts: Vec<String> = rcpts
        .iter()
        .map(|r| route_recipient(r, d, admin))
        .filter(|r| seen.insert(r.to_ascii_lowercase()))
        .collect();
    if rcpts.is_empty() {
        return Err("no recipients: give them as arguments or use -t".into());
    }
    if let Some(bad) = rcpts
        .iter()
        .find(|r| !crate::maildrop::format::valid_address(r))
    {
        return Err(format!("recipient {bad:?} is not a valid address"));
    }

    let header_from = headers("from")
        .next()
        .and_then(|f| parse_list(&field_value(f)).into_iter().next());
    let sender = match &o.from {
        Some(f) if f.trim() == "<>" || f.trim().is_empty() => String::new(),
        Some(f) => parse_list(f)
            .into_iter()
            .next()
            .map(|(_, a)| a)
            .ok_or_else(|| format!("-f {f:?} is not an address"))?,
        None => header_from
            .as_ref()
            .map(|(_, a)| a.clone())
            .unwrap_or_else(|| local.login.clone()),
    };
    let sender = qualify(&sender, d);
    if !sender.is_empty() && !crate::maildrop::format::valid_address(&sender) {
        return Err(format!("sender {sender:?} is not a valid address"));
    }

    let mut out = Vec::new();
    if header_from.is_none() && headers("from").next().is_none() {
        let who = if sender.is_empty() {
            qualify(&local.login, d)
        } else {
            sender.clone()
        };
        out.extend(field("From", &mailbox(o.full_name.as_deref(), &who)));
    }
    if headers("date").next().is_none() {
        out.extend(field("Date", &httpdate::fmt_http_date(now)));
    }
    if headers("message-id").next().is_none() {
        out.extend(field(
            "Message-ID",
            &format!("<{}@{d}>", ulid::Ulid::generate()),
        ));
    }
    for f in &head.fields {
        if o.read_headers && f.name == "bcc" {
            continue;
        }
        match f.name.as_str() {
            "from" | "to" | "cc" if needs_qualifying(f) => out.extend(qualified(f, d)),
            _ => {
                for l in &f.lines {
                    out.extend_from_slice(l);
                    out.extend_from_slice(b"\r\n");
                }
            }
        }
    }
    out.extend_from_slice(b"\r\n");
    if let Some(l) = &head.first_body_line {
        out.extend_from_slice(l);
        out.extend_from_slice(b"\r\n");
    }
    Ok(Prepared {
        envelope: Envelope {
            mail_from: sender,
            rcpt_to: rcpts,
        },
        header: out,
    })
}

fn needs_qualifying(f: &Field) -> bool {
    parse_list(&field_value(f)).iter().any(|(_, a)| is_local(a))
}

/// The field rebuilt with every bare name qualified.
fn qualified(f: &Field, domain: &str) -> Vec<u8> {
    let list: Vec<String> = parse_list(&field_value(f))
        .iter()
        .map(|(n, a)| mailbox(n.as_deref(), &qualify(a, domain)))
        .collect();
    let name: &'static str = match f.name.as_str() {
        "from" => "From",
        "to" => "To",
        _ => "Cc",
    };
    field(name, &list.join(", "))
}

#[cfg(test)]
mod tests;
