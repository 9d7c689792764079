//! Postmark's `X-PM-*` control headers: tag, stream, metadata, open and
//! link tracking, KeepID. Read once per message, merged with the configured
//! [`SendDefaults`] (a header wins; metadata per key), checked against
//! Postmark's limits, and turned into the fields of the request.

use std::collections::BTreeMap;

use super::TrackLinks;
use crate::mapping::{MappingError, MappingOptions};
use crate::message::parse::ParsedMessage;

/// What the `X-PM-*` control headers asked for.
#[derive(Debug, Default)]
pub(super) struct Controls {
    pub(super) tag: Option<String>,
    pub(super) stream: Option<String>,
    pub(super) metadata: Vec<(String, String)>,
    pub(super) track_opens: Option<bool>,
    pub(super) track_links: Option<TrackLinks>,
    pub(super) keep_id: bool,
}

/// The `[postmark]` send defaults: used when the message has no header
/// for them. `None` (and an empty map) leaves the Postmark server's own
/// setting in force.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SendDefaults {
    pub tag: Option<String>,
    pub track_opens: Option<bool>,
    pub track_links: Option<TrackLinks>,
    pub metadata: BTreeMap<String, String>,
}

/// Postmark's limits on a tag and on metadata.
pub use crate::config::postmark::{
    MAX_METADATA_FIELDS, MAX_METADATA_KEY_CHARS, MAX_METADATA_VALUE_CHARS, MAX_TAG_CHARS,
};
const METADATA_PREFIX: &str = "x-pm-metadata-";

/// Reads every `X-PM-*` header. For single-valued controls other than the
/// tag, the first occurrence wins. A header Postmark does not know is an
/// unsupported feature: refused, or dropped with a warning under
/// `ignore_unsupported`.
pub(super) fn read_controls(
    parsed: &ParsedMessage,
    opts: &MappingOptions,
    defaults: &SendDefaults,
    warnings: &mut Vec<String>,
) -> Result<Controls, MappingError> {
    let mut c = Controls::default();
    let mut tags = Vec::new();
    let mut unknown = Vec::new();
    for h in &parsed.headers {
        let lower = h.name.to_ascii_lowercase();
        let value = h.value.as_str();
        match lower.as_str() {
            "x-pm-tag" => tags.push(value.to_string()),
            "x-pm-message-stream" if c.stream.is_none() && !value.is_empty() => {
                c.stream = Some(value.into())
            }
            "x-pm-trackopens" if c.track_opens.is_none() => {
                c.track_opens = Some(track_opens(value)?)
            }
            "x-pm-tracklinks" if c.track_links.is_none() => {
                c.track_links = Some(track_links(value)?)
            }
            "x-pm-keepid" => c.keep_id |= value.eq_ignore_ascii_case("true"),
            _ if lower.starts_with(METADATA_PREFIX) => {
                let key = &h.name[METADATA_PREFIX.len()..];
                c.metadata.push((key.to_string(), value.to_string()));
            }
            "x-pm-message-stream" | "x-pm-trackopens" | "x-pm-tracklinks" => {
                warnings.push(format!(
                    "repeated {} header ignored: the first one is used",
                    h.name
                ));
            }
            _ if lower.starts_with("x-pm-") => unknown.push(h.name.clone()),
            _ => {}
        }
    }
    if let Some(first) = unknown.first() {
        if !opts.ignore_unsupported {
            return Err(MappingError::Unsupported(format!(
                "unknown Postmark header {first}"
            )));
        }
        for name in &unknown {
            warnings.push(format!(
                "unknown Postmark header {name} dropped (ignore_unsupported_features = true)"
            ));
        }
    }
    if tags.len() > 1 {
        if !opts.ignore_unsupported {
            return Err(MappingError::Unsupported(
                "multiple X-PM-Tag headers".into(),
            ));
        }
        warnings.push(format!(
            "Postmark takes one tag: kept X-PM-Tag \"{}\", dropped {:?} (ignore_unsupported_features = true)",
            tags[0],
            &tags[1..]
        ));
    }
    let header_tag = !tags.is_empty();
    c.tag = tags.into_iter().next().filter(|t| !t.is_empty());
    if !header_tag {
        c.tag = defaults.tag.clone().filter(|t| !t.is_empty());
    }
    c.track_opens = c.track_opens.or(defaults.track_opens);
    c.track_links = c.track_links.or(defaults.track_links);
    let from_headers = c.metadata.len();
    for (key, value) in &defaults.metadata {
        if !c.metadata[..from_headers]
            .iter()
            .any(|(k, _)| k.eq_ignore_ascii_case(key))
        {
            c.metadata.push((key.clone(), value.clone()));
        }
    }
    let tag_chars = c.tag.as_deref().map_or(0, |t| t.chars().count());
    if tag_chars > MAX_TAG_CHARS {
        return Err(MappingError::Limit(format!(
            "X-PM-Tag is {tag_chars} characters, Postmark allows at most {MAX_TAG_CHARS}"
        )));
    }
    check_metadata(&c.metadata, from_headers)?;
    Ok(c)
}

fn track_opens(value: &str) -> Result<bool, MappingError> {
    match value.to_ascii_lowercase().as_str() {
        "true" => Ok(true),
        "false" => Ok(false),
        _ => Err(MappingError::Limit(format!(
            "X-PM-TrackOpens value \"{value}\" is not true or false"
        ))),
    }
}

fn track_links(value: &str) -> Result<TrackLinks, MappingError> {
    TrackLinks::parse(value).ok_or_else(|| {
        MappingError::Limit(format!(
            "X-PM-TrackLinks value \"{value}\" is not one of None, HtmlAndText, HtmlOnly, TextOnly"
        ))
    })
}

/// Postmark's metadata rules: at most 10 fields, keys up to 20 characters,
/// values up to 80, no two keys equal ignoring case.
/// The first `from_headers` fields come from headers, the rest from the
/// configured defaults.
fn check_metadata(fields: &[(String, String)], from_headers: usize) -> Result<(), MappingError> {
    let limit = |text: String| Err(MappingError::Limit(text));
    if fields.len() > MAX_METADATA_FIELDS {
        let n = fields.len();
        return limit(if from_headers == n {
            format!("{n} X-PM-Metadata fields, Postmark allows at most {MAX_METADATA_FIELDS}")
        } else {
            format!(
                "{n} metadata fields ({from_headers} from X-PM-Metadata-* headers, {} from [postmark] metadata), Postmark allows at most {MAX_METADATA_FIELDS}",
                n - from_headers
            )
        });
    }
    let mut seen: Vec<&str> = Vec::new();
    for (key, value) in fields {
        let key_chars = key.chars().count();
        if key_chars == 0 {
            return limit("X-PM-Metadata- header without a key".into());
        }
        if key_chars > MAX_METADATA_KEY_CHARS {
            return limit(format!(
                "metadata key \"{key}\" is {key_chars} characters, Postmark allows at most {MAX_METADATA_KEY_CHARS}"
            ));
        }
        let value_chars = value.chars().count();
        if value_chars > MAX_METADATA_VALUE_CHARS {
            return limit(format!(
                "metadata value for \"{key}\" is {value_chars} characters, Postmark allows at most {MAX_METADATA_VALUE_CHARS}"
            ));
        }
        if let Some(other) = seen.iter().find(|k| k.eq_ignore_ascii_case(key)) {
            return limit(format!(
                "metadata keys \"{other}\" and \"{key}\" are the same ignoring case"
            ));
        }
        seen.push(key);
    }
    Ok(())
}
