//! One spooled message's record: `<id>.json` ([`Meta`]: envelope, delivery
//! state per recipient, credential) beside `<id>.eml` (the raw message,
//! CRLF). The JSON is the commit marker: an `.eml` without it was never
//! acknowledged.
//!
//! Invariant: a record is only ever rewritten by a binary that understands
//! its version. [`decode`] converts older versions and reports newer ones as
//! [`Decoded::Newer`] so the caller leaves them untouched.

use std::time::SystemTime;

use serde::{Deserialize, Serialize};

use crate::message::Envelope;
use crate::message::address::{key, same};

/// The record version this binary writes.
pub const META_VERSION: u32 = 2;

/// Where a recipient stands with the API.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "state", rename_all = "lowercase")]
pub enum RecipientState {
    /// Not answered yet: the next attempt sends to it.
    Pending,
    /// The API took it (with the API's message id when it gave one): never resent.
    Accepted { api_id: Option<String> },
    /// The API refused it for good: never resent; the message ends in failed/.
    Refused {
        code: Option<String>,
        reason: String,
    },
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
struct Recipient {
    address: String,
    #[serde(flatten)]
    state: RecipientState,
}

/// Which API credential delivers the message, fixed when it was accepted.
/// For `Global` and `User` only the choice is kept (the secret is read from
/// the configuration when sending); a passthrough token is kept itself, in
/// the record (mode 0600), and never shown by `Debug`.
#[derive(Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Credential {
    /// The backend's configured token.
    #[default]
    Global,
    /// The `[[users]]` account's own token (the global one when it has none).
    User(String),
    /// The token the client gave as its AUTH password (`smtp.auth_passthrough`).
    Passthrough(String),
}

impl Credential {
    /// How logs and `/readyz` name it: never the secret. Passthrough
    /// tokens are told apart by a short fingerprint (32 bits of a SipHash
    /// of the token), which does not reveal it.
    pub fn label(&self) -> String {
        match self {
            Credential::Global => "global".into(),
            Credential::User(name) => format!("user {name}"),
            Credential::Passthrough(token) => {
                use std::hash::{Hash, Hasher};
                let mut h = std::collections::hash_map::DefaultHasher::new();
                token.hash(&mut h);
                format!("passthrough {:08x}", h.finish() as u32)
            }
        }
    }
}

impl std::fmt::Debug for Credential {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Credential::Global => f.write_str("Global"),
            Credential::User(name) => f.debug_tuple("User").field(name).finish(),
            Credential::Passthrough(_) => f.write_str("Passthrough([redacted])"),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Meta {
    pub version: u32,
    /// Always the entry's file name: whatever the JSON says is overwritten on load.
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
    /// The last attempt hit a configuration fault (rejected credential, ...):
    /// the message is held, and due at once after a restart.
    #[serde(default)]
    pub held: bool,
    /// Set when the message was dead-lettered.
    #[serde(default)]
    pub failure: Option<Failure>,
    #[serde(default)]
    pub credential: Credential,
    /// One per envelope recipient, in envelope order; read through the methods.
    #[serde(default)]
    recipients: Vec<Recipient>,
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
    /// A fresh record delivered with the global credential.
    pub fn new(id: String, envelope: Envelope, size: u64, now: SystemTime) -> Meta {
        Meta::with_credential(id, envelope, size, now, Credential::Global)
    }

    pub fn with_credential(
        id: String,
        envelope: Envelope,
        size: u64,
        now: SystemTime,
        credential: Credential,
    ) -> Meta {
        let recipients = envelope
            .rcpt_to
            .iter()
            .map(|r| Recipient {
                address: r.clone(),
                state: RecipientState::Pending,
            })
            .collect();
        Meta {
            version: META_VERSION,
            id,
            envelope,
            size,
            received_at: now,
            attempts: 0,
            next_attempt_at: now,
            last_error: None,
            held: false,
            failure: None,
            credential,
            recipients,
        }
    }

    /// The state of envelope recipient `rcpt` (pending when never recorded).
    pub fn state_of(&self, rcpt: &str) -> &RecipientState {
        self.recipients
            .iter()
            .find(|r| same(&r.address, rcpt))
            .map(|r| &r.state)
            .unwrap_or(&RecipientState::Pending)
    }

    /// Every envelope recipient with its state, in envelope order (pending
    /// when never recorded). One pass over each list: a message to
    /// thousands of recipients costs linear time, not quadratic.
    pub fn envelope_states(&self) -> Vec<(&str, &RecipientState)> {
        // One recipient recorded as the envelope names it (the common case):
        // its record is its state, no keys needed.
        if let ([rcpt], [r]) = (&self.envelope.rcpt_to[..], &self.recipients[..])
            && r.address == *rcpt
        {
            return vec![(rcpt.as_str(), &r.state)];
        }
        let recorded: std::collections::HashMap<String, &RecipientState> = self
            .recipients
            .iter()
            .rev() // the first record of an address wins, as in `state_of`
            .map(|r| (key(&r.address), &r.state))
            .collect();
        self.envelope
            .rcpt_to
            .iter()
            .map(|r| {
                let state = recorded
                    .get(&key(r))
                    .copied()
                    .unwrap_or(&RecipientState::Pending);
                (r.as_str(), state)
            })
            .collect()
    }

    /// Envelope recipients the API has neither accepted nor refused yet, in envelope order.
    pub fn pending_recipients(&self) -> Vec<String> {
        self.envelope_states()
            .into_iter()
            .filter(|(_, s)| **s == RecipientState::Pending)
            .map(|(r, _)| r.to_string())
            .collect()
    }

    pub fn record_accepted(&mut self, rcpts: &[String], api_id: Option<&str>) {
        self.record(
            rcpts,
            RecipientState::Accepted {
                api_id: api_id.map(str::to_string),
            },
        );
    }

    pub fn record_refused(&mut self, rcpts: &[String], code: Option<&str>, reason: &str) {
        self.record(
            rcpts,
            RecipientState::Refused {
                code: code.map(str::to_string),
                reason: reason.to_string(),
            },
        );
    }

    pub fn accepted_count(&self) -> usize {
        self.count(|s| matches!(s, RecipientState::Accepted { .. }))
    }

    pub fn refused_count(&self) -> usize {
        self.count(|s| matches!(s, RecipientState::Refused { .. }))
    }

    /// (code, reason) of the first refused recipient in envelope order.
    pub fn first_refusal(&self) -> Option<(Option<&str>, &str)> {
        self.envelope_states()
            .into_iter()
            .find_map(|(_, s)| match s {
                RecipientState::Refused { code, reason } => {
                    Some((code.as_deref(), reason.as_str()))
                }
                _ => None,
            })
    }

    /// Refused recipients become pending again (an operator's requeue);
    /// accepted ones stay accepted and are never resent.
    pub fn reset_refused(&mut self) {
        for r in &mut self.recipients {
            if matches!(r.state, RecipientState::Refused { .. }) {
                r.state = RecipientState::Pending;
            }
        }
    }

    fn count(&self, pick: impl Fn(&RecipientState) -> bool) -> usize {
        self.envelope_states()
            .into_iter()
            .filter(|(_, s)| pick(s))
            .count()
    }

    fn record(&mut self, rcpts: &[String], state: RecipientState) {
        let keys: std::collections::HashSet<String> = rcpts.iter().map(|r| key(r)).collect();
        let mut seen = std::collections::HashSet::new();
        for r in &mut self.recipients {
            let k = key(&r.address);
            if keys.contains(&k) {
                r.state = state.clone();
                seen.insert(k);
            }
        }
        for rcpt in rcpts {
            if seen.insert(key(rcpt)) {
                self.recipients.push(Recipient {
                    address: rcpt.clone(),
                    state: state.clone(),
                });
            }
        }
    }
}

/// What a record on disk turned out to be.
#[derive(Debug)]
pub enum Decoded {
    Current(Box<Meta>),
    /// Written by a newer postrelay: leave it alone.
    Newer(u32),
}

/// Parses a record of any version this binary knows, upgrading older ones.
/// The id always comes from `id` (the validated file name), never from the JSON.
pub fn decode(id: &str, bytes: &[u8]) -> Result<Decoded, String> {
    #[derive(Deserialize)]
    struct Version {
        version: u32,
    }
    let v: Version = serde_json::from_slice(bytes).map_err(|e| e.to_string())?;
    let mut meta = match v.version {
        1 => serde_json::from_slice::<v1::Meta>(bytes)
            .map_err(|e| e.to_string())?
            .upgrade(),
        META_VERSION => serde_json::from_slice::<Meta>(bytes).map_err(|e| e.to_string())?,
        n if n > META_VERSION => return Ok(Decoded::Newer(n)),
        n => return Err(format!("unknown record version {n}")),
    };
    meta.id = id.to_string();
    Ok(Decoded::Current(Box::new(meta)))
}

/// The record as it is written: always the current version.
pub fn encode(meta: &Meta) -> Vec<u8> {
    let mut v = serde_json::to_vec_pretty(meta).expect("meta serializes");
    v.push(b'\n');
    v
}

/// Version 1: lists of delivered and refused recipients, one refusal for all.
#[path = "entry_v1.rs"]
mod v1;

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

#[cfg(test)]
#[path = "entry_tests.rs"]
mod tests;
