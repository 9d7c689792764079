//! The MIME structure of a message, walked without I/O: every leaf part with
//! its decoded type, disposition, file name, content id and bytes, plus the
//! multipart parents above it. Owns these invariants: a part ends only at a
//! delimiter line of its own parent's boundary, so an unterminated, empty or
//! header-only part never swallows a sibling; nothing the walk finds is
//! dropped (a multipart with no delimiter but some text becomes a text leaf,
//! a subtree past the depth limit stays whole as `message/rfc822`);
//! `message/rfc822` parts are kept whole, not walked into. The walk is total
//! (any byte string, never a panic), linear per nesting level, and bounded by
//! [`Limits`]; [`Mime::truncated`] says when a limit cut it short.
//!
//! [`walk`] builds the tree, [`bodies::choose`] picks the text and HTML
//! bodies the way a mail reader shows them, [`words::decode`] decodes a
//! top-level header value (RFC 2047, any `encoding_rs` charset).

pub mod bodies;
pub mod charset;
pub mod header;
pub mod param;
pub mod transfer;
mod walk;
pub mod words;

#[cfg(test)]
mod fixture_tests;
#[cfg(test)]
mod roundtrip_tests;

pub use bodies::{Bodies, choose};
pub use header::Field;
pub use param::Params;
pub use transfer::TransferEncoding;

/// How far the walk goes before it stops descending or adding parts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Multipart nesting depth below the top-level entity.
    pub max_depth: usize,
    /// Leaf and multipart nodes in total.
    pub max_parts: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_depth: 32,
            max_parts: 2000,
        }
    }
}

/// A walked message.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Mime {
    /// Top-level header fields in message order, unfolded, undecoded.
    pub headers: Vec<Field>,
    /// Leaf parts in document order.
    pub leaves: Vec<Leaf>,
    /// Multipart nodes; [`Leaf::parents`] and [`Multipart::parent`] index here.
    pub multiparts: Vec<Multipart>,
    /// True when a depth or part-count limit stopped the walk somewhere.
    pub truncated: bool,
}

impl Mime {
    /// True when the part-count limit (not only the depth limit) stopped the
    /// walk: parts after that point were not walked at all.
    pub fn parts_over_limit(&self, limits: Limits) -> bool {
        self.truncated && self.leaves.len() + self.multiparts.len() >= limits.max_parts
    }

    /// The first top-level field named `name`, decoded to one line of text.
    pub fn header_text(&self, name: &str) -> Option<String> {
        header::find(&self.headers, name).map(Field::text)
    }
}

/// A multipart node: its subtype (`mixed`, `alternative`, `related`, ...)
/// and the boundary its delimiter lines use.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Multipart {
    pub subtype: String,
    pub boundary: String,
    pub parent: Option<usize>,
}

/// `Content-Disposition` as a mail reader reads it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Disposition {
    /// No Content-Disposition field.
    None,
    Inline,
    /// `attachment`, or any value RFC 2183 says to treat as one.
    Attachment,
}

/// One leaf part, decoded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Leaf {
    /// Lower-cased `type/subtype` and decoded parameters; the default
    /// (`text/plain`, or `message/rfc822` inside a digest) when absent.
    pub content_type: Params,
    pub disposition: Disposition,
    /// `filename*` / `filename` / `name*` / `name` (first present), RFC 2231
    /// and 2047 decoded, on one line; for x-uuencode the `begin` line's name
    /// as a last resort. `None` when empty.
    pub filename: Option<String>,
    /// Every distinct name the part declares, decoded: the disposition's
    /// `filename`, the type's `name`, the x-uuencode `begin` name. A check
    /// on file types must look at all of them, not only the first.
    pub names: Vec<String>,
    /// Content-ID without angle brackets.
    pub content_id: Option<String>,
    pub transfer_encoding: TransferEncoding,
    /// The bytes with the transfer encoding removed (charset untouched).
    pub data: Vec<u8>,
    /// Enclosing multipart nodes, outermost first.
    pub parents: Vec<usize>,
}

impl Leaf {
    /// For a `text/*` leaf: `data` decoded to UTF-8 with the declared
    /// charset (Windows-1252 for undeclared non-UTF-8 bytes).
    pub fn text(&self) -> Option<String> {
        self.is_text()
            .then(|| charset::decode(self.content_type.get("charset"), &self.data))
    }

    /// [`text`](Self::text), taking the leaf: UTF-8 bytes become the text
    /// without a copy (a body is decoded once, when chosen, not at parse).
    pub fn into_text(self) -> Option<String> {
        let label = self.content_type.get("charset").map(str::to_string);
        self.is_text()
            .then(|| charset::decode_owned(label.as_deref(), self.data))
    }

    fn is_text(&self) -> bool {
        self.content_type.value.starts_with("text/")
    }

    /// Lower-cased `type/subtype`.
    pub fn mime_type(&self) -> &str {
        &self.content_type.value
    }

    /// `type/subtype` followed by those of `params` the part declares, as
    /// `; name=value` (quoted when needed), e.g. for an attachment's type.
    pub fn content_type_with(&self, params: &[&str]) -> String {
        let mut out = self.content_type.value.clone();
        for name in params {
            if let Some(value) = self.content_type.get(name) {
                let plain = !value.is_empty()
                    && value
                        .chars()
                        .all(|c| c.is_ascii_alphanumeric() || "-_.+!#$&^`{|}~'".contains(c));
                if plain {
                    out.push_str(&format!("; {name}={value}"));
                } else {
                    let quoted = value.replace('\\', "\\\\").replace('"', "\\\"");
                    out.push_str(&format!("; {name}=\"{quoted}\""));
                }
            }
        }
        out
    }
}

/// Walks `raw` with the default [`Limits`].
pub fn walk(raw: &[u8]) -> Mime {
    walk_with(raw, Limits::default())
}

/// Walks `raw` within `limits`.
pub fn walk_with(raw: &[u8], limits: Limits) -> Mime {
    walk::Walker::new(limits).run(raw)
}
