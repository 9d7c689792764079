//! Which leaves are the text and HTML bodies, as a mail reader shows them;
//! every other leaf is an attachment. A body candidate is a `text/plain` or
//! `text/html` leaf that is not `Content-Disposition: attachment` and has no
//! file name (unless it says `inline`). The first candidate of each kind
//! takes its slot, except that a text part can only be the text body of an
//! HTML body it is an alternative of (their nearest common multipart is
//! `multipart/alternative`): a text part after the HTML body in a
//! `multipart/mixed` is something the sender attached, not the plain
//! version of that HTML. An HTML part after a text body keeps the HTML slot,
//! since the API shows HTML first whichever order the sender used.

use super::{Disposition, Leaf, Mime};

/// Indexes into [`Mime::leaves`].
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Bodies {
    pub text: Option<usize>,
    pub html: Option<usize>,
    /// Every leaf that is neither body, in document order.
    pub attachments: Vec<usize>,
}

/// Classifies the leaves of `mime`.
pub fn choose(mime: &Mime) -> Bodies {
    let mut out = Bodies::default();
    for (i, leaf) in mime.leaves.iter().enumerate() {
        let candidate = leaf.disposition != Disposition::Attachment
            && (leaf.filename.is_none() || leaf.disposition == Disposition::Inline);
        match leaf.mime_type() {
            "text/plain"
                if candidate
                    && out.text.is_none()
                    && out
                        .html
                        .is_none_or(|h| alternatives(mime, &mime.leaves[h], leaf)) =>
            {
                out.text = Some(i)
            }
            "text/html" if candidate && out.html.is_none() => out.html = Some(i),
            _ => out.attachments.push(i),
        }
    }
    out
}

/// True when the nearest multipart enclosing both leaves is an alternative.
fn alternatives(mime: &Mime, a: &Leaf, b: &Leaf) -> bool {
    let common = a
        .parents
        .iter()
        .zip(&b.parents)
        .take_while(|(x, y)| x == y)
        .last()
        .map(|(x, _)| *x);
    common.is_some_and(|id| {
        mime.multiparts
            .get(id)
            .is_some_and(|m| m.subtype == "alternative")
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::message::mime::walk;

    fn classify(raw: &str) -> (Option<String>, Option<String>, Vec<String>) {
        let mime = walk(raw.as_bytes());
        let b = choose(&mime);
        let text = |i: Option<usize>| i.and_then(|i| mime.leaves[i].text());
        let attachments = b
            .attachments
            .iter()
            .map(|&i| String::from_utf8_lossy(&mime.leaves[i].data).into_owned())
            .collect();
        (text(b.text), text(b.html), attachments)
    }

    #[test]
    fn text_after_html_in_mixed_is_an_attachment() {
        let raw = "Content-Type: multipart/mixed; boundary=b\n\n--b\nContent-Type: text/html\n\n<p>h</p>\n--b\nContent-Type: text/plain\n\nnote\n--b--\n";
        assert_eq!(
            classify(raw),
            (None, Some("<p>h</p>".into()), vec!["note".into()])
        );
    }

    #[test]
    fn text_and_html_of_one_alternative_are_both_bodies() {
        let raw = "Content-Type: multipart/alternative; boundary=a\n\n--a\nContent-Type: text/html\n\n<p>h</p>\n--a\nContent-Type: text/plain\n\nh\n--a--\n";
        assert_eq!(
            classify(raw),
            (Some("h".into()), Some("<p>h</p>".into()), vec![])
        );
    }

    #[test]
    fn related_html_inside_alternative_pairs_with_the_text() {
        let raw = "Content-Type: multipart/alternative; boundary=a\n\n--a\n\nplain\n--a\nContent-Type: multipart/related; boundary=r\n\n--r\nContent-Type: text/html\n\n<img>\n--r\nContent-Type: image/png\nContent-ID: <i1>\n\nPNG\n--r--\n--a--\n";
        assert_eq!(
            classify(raw),
            (
                Some("plain".into()),
                Some("<img>".into()),
                vec!["PNG".into()]
            )
        );
    }

    #[test]
    fn a_second_text_part_or_a_named_text_part_is_an_attachment() {
        let raw = "Content-Type: multipart/mixed; boundary=b\n\n--b\n\nbody\n--b\nContent-Type: text/plain; name=a.txt\n\nfile\n--b\n\nfooter\n--b--\n";
        assert_eq!(
            classify(raw),
            (
                Some("body".into()),
                None,
                vec!["file".into(), "footer".into()]
            )
        );
    }

    #[test]
    fn attachment_disposition_never_takes_a_body_slot() {
        let raw = "Content-Type: text/plain\nContent-Disposition: attachment\n\nx";
        assert_eq!(classify(raw), (None, None, vec!["x".into()]));
    }
}
