//! The recursive descent behind [`super::walk`]: boundary splitting and leaf
//! decoding. Each level scans its own slice once, line by line; a line is a
//! delimiter only when it is `--boundary` followed by nothing but
//! whitespace (or `--boundary--` for the close), so boundaries sharing a
//! prefix (`b1`, `b1-alt`) never cut each other's parts.

use super::header::{self, Field};
use super::{Disposition, Leaf, Limits, Mime, Multipart, param, transfer};

pub(super) struct Walker {
    limits: Limits,
    mime: Mime,
}

impl Walker {
    pub(super) fn new(limits: Limits) -> Self {
        Self {
            limits,
            mime: Mime::default(),
        }
    }

    pub(super) fn run(mut self, raw: &[u8]) -> Mime {
        let (fields, body) = header::split(raw);
        self.entity(raw, &fields, &raw[body..], "text/plain", &[], 0);
        self.mime.headers = fields;
        self.mime
    }

    fn full(&mut self) -> bool {
        let full = self.mime.leaves.len() + self.mime.multiparts.len() >= self.limits.max_parts;
        self.mime.truncated |= full;
        full
    }

    fn entity(
        &mut self,
        whole: &[u8],
        fields: &[Field],
        body: &[u8],
        default: &str,
        parents: &[usize],
        depth: usize,
    ) {
        if self.full() {
            return;
        }
        let mut content_type = header::find(fields, "content-type")
            .map(|f| param::parse(&f.value))
            .unwrap_or_default();
        if !valid_type(&content_type.value) {
            content_type = param::Params {
                value: default.to_string(),
                params: content_type.params,
            };
        }
        if let Some(subtype) = content_type.value.strip_prefix("multipart/") {
            let boundary = content_type.get("boundary").unwrap_or_default().to_string();
            if depth >= self.limits.max_depth {
                self.mime.truncated = true;
                content_type = param::Params {
                    value: "message/rfc822".into(),
                    params: Vec::new(),
                };
                // The entity stays as written: a multipart has no transfer
                // encoding of its own to undo.
                return self.leaf(fields, content_type, whole, parents, false);
            }
            match split(body, boundary.as_bytes()) {
                Some(parts) => {
                    let id = self.mime.multiparts.len();
                    self.mime.multiparts.push(Multipart {
                        subtype: subtype.to_string(),
                        boundary: boundary.clone(),
                        parent: parents.last().copied(),
                    });
                    let mut inner = parents.to_vec();
                    inner.push(id);
                    let child_default = if subtype == "digest" {
                        "message/rfc822"
                    } else {
                        "text/plain"
                    };
                    for part in parts {
                        let (part_fields, part_body) = header::split(part);
                        self.entity(
                            part,
                            &part_fields,
                            &part[part_body..],
                            child_default,
                            &inner,
                            depth + 1,
                        );
                    }
                }
                // No delimiter at all: an empty multipart is nothing, text
                // in it is kept so the walk never loses what it saw.
                None if body.iter().all(u8::is_ascii_whitespace) => {}
                None => {
                    content_type.value = "text/plain".into();
                    self.leaf(fields, content_type, body, parents, true);
                }
            }
            return;
        }
        self.leaf(fields, content_type, body, parents, true);
    }

    fn leaf(
        &mut self,
        fields: &[Field],
        content_type: param::Params,
        body: &[u8],
        parents: &[usize],
        transfer_decode: bool,
    ) {
        let disposition_field =
            header::find(fields, "content-disposition").map(|f| param::parse(&f.value));
        let disposition = match disposition_field.as_ref().map(|d| d.value.as_str()) {
            None | Some("") => Disposition::None,
            Some("inline") => Disposition::Inline,
            Some(_) => Disposition::Attachment,
        };
        let transfer_encoding = header::find(fields, "content-transfer-encoding")
            .filter(|_| transfer_decode)
            .map_or(transfer::TransferEncoding::Identity, |f| {
                transfer::TransferEncoding::from_header(&f.raw_text())
            });
        let decoded = transfer::decode(transfer_encoding, body);
        let declared = [
            disposition_field.as_ref().and_then(|d| d.get("filename")),
            content_type.get("name"),
            decoded.uu_name.as_deref(),
        ];
        let mut names: Vec<String> = Vec::new();
        for name in declared.into_iter().flatten().map(header::one_line) {
            if !name.is_empty() && !names.contains(&name) {
                names.push(name);
            }
        }
        let filename = names.first().cloned();
        let content_id = header::find(fields, "content-id")
            .map(|f| f.raw_text().trim_matches(['<', '>', ' ']).to_string())
            .filter(|id| !id.is_empty());
        self.mime.leaves.push(Leaf {
            content_type,
            disposition,
            filename,
            names,
            content_id,
            transfer_encoding,
            data: decoded.data,
            parents: parents.to_vec(),
        });
    }
}

/// `type/subtype` with both halves non-empty.
fn valid_type(value: &str) -> bool {
    value
        .split_once('/')
        .is_some_and(|(t, s)| !t.is_empty() && !s.is_empty())
}

/// The parts of a multipart body between its delimiter lines. The line
/// break before a delimiter belongs to the delimiter. A part still open at
/// the end of the body (no close delimiter) runs to the end. `None` when no
/// delimiter line appears at all.
pub(super) fn split<'a>(body: &'a [u8], boundary: &[u8]) -> Option<Vec<&'a [u8]>> {
    if boundary.is_empty() {
        return None;
    }
    let mut parts = Vec::new();
    let mut open: Option<usize> = None;
    let mut found = false;
    let mut pos = 0;
    while pos < body.len() {
        let end = body[pos..]
            .iter()
            .position(|&b| b == b'\n')
            .map_or(body.len(), |n| pos + n + 1);
        let line = &body[pos..end];
        if let Some(close) = delimiter(line, boundary) {
            found = true;
            if let Some(start) = open.take() {
                parts.push(&body[start..before_line_break(body, start, pos)]);
            }
            if close {
                return Some(parts);
            }
            open = Some(end);
        }
        pos = end;
    }
    if let Some(start) = open {
        parts.push(&body[start.min(body.len())..]);
    }
    found.then_some(parts)
}

/// `Some(is_close)` when `line` is a delimiter line of `boundary`.
fn delimiter(line: &[u8], boundary: &[u8]) -> Option<bool> {
    let rest = line.strip_prefix(b"--")?.strip_prefix(boundary)?;
    if rest.starts_with(b"--") {
        return Some(true);
    }
    rest.iter().all(u8::is_ascii_whitespace).then_some(false)
}

/// `at` moved back over one line break, but not before `start`.
fn before_line_break(body: &[u8], start: usize, at: usize) -> usize {
    let mut end = at;
    if end > start && body[end - 1] == b'\n' {
        end -= 1;
    }
    if end > start && body[end - 1] == b'\r' {
        end -= 1;
    }
    end
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parts(body: &str, boundary: &str) -> Option<Vec<String>> {
        split(body.as_bytes(), boundary.as_bytes()).map(|p| {
            p.iter()
                .map(|s| String::from_utf8_lossy(s).into_owned())
                .collect()
        })
    }

    #[test]
    fn boundaries_sharing_a_prefix_do_not_split_each_other() {
        let body = "--b1\r\nA\r\n--b1-alt\r\nB\r\n--b1-alt--\r\n--b1\r\nC\r\n--b1--\r\n";
        assert_eq!(
            parts(body, "b1").unwrap(),
            ["A\r\n--b1-alt\r\nB\r\n--b1-alt--", "C"]
        );
    }

    #[test]
    fn an_unterminated_last_part_runs_to_the_end() {
        assert_eq!(parts("pre\n--b\nA\n--b\nB\n", "b").unwrap(), ["A", "B\n"]);
    }

    #[test]
    fn empty_parts_stay_empty() {
        assert_eq!(parts("--b\r\n--b\r\nX\r\n--b--", "b").unwrap(), ["", "X"]);
    }

    #[test]
    fn delimiter_mid_line_or_with_trailing_text_is_content() {
        let body = "--b\nsee --b here\n--bx\n--b \t\nnext\n--b--junk";
        assert_eq!(parts(body, "b").unwrap(), ["see --b here\n--bx", "next"]);
    }

    #[test]
    fn every_declared_name_is_listed_decoded_for_type_checks() {
        let raw = b"Content-Type: application/octet-stream; name*=utf-8''setup.%45XE\r\nContent-Disposition: attachment; filename=\r\n \"invoice.pdf\"\r\n\r\nMZ";
        let mime = crate::message::mime::walk(raw);
        let leaf = &mime.leaves[0];
        assert_eq!(leaf.filename.as_deref(), Some("invoice.pdf"));
        assert_eq!(leaf.names, ["invoice.pdf", "setup.EXE"]);
    }

    #[test]
    fn content_type_with_keeps_only_the_asked_parameters_quoted_when_needed() {
        let raw = b"Content-Type: Text/Calendar; method=REQUEST; charset=\"utf-8\"; name=\"a b.ics\"\r\n\r\nx";
        let leaf = &crate::message::mime::walk(raw).leaves[0];
        assert_eq!(
            leaf.content_type_with(&["charset", "method"]),
            "text/calendar; charset=utf-8; method=REQUEST"
        );
        assert_eq!(
            leaf.content_type_with(&["name"]),
            "text/calendar; name=\"a b.ics\""
        );
    }

    #[test]
    fn a_multipart_without_delimiters_keeps_its_text_and_an_empty_one_vanishes() {
        let kept = crate::message::mime::walk(
            b"Content-Type: multipart/mixed; boundary=zz\r\n\r\nwrong boundary text\r\n",
        );
        assert_eq!(kept.leaves.len(), 1);
        assert_eq!(kept.leaves[0].mime_type(), "text/plain");
        assert_eq!(kept.leaves[0].data, b"wrong boundary text\r\n");
        let empty =
            crate::message::mime::walk(b"Content-Type: multipart/mixed; boundary=zz\r\n\r\n\r\n");
        assert!(empty.leaves.is_empty());
    }

    #[test]
    fn no_delimiter_means_no_parts() {
        assert_eq!(parts("just text", "b"), None);
        assert_eq!(parts("--b\n", ""), None);
    }
}
