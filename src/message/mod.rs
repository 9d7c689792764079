//! What an accepted message is: its SMTP envelope. The raw MIME bytes travel
//! beside it untouched; `parse` turns them into decoded parts for mapping.

pub mod address;
pub mod crlf;
pub mod local;
pub mod mime;
pub mod parse;

/// The SMTP envelope. `mail_from` is "" for the null sender (`MAIL FROM:<>`).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Envelope {
    pub mail_from: String,
    pub rcpt_to: Vec<String>,
}
