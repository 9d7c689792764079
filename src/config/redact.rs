//! What of the configuration may be shown: the one URL redaction
//! ([`without_userinfo`]) and the serializers `check-config` prints with.
//!
//! Invariant: a secret or the user-info of a URL never reaches a printed
//! config, a warning or an error text; when a value cannot be read as a
//! URL, more is cut rather than less.

use secrecy::SecretString;
use serde::Serializer;

pub(super) fn secret<S: Serializer>(
    secret: &Option<SecretString>,
    s: S,
) -> Result<S::Ok, S::Error> {
    match secret {
        Some(_) => s.serialize_some("[redacted]"),
        None => s.serialize_none(),
    }
}

pub(super) fn url<S: Serializer>(url: &str, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(&without_userinfo(url))
}

pub(super) fn opt_url<S: Serializer>(url: &Option<String>, s: S) -> Result<S::Ok, S::Error> {
    match url {
        Some(u) => s.serialize_some(&without_userinfo(u)),
        None => s.serialize_none(),
    }
}

/// `http://user:pass@host/x` → `http://[redacted]@host/x`. Works on the text,
/// so it also covers values that are not valid URLs (error messages).
pub fn without_userinfo(url: &str) -> String {
    if let Ok(parsed) = reqwest::Url::parse(url)
        && parsed.has_host()
    {
        if parsed.username().is_empty() && parsed.password().is_none() {
            return url.to_string();
        }
        return format!(
            "{}://[redacted]@{}",
            parsed.scheme(),
            &parsed[url::Position::BeforeHost..]
        );
    }
    // Not a URL we can read: cut at the last '@' anywhere, since a password
    // may itself hold '/', '?' or '#'; over-redacting a message is the safe side.
    let start = url.find("://").map_or(0, |i| i + 3);
    match url[start..].rfind('@') {
        Some(at) => format!("{}[redacted]{}", &url[..start], &url[start + at..]),
        None => url.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn userinfo_is_cut_from_url_text() {
        for (url, shown) in [
            ("https://api.postmarkapp.com", "https://api.postmarkapp.com"),
            (
                "http://u:p@h:8080/x?y=@z",
                "http://[redacted]@h:8080/x?y=@z",
            ),
            ("http://a@b@h/", "http://[redacted]@h/"),
            ("u:p@h", "[redacted]@h"),
            ("http://h/path@x", "http://h/path@x"),
            ("https://u:p/w@h.example/", "https://[redacted]@h.example/"),
            (
                "https://u:p?w#x@h.example:99999/",
                "https://[redacted]@h.example:99999/",
            ),
            ("http://user@h/", "http://[redacted]@h/"),
            ("not a url", "not a url"),
        ] {
            assert_eq!(without_userinfo(url), shown, "{url}");
        }
    }
}
