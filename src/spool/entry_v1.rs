//! Version 1 of the spool record: lists of delivered and refused
//! recipients and one refusal for all; read only, upgraded on load.

use std::time::SystemTime;

use serde::Deserialize;

use super::{Credential, Failure, RecipientState, rfc3339};
use crate::message::Envelope;

#[derive(Deserialize)]
pub struct Meta {
    envelope: Envelope,
    size: u64,
    #[serde(with = "rfc3339")]
    received_at: SystemTime,
    attempts: u32,
    #[serde(with = "rfc3339")]
    next_attempt_at: SystemTime,
    #[serde(default)]
    last_error: Option<String>,
    #[serde(default)]
    delivered: Vec<String>,
    #[serde(default)]
    refused: Vec<String>,
    #[serde(default)]
    refusal: Option<Failure>,
    #[serde(default)]
    held: bool,
    #[serde(default)]
    failure: Option<Failure>,
}

impl Meta {
    pub fn upgrade(self) -> super::Meta {
        let mut m = super::Meta::new(String::new(), self.envelope, self.size, self.received_at);
        m.attempts = self.attempts;
        m.next_attempt_at = self.next_attempt_at;
        m.last_error = self.last_error;
        m.held = self.held;
        m.failure = self.failure;
        m.credential = Credential::Global;
        m.record(&self.delivered, RecipientState::Accepted { api_id: None });
        let (code, reason) = match self.refusal {
            Some(f) => (f.code, f.reason),
            None => (None, "refused by the API".to_string()),
        };
        m.record(&self.refused, RecipientState::Refused { code, reason });
        m
    }
}
