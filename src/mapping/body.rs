//! API request bodies: a message's [`SharedBody`] and each [`ApiCall`]'s
//! own fields, encoded as JSON once, when mapped (see [`json`](super::json)),
//! then written as bytes when sent, alone or in a batch array.
//!
//! Invariant: [`ApiCall::to_json`] writes exactly what `serde_json::to_vec`
//! writes for [`ApiCall::body`] (fields in key order), and
//! [`ApiCall::encoded_len`] is its exact length, known without writing it.

use std::sync::Arc;

use serde_json::{Map, Value};

use super::json;

/// Fields encoded as JSON, in key order: each key with its value's JSON.
#[derive(Debug, Clone, PartialEq)]
struct Fields {
    fields: Vec<(String, Vec<u8>)>,
    /// Length of the fields as entries of an object: keys, colons, values
    /// and the commas between them.
    len: usize,
}

impl Fields {
    /// Encodes each field of `map`, freeing its value as it goes.
    fn encode(map: Map<String, Value>) -> Fields {
        let fields: Vec<(String, Vec<u8>)> = map
            .into_iter()
            .map(|(k, v)| (k, json::encode(&v)))
            .collect();
        let entries: usize = fields
            .iter()
            .map(|(k, v)| json::quoted_len(k) + 1 + v.len())
            .sum();
        Fields {
            len: entries + fields.len().saturating_sub(1),
            fields,
        }
    }

    fn values(&self) -> impl Iterator<Item = (String, Value)> + '_ {
        self.fields.iter().map(|(k, v)| {
            // Written by `json::encode`, which writes only valid JSON.
            let value = serde_json::from_slice(v).unwrap_or(Value::Null);
            (k.clone(), value)
        })
    }
}

/// The JSON fields every call of one message shares (bodies, attachments,
/// sender, ...): built and encoded once per message, never copied per call.
#[derive(Debug, PartialEq)]
pub struct SharedBody(Fields);

impl SharedBody {
    pub fn new(fields: Map<String, Value>) -> Arc<SharedBody> {
        Arc::new(SharedBody(Fields::encode(fields)))
    }
}

/// One API call: the envelope recipients it delivers to, and its JSON body
/// as the message's [`SharedBody`] plus this call's own (recipient) fields,
/// so a message split into many calls holds its content once.
#[derive(Debug, Clone, PartialEq)]
pub struct ApiCall {
    pub recipients: Vec<String>,
    shared: Arc<SharedBody>,
    own: Fields,
}

impl ApiCall {
    /// A call whose body is `shared` plus `own`; `own` must not repeat a
    /// shared key.
    pub fn new(
        recipients: Vec<String>,
        shared: Arc<SharedBody>,
        own: Map<String, Value>,
    ) -> ApiCall {
        debug_assert!(
            own.keys()
                .all(|k| !shared.0.fields.iter().any(|(s, _)| s == k))
        );
        ApiCall {
            recipients,
            shared,
            own: Fields::encode(own),
        }
    }

    /// The whole request body as a JSON value: a copy, for display and tests.
    pub fn body(&self) -> Value {
        Value::Object(self.shared.0.values().chain(self.own.values()).collect())
    }

    /// The request body's exact length.
    pub fn encoded_len(&self) -> usize {
        let (shared, own) = (&self.shared.0, &self.own);
        let comma = usize::from(!shared.fields.is_empty() && !own.fields.is_empty());
        2 + shared.len + comma + own.len
    }

    /// The request body: shared and own fields merged in key order.
    pub fn to_json(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(self.encoded_len());
        self.write_json(&mut out);
        out
    }

    fn write_json(&self, out: &mut Vec<u8>) {
        let mut shared = self.shared.0.fields.iter().peekable();
        let mut own = self.own.fields.iter().peekable();
        out.push(b'{');
        let mut first = true;
        loop {
            let next = match (shared.peek(), own.peek()) {
                (Some((a, _)), Some((b, _))) if a <= b => shared.next(),
                (Some(_), Some(_)) | (None, Some(_)) => own.next(),
                (Some(_), None) => shared.next(),
                (None, None) => break,
            };
            let Some((k, v)) = next else { break };
            if !first {
                out.push(b',');
            }
            first = false;
            json::quote_into(k, out);
            out.push(b':');
            out.extend_from_slice(v);
        }
        out.push(b'}');
    }
}

/// The body of a batch call: `calls` as a JSON array.
pub fn batch_json(calls: &[&ApiCall]) -> Vec<u8> {
    let len =
        2 + calls.len().saturating_sub(1) + calls.iter().map(|c| c.encoded_len()).sum::<usize>();
    let mut out = Vec::with_capacity(len);
    out.push(b'[');
    for (i, call) in calls.iter().enumerate() {
        if i > 0 {
            out.push(b',');
        }
        call.write_json(&mut out);
    }
    out.push(b']');
    out
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
            let bytes = call.to_json();
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
                let bytes = call.to_json();
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
        let opts = super::super::MappingOptions {
            default_stream: "outbound".into(),
            ignore_unsupported: false,
            max_message_size: 10 << 20,
        };
        let mapped = super::super::postmark::map(&envelope, raw.as_bytes(), &opts).unwrap();
        assert_eq!(mapped.calls.len(), 3);
        for call in &mapped.calls[1..] {
            assert!(Arc::ptr_eq(&call.shared, &mapped.calls[0].shared));
            // Only the recipient fields are the call's own.
            assert!(
                call.own
                    .fields
                    .iter()
                    .all(|(k, _)| ["To", "Cc", "Bcc"].contains(&k.as_str()))
            );
        }
    }

    #[test]
    fn a_batch_is_its_calls_as_a_json_array() {
        let shared = SharedBody::new(Map::from_iter([("Subject".to_string(), Value::from("s"))]));
        let to = |a: &str| Map::from_iter([("To".to_string(), Value::from(a))]);
        let a = ApiCall::new(vec![], shared.clone(), to("a@x.org"));
        let b = ApiCall::new(vec![], shared, to("b@x.org"));
        let bodies = serde_json::to_vec(&[a.body(), b.body()]).unwrap();
        assert_eq!(batch_json(&[&a, &b]), bodies);
        assert_eq!(batch_json(&[]), b"[]");
    }
}
