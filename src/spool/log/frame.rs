//! The on-disk frame of one message in a log segment: a pure codec.
//!
//! ```text
//! 0..8    magic  "PRLOG1\r\n"
//! 8..12   record length (u32 LE)
//! 12..16  message length (u32 LE)
//! 16..20  CRC-32 of bytes 8..16, the id, the record and the message
//! 20..46  the entry id (a ULID)
//! 46..    the record (JSON, as `queue/<id>.json` holds it), then the message
//! ```
//!
//! Invariant: [`scan`] never trusts a length it has not bounded, never
//! panics on any input, and yields a frame only when its checksum matches;
//! anything else is a gap it steps over to the next magic.

use std::ops::Range;

use super::super::valid_id;

pub const MAGIC: &[u8; 8] = b"PRLOG1\r\n";
pub const HEADER: usize = 46;
/// Largest record a frame may carry (1000 recipients' states fit easily).
pub const MAX_RECORD: usize = 1 << 20;
/// Largest message a frame may carry: larger ones are spooled as files.
pub const MAX_MESSAGE: usize = super::super::commit::HOLD;

/// The header and record of a frame; the message follows it on disk.
pub fn head(id: &str, record: &[u8], message: &[u8]) -> Vec<u8> {
    debug_assert!(valid_id(id) && record.len() <= MAX_RECORD && message.len() <= MAX_MESSAGE);
    let lens = [
        (record.len() as u32).to_le_bytes(),
        (message.len() as u32).to_le_bytes(),
    ]
    .concat();
    let mut crc = crc32fast::Hasher::new();
    for part in [&lens[..], id.as_bytes(), record, message] {
        crc.update(part);
    }
    let mut out = Vec::with_capacity(HEADER + record.len());
    out.extend_from_slice(MAGIC);
    out.extend_from_slice(&lens);
    out.extend_from_slice(&crc.finalize().to_le_bytes());
    out.extend_from_slice(id.as_bytes());
    out.extend_from_slice(record);
    out
}

/// A whole, checked frame found in a segment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Frame {
    pub offset: u64,
    pub id: String,
    pub record: Range<usize>,
    pub message: Range<usize>,
}

impl Frame {
    /// Bytes from the frame's start to its end.
    pub fn len(&self) -> usize {
        self.message.end - self.offset as usize
    }
}

/// What a scan found, in file order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Found {
    Frame(Frame),
    /// Bytes that are not a whole frame. `tail` when nothing valid follows:
    /// a write a crash cut short (never acknowledged), not damage.
    Gap {
        offset: u64,
        len: usize,
        tail: bool,
    },
}

/// The frame starting at `at`, when one whole, checked frame does.
fn frame_at(bytes: &[u8], at: usize) -> Option<Frame> {
    let h = bytes.get(at..at.checked_add(HEADER)?)?;
    if &h[..8] != MAGIC {
        return None;
    }
    let word = |i: usize| u32::from_le_bytes([h[i], h[i + 1], h[i + 2], h[i + 3]]) as usize;
    let (record_len, message_len, crc) = (word(8), word(12), word(16) as u32);
    if record_len > MAX_RECORD || message_len > MAX_MESSAGE {
        return None;
    }
    let id = std::str::from_utf8(&h[20..46])
        .ok()
        .filter(|id| valid_id(id))?;
    let record = at + HEADER..at + HEADER + record_len;
    let message = record.end..record.end + message_len;
    let body = bytes.get(record.start..message.end)?;
    let mut sum = crc32fast::Hasher::new();
    sum.update(&h[8..16]);
    sum.update(&h[20..46]);
    sum.update(body);
    (sum.finalize() == crc).then(|| Frame {
        offset: at as u64,
        id: id.to_string(),
        record,
        message,
    })
}

/// Every frame and gap in a segment's bytes, in order.
pub fn scan(bytes: &[u8]) -> Vec<Found> {
    let mut out = Vec::new();
    let mut at = 0;
    while at < bytes.len() {
        if let Some(frame) = frame_at(bytes, at) {
            at += frame.len();
            out.push(Found::Frame(frame));
            continue;
        }
        // Step to the next magic that starts a whole frame.
        let mut next = at + 1;
        let resume = loop {
            match find(&bytes[next.min(bytes.len())..], MAGIC) {
                Some(i) if frame_at(bytes, next + i).is_some() => break Some(next + i),
                Some(i) => next += i + 1,
                None => break None,
            }
        };
        let end = resume.unwrap_or(bytes.len());
        out.push(Found::Gap {
            offset: at as u64,
            len: end - at,
            tail: resume.is_none(),
        });
        at = end;
    }
    out
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    memchr::memmem::find(hay, needle)
}

#[cfg(test)]
#[path = "frame_tests.rs"]
mod tests;
