//! What Postmark accepts for the values the `[postmark]` send defaults and
//! the `X-PM-*` headers share: track-link modes and the tag and metadata
//! limits, and the batch limits. Config validates the defaults with them at load, the mapping
//! validates headers with them, so both hold one definition.

use serde::Serialize;

pub const MAX_TAG_CHARS: usize = 1000;
pub const MAX_METADATA_FIELDS: usize = 10;
pub const MAX_METADATA_KEY_CHARS: usize = 20;
pub const MAX_METADATA_VALUE_CHARS: usize = 80;
/// Postmark takes at most this many messages per `POST /email/batch`.
pub const MAX_BATCH_SIZE: usize = 500;
/// Postmark takes at most this many bytes of JSON per `POST /email/batch`.
pub const MAX_BATCH_BYTES: usize = 50 * 1024 * 1024;

/// `X-PM-TrackLinks` values, serialized in Postmark's spelling.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub enum TrackLinks {
    None,
    HtmlAndText,
    HtmlOnly,
    TextOnly,
}

impl TrackLinks {
    /// Postmark's spelling, any ASCII case.
    pub fn parse(value: &str) -> Option<TrackLinks> {
        match value.trim().to_ascii_lowercase().as_str() {
            "none" => Some(TrackLinks::None),
            "htmlandtext" => Some(TrackLinks::HtmlAndText),
            "htmlonly" => Some(TrackLinks::HtmlOnly),
            "textonly" => Some(TrackLinks::TextOnly),
            _ => None,
        }
    }
}
