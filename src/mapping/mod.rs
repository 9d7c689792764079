//! (envelope, raw MIME) → the API calls that deliver it, or the reason the
//! chosen backend would refuse it.
//!
//! Pure functions, no I/O. The same `map` runs twice: at SMTP `DATA`, so a
//! message the API would refuse is rejected while the client is still there,
//! and at delivery time with `rcpt_to` reduced to the recipients not yet
//! delivered. Invariant: every (deduplicated) envelope recipient appears in
//! exactly one call's `recipients`, and no other address is ever sent to.

mod json;
pub mod mapper;
pub mod postal;
pub mod postmark;
pub mod warm;

use std::sync::Arc;

use serde::ser::{Serialize, SerializeMap, Serializer};
use serde_json::value::RawValue;
use serde_json::{Map, Value};

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

/// The JSON fields every call of one message shares (bodies, attachments,
/// sender, ...): built once per message, never cloned per call, and
/// encoded once, when built. A call's body is written from these encodings
/// (no second escaping pass, no walk of a JSON tree), and its exact length
/// is known without writing it.
#[derive(Debug)]
pub struct SharedBody {
    /// Each field's value as JSON, in key order.
    fields: Vec<(String, Box<RawValue>)>,
    /// The encoded object's length, braces and commas included.
    len: usize,
}

impl PartialEq for SharedBody {
    fn eq(&self, other: &SharedBody) -> bool {
        self.fields.len() == other.fields.len()
            && self
                .fields
                .iter()
                .zip(&other.fields)
                .all(|((k, v), (l, w))| k == l && v.get() == w.get())
    }
}

impl SharedBody {
    /// Encodes each field of `fields`, freeing its value as it goes.
    pub fn new(fields: Map<String, Value>) -> Arc<SharedBody> {
        let fields: Vec<(String, Box<RawValue>)> = fields
            .into_iter()
            .map(|(k, v)| {
                let raw = json::encode(&v);
                (k, raw)
            })
            .collect();
        let entries: usize = fields
            .iter()
            .map(|(k, v)| encoded_len(k) + 1 + v.get().len())
            .sum();
        let len = 2 + entries + fields.len().saturating_sub(1);
        Arc::new(SharedBody { fields, len })
    }

    fn contains_key(&self, key: &str) -> bool {
        self.fields.iter().any(|(k, _)| k == key)
    }
}

/// The length of `value` as serde_json writes it.
fn encoded_len<T: Serialize + ?Sized>(value: &T) -> usize {
    let mut counter = ByteCounter(0);
    // Writing into a counter cannot fail.
    let _ = serde_json::to_writer(&mut counter, value);
    counter.0
}

/// One API call: the envelope recipients it delivers to, and its JSON body
/// as the message's [`SharedBody`] plus this call's own (recipient) fields.
/// The body is assembled only while it is serialized (`Serialize` writes the
/// request body), so a message split into many calls holds its content once.
#[derive(Debug, Clone, PartialEq)]
pub struct ApiCall {
    pub recipients: Vec<String>,
    shared: Arc<SharedBody>,
    own: Map<String, Value>,
}

impl ApiCall {
    /// A call whose body is `shared` plus `own`; `own` must not repeat a
    /// shared key.
    pub fn new(
        recipients: Vec<String>,
        shared: Arc<SharedBody>,
        own: Map<String, Value>,
    ) -> ApiCall {
        debug_assert!(own.keys().all(|k| !shared.contains_key(k)));
        ApiCall {
            recipients,
            shared,
            own,
        }
    }

    /// The whole request body as a JSON value: a copy, for display and tests.
    pub fn body(&self) -> Value {
        let mut body: Map<String, Value> = self
            .shared
            .fields
            .iter()
            .map(|(k, v)| {
                // Written by serde_json itself: it parses back.
                let value = serde_json::from_str(v.get()).expect("an encoded JSON value parses");
                (k.clone(), value)
            })
            .collect();
        body.extend(self.own.clone());
        Value::Object(body)
    }

    /// The request body's length as `serde_json::to_vec` writes it, exact:
    /// the shared part was measured when it was encoded.
    pub fn encoded_len(&self) -> usize {
        let own: usize = self
            .own
            .iter()
            .map(|(k, v)| encoded_len(k) + 1 + encoded_len(v))
            .sum();
        // "{" + entries joined by "," + "}", the shared part already counted
        // with its braces and inner commas.
        match (self.shared.fields.len(), self.own.len()) {
            (_, 0) => self.shared.len,
            (0, k) => 2 + own + (k - 1),
            (_, k) => self.shared.len + own + k,
        }
    }
}

/// Serializes as the request body: shared and own fields merged in key order
/// (the order `serde_json::Map` keeps), the shared ones written as they
/// were encoded.
impl Serialize for ApiCall {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let mut map = serializer.serialize_map(Some(self.shared.fields.len() + self.own.len()))?;
        let mut shared = self.shared.fields.iter().peekable();
        let mut own = self.own.iter().peekable();
        loop {
            let shared_first = match (shared.peek(), own.peek()) {
                (Some((a, _)), Some((b, _))) => a <= *b,
                (Some(_), None) => true,
                (None, Some(_)) => false,
                (None, None) => break,
            };
            if shared_first {
                if let Some((k, v)) = shared.next() {
                    map.serialize_entry(k, v)?;
                }
            } else if let Some((k, v)) = own.next() {
                map.serialize_entry(k, v)?;
            }
        }
        map.end()
    }
}

/// An `io::Write` that only counts bytes.
struct ByteCounter(usize);

impl std::io::Write for ByteCounter {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0 += buf.len();
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
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
    use serde_json::json;

    #[test]
    fn a_call_serializes_as_its_whole_body_and_knows_its_length() {
        let shared = SharedBody::new(Map::from_iter([
            ("From".to_string(), Value::from("s@x.org")),
            ("TextBody".to_string(), Value::from("h\u{e9}llo \"q\"")),
        ]));
        let own = |pairs: &[(&str, &str)]| -> Map<String, Value> {
            pairs
                .iter()
                .map(|(k, v)| (k.to_string(), Value::from(*v)))
                .collect()
        };
        let calls = [
            ApiCall::new(vec![], shared.clone(), own(&[])),
            ApiCall::new(
                vec![],
                shared.clone(),
                own(&[("To", "a@x.org"), ("Bcc", "b@x.org")]),
            ),
            ApiCall::new(
                vec![],
                SharedBody::new(Map::new()),
                own(&[("To", "a@x.org")]),
            ),
            ApiCall::new(vec![], SharedBody::new(Map::new()), own(&[])),
        ];
        for call in &calls {
            let bytes = serde_json::to_vec(call).unwrap();
            assert_eq!(bytes, serde_json::to_vec(&call.body()).unwrap());
            assert_eq!(call.encoded_len(), bytes.len());
        }
    }

    #[test]
    fn the_measured_length_is_the_written_length_for_every_kind_of_value() {
        let values = [
            json!(null),
            json!(true),
            json!(-9_223_372_036_854_775_808i64),
            json!(1.7976931348623157e308),
            json!(u64::MAX),
            json!(""),
            json!("\u{0}\u{1f}\u{7f}\"\\/\n"),
            json!("h\u{e9}llo \u{1F600}"),
            json!([[], {}, [null, [1, "x"]], {"a": {"b": []}}]),
            json!({"\u{1}k\"": ["\u{1}", 2.5, false], "": {}}),
        ];
        for value in values {
            let fields = Map::from_iter([
                ("V".to_string(), value.clone()),
                ("\u{2}W".to_string(), value.clone()),
            ]);
            let own = Map::from_iter([("To".to_string(), value.clone())]);
            for own in [Map::new(), own] {
                let call = ApiCall::new(vec![], SharedBody::new(fields.clone()), own);
                let bytes = serde_json::to_vec(&call).unwrap();
                assert_eq!(call.encoded_len(), bytes.len(), "{value}");
                assert_eq!(bytes, serde_json::to_vec(&call.body()).unwrap(), "{value}");
            }
        }
    }

    #[test]
    fn the_calls_of_a_split_message_share_one_body() {
        let envelope = crate::message::Envelope {
            mail_from: "s@x.org".into(),
            rcpt_to: (0..120).map(|i| format!("r{i}@x.org")).collect(),
        };
        let raw = format!(
            "From: s@x.org\r\nSubject: big\r\n\r\n{}\r\n",
            "x".repeat(100_000)
        );
        let opts = MappingOptions {
            default_stream: "outbound".into(),
            ignore_unsupported: false,
            max_message_size: 10 << 20,
        };
        let mapped = postmark::map(&envelope, raw.as_bytes(), &opts).unwrap();
        assert_eq!(mapped.calls.len(), 3);
        for call in &mapped.calls[1..] {
            assert!(Arc::ptr_eq(&call.shared, &mapped.calls[0].shared));
            // Only the recipient fields are the call's own.
            assert!(
                call.own
                    .keys()
                    .all(|k| ["To", "Cc", "Bcc"].contains(&k.as_str()))
            );
        }
    }

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
