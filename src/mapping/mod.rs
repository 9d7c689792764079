//! (envelope, raw MIME) → the API calls that deliver it, or the reason the
//! chosen backend would refuse it.
//!
//! Pure functions, no I/O. The same `map` runs twice: at SMTP `DATA`, so a
//! message the API would refuse is rejected while the client is still there,
//! and at delivery time with `rcpt_to` reduced to the recipients not yet
//! delivered. Invariant: every (deduplicated) envelope recipient appears in
//! exactly one call's `recipients`, and no other address is ever sent to.

mod body;
mod json;
pub mod mapper;
pub mod postal;
pub mod postmark;
pub mod warm;

pub use body::{ApiCall, SharedBody, batch_json};
pub use mapper::{Mapper, MapperKind};

/// Postmark's limit for one message, measured after base64 encoding.
pub const POSTMARK_MAX_MESSAGE_SIZE: usize = 10 * 1024 * 1024;
/// Postal's default `smtp_server.max_message_size` (14 MB).
pub const POSTAL_MAX_MESSAGE_SIZE: usize = 14 * 1024 * 1024;

/// Settings that shape a mapping; built once from the config.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MappingOptions {
    /// Postmark `MessageStream` when no `X-PM-Message-Stream` header, e.g. "outbound".
    pub default_stream: String,
    /// Config `ignore_unsupported_features`: drop what the backend cannot do
    /// (with a warning) instead of rejecting the message.
    pub ignore_unsupported: bool,
    /// Bytes. Postmark: measured on the JSON request (base64 included);
    /// Postal: the raw message as sent.
    pub max_message_size: usize,
}

/// Why a message cannot be mapped. Both variants are permanent: the same
/// message will be refused again, so SMTP gets a 5xx.
#[derive(Debug, thiserror::Error, Clone, PartialEq)]
pub enum MappingError {
    /// The backend cannot express this (two X-PM-Tag on Postmark,
    /// tracking/metadata/stream on Postal) → SMTP 550 5.7.1.
    #[error("unsupported feature: {0}")]
    Unsupported(String),
    /// An API limit would be exceeded (size after base64, body > 5 MB,
    /// metadata counts/lengths, forbidden attachment type, invalid TrackLinks
    /// value, missing sender, ...) → SMTP 554 5.6.0.
    #[error("{0}")]
    Limit(String),
}

impl MappingError {
    /// The SMTP reply for this error: (code, enhanced status, text naming the
    /// feature or limit). The text never contains CR or LF.
    pub fn smtp_reply(&self) -> (u16, &'static str, String) {
        let text = self.to_string().replace(['\r', '\n'], " ");
        match self {
            MappingError::Unsupported(_) => (550, "5.7.1", text),
            MappingError::Limit(_) => (554, "5.6.0", text),
        }
    }
}

/// The calls for one message, plus notes for the log (features dropped under
/// `ignore_unsupported`, headers ignored, ...).
#[derive(Debug, Clone, PartialEq)]
pub struct Mapped {
    pub calls: Vec<ApiCall>,
    pub warnings: Vec<String>,
}

/// Envelope recipients with case-insensitive duplicates removed, first
/// spelling and order kept.
pub fn unique_recipients(rcpt_to: &[String]) -> Vec<String> {
    let mut seen = std::collections::HashSet::new();
    rcpt_to
        .iter()
        .map(|r| r.trim())
        .filter(|r| !r.is_empty() && seen.insert(crate::message::address::key(r)))
        .map(str::to_string)
        .collect()
}

/// `Name <addr>`, or just `addr` without a name. Names containing RFC 5322
/// specials are quoted, with `"` and `\` escaped; the address is always a
/// valid RFC 5322 addr-spec ([`crate::message::address::rfc5322`]: a local part with
/// specials is quoted, never a bare comma).
pub fn format_address(name: Option<&str>, addr: &str) -> String {
    let addr = crate::message::address::rfc5322(addr);
    match name.map(str::trim).filter(|n| !n.is_empty()) {
        None => addr,
        Some(name) => format!("{} <{addr}>", quote_display_name(name)),
    }
}

/// Quotes a display name when it contains any of `,;:<>@"()[]\.`.
pub fn quote_display_name(name: &str) -> String {
    const SPECIALS: &[char] = &[
        ',', ';', ':', '<', '>', '@', '"', '(', ')', '[', ']', '\\', '.',
    ];
    if !name.contains(SPECIALS) {
        return name.to_string();
    }
    let mut quoted = String::with_capacity(name.len() + 2);
    quoted.push('"');
    for c in name.chars() {
        if c == '"' || c == '\\' {
            quoted.push('\\');
        }
        quoted.push(c);
    }
    quoted.push('"');
    quoted
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unique_recipients_drops_case_insensitive_duplicates_keeping_first_spelling() {
        let rcpt = ["A@x.org", "b@x.org", "a@X.ORG", " ", "b@x.org"].map(String::from);
        assert_eq!(unique_recipients(&rcpt), ["A@x.org", "b@x.org"]);
    }

    #[test]
    fn plain_names_stay_unquoted_and_bare_addresses_have_no_brackets() {
        assert_eq!(
            format_address(Some("Jane Doe"), "j@x.org"),
            "Jane Doe <j@x.org>"
        );
        assert_eq!(format_address(Some("José"), "j@x.org"), "José <j@x.org>");
        assert_eq!(format_address(None, "j@x.org"), "j@x.org");
        assert_eq!(format_address(Some("  "), "j@x.org"), "j@x.org");
    }

    #[test]
    fn local_parts_with_specials_are_always_sent_quoted() {
        assert_eq!(format_address(None, "a,b@x.org"), "\"a,b\"@x.org");
        assert_eq!(format_address(None, "\"a,b\"@x.org"), "\"a,b\"@x.org");
        assert_eq!(
            format_address(Some("J"), "john doe@x.org"),
            "J <\"john doe\"@x.org>"
        );
    }

    #[test]
    fn names_with_specials_are_quoted_and_escaped() {
        assert_eq!(
            format_address(Some("Doe, Jane"), "j@x.org"),
            "\"Doe, Jane\" <j@x.org>"
        );
        assert_eq!(
            format_address(Some("J. Doe"), "j@x.org"),
            "\"J. Doe\" <j@x.org>"
        );
        assert_eq!(
            quote_display_name(r#"say "hi" \o/"#),
            r#""say \"hi\" \\o/""#
        );
    }

    #[test]
    fn smtp_reply_codes_match_the_design_table() {
        let (code, enhanced, text) =
            MappingError::Unsupported("X-PM-TrackOpens".into()).smtp_reply();
        assert_eq!((code, enhanced), (550, "5.7.1"));
        assert_eq!(text, "unsupported feature: X-PM-TrackOpens");
        let (code, enhanced, text) = MappingError::Limit("too big".into()).smtp_reply();
        assert_eq!((code, enhanced, text.as_str()), (554, "5.6.0", "too big"));
    }
}
