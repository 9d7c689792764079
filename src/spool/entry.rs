//! One spooled message on disk: `<id>.eml` (the raw message, CRLF) beside
//! `<id>.json` (this [`Meta`]: envelope and delivery state). The JSON is the
//! commit marker: an `.eml` without it was never acknowledged.

use std::time::SystemTime;

use serde::{Deserialize, Serialize};

use crate::message::Envelope;

pub const META_VERSION: u32 = 1;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Meta {
    pub version: u32,
    pub id: String,
    pub envelope: Envelope,
    /// Size of the `.eml` in bytes.
    pub size: u64,
    #[serde(with = "rfc3339")]
    pub received_at: SystemTime,
    pub attempts: u32,
    #[serde(with = "rfc3339")]
    pub next_attempt_at: SystemTime,
    #[serde(default)]
    pub last_error: Option<String>,
    /// Recipients the API already accepted (a split message that failed part-way);
    /// they are never sent again.
    #[serde(default)]
    pub delivered: Vec<String>,
    /// Recipients the API refused for good (their part of a split message):
    /// never sent again; the message ends in failed/ for them.
    #[serde(default)]
    pub refused: Vec<String>,
    /// The API's answer that refused them.
    #[serde(default)]
    pub refusal: Option<Failure>,
    /// The last attempt hit a configuration fault (rejected credential, ...):
    /// the message is held, and due at once after a restart.
    #[serde(default)]
    pub held: bool,
    /// Set when the message was dead-lettered.
    #[serde(default)]
    pub failure: Option<Failure>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Failure {
    /// The API's own error code, when it gave one.
    pub code: Option<String>,
    pub reason: String,
    #[serde(with = "rfc3339")]
    pub failed_at: SystemTime,
}

impl Meta {
    pub fn new(id: String, envelope: Envelope, size: u64, now: SystemTime) -> Meta {
        Meta {
            version: META_VERSION,
            id,
            envelope,
            size,
            received_at: now,
            attempts: 0,
            next_attempt_at: now,
            last_error: None,
            delivered: Vec::new(),
            refused: Vec::new(),
            refusal: None,
            held: false,
            failure: None,
        }
    }

    /// Envelope recipients the API has neither accepted nor refused yet.
    pub fn pending_recipients(&self) -> Vec<String> {
        let done = |r: &String| {
            self.delivered
                .iter()
                .chain(&self.refused)
                .any(|d| d.eq_ignore_ascii_case(r))
        };
        self.envelope
            .rcpt_to
            .iter()
            .filter(|r| !done(r))
            .cloned()
            .collect()
    }
}

/// Timestamps as RFC 3339 text, so `cat queue/<id>.json` reads well.
mod rfc3339 {
    use std::time::SystemTime;

    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(t: &SystemTime, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&humantime::format_rfc3339_millis(*t).to_string())
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<SystemTime, D::Error> {
        let text = String::deserialize(d)?;
        humantime::parse_rfc3339_weak(&text).map_err(serde::de::Error::custom)
    }
}
