//! Tests of the shared HTTP plumbing: Retry-After, text hygiene, URLs.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use reqwest::header::{HeaderMap, HeaderValue, RETRY_AFTER};
use secrecy::SecretString;

use super::*;

/// 2026-11-22T10:00:00Z, the instant "Sun, 22 Nov 2026 10:00:00 GMT" names.
fn now() -> SystemTime {
    UNIX_EPOCH + Duration::from_secs(1_795_341_600)
}

#[test]
fn retry_after_reads_delta_seconds_and_http_dates_and_clamps_to_an_hour() {
    let cases: &[(&str, Option<u64>)] = &[
        ("0", Some(0)),
        ("7", Some(7)),
        (" 120 ", Some(120)),
        ("3600", Some(3600)),
        ("86400", Some(3600)),
        ("99999999999999999999999", Some(3600)),
        ("Sun, 22 Nov 2026 10:00:30 GMT", Some(30)),
        ("Sun, 22 Nov 2026 12:00:00 GMT", Some(3600)),
        ("Sun, 22 Nov 2026 09:59:00 GMT", Some(0)),
        ("", None),
        ("-5", None),
        ("1.5", None),
        ("soon", None),
    ];
    for (value, expected) in cases {
        assert_eq!(
            parse_retry_after(value, now()),
            expected.map(Duration::from_secs),
            "Retry-After: {value:?}"
        );
    }
}

#[test]
fn retry_after_is_read_from_response_headers() {
    let mut headers = HeaderMap::new();
    assert_eq!(retry_after(&headers), None);
    headers.insert(RETRY_AFTER, HeaderValue::from_static("42"));
    assert_eq!(retry_after(&headers), Some(Duration::from_secs(42)));
}

#[test]
fn api_text_loses_line_breaks_and_control_characters() {
    assert_eq!(
        clean_api_text("line one\r\nline\ttwo\u{1b}[31m  end \n"),
        "line one line two [31m end"
    );
}

#[test]
fn long_api_text_is_cut_with_an_ellipsis() {
    let long = "x".repeat(5000);
    let cleaned = clean_api_text(&long);
    assert_eq!(cleaned.chars().count(), MAX_API_TEXT + 1);
    assert!(cleaned.ends_with('…'));
    assert_eq!(
        clean_api_text(&"y".repeat(MAX_API_TEXT)),
        "y".repeat(MAX_API_TEXT)
    );
}

#[test]
fn body_snippet_names_an_empty_body() {
    assert_eq!(body_snippet(b""), "empty body");
    assert_eq!(
        body_snippet(b"<h1>Bad Gateway</h1>\n"),
        "body: <h1>Bad Gateway</h1>"
    );
}

#[test]
fn redact_removes_an_echoed_secret_from_every_text() {
    let secret = SecretString::from("tok-12345");
    let outcome = Outcome::ConfigFault {
        code: Some("10".into()),
        reason: "token tok-12345 is not valid".into(),
    };
    assert_eq!(
        redact(outcome, &secret),
        Outcome::ConfigFault {
            code: Some("10".into()),
            reason: "token [redacted] is not valid".into(),
        }
    );
    let untouched = Outcome::Transient {
        reason: "HTTP 503".into(),
        retry_after: Some(Duration::from_secs(1)),
        throttled: false,
    };
    assert_eq!(redact(untouched.clone(), &secret), untouched);
    assert_eq!(
        redact(untouched.clone(), &SecretString::from("")),
        untouched
    );
    // A one-letter test token would garble every word that holds its letter.
    let garbled = Outcome::ConfigFault {
        code: None,
        reason: "Postmark says the token is not valid".into(),
    };
    assert_eq!(redact(garbled.clone(), &SecretString::from("t")), garbled);
}

#[test]
fn endpoint_url_joins_without_a_double_slash_and_keeps_a_path_prefix() {
    let url = |base: &str| endpoint_url(base, "/email", "postmark.api_url").map(|u| u.to_string());
    assert_eq!(
        url("https://api.example.com"),
        Ok("https://api.example.com/email".into())
    );
    assert_eq!(
        url("https://api.example.com/"),
        Ok("https://api.example.com/email".into())
    );
    assert_eq!(
        url("https://api.example.com//"),
        Ok("https://api.example.com/email".into())
    );
    assert_eq!(
        url("http://127.0.0.1:8080/pm/"),
        Ok("http://127.0.0.1:8080/pm/email".into())
    );
}

#[test]
fn unusable_api_url_is_reported_by_key_without_repeating_the_value() {
    let err = endpoint_url("not a url s3cret", "/email", "postmark.api_url").unwrap_err();
    assert!(
        err.starts_with("postmark.api_url is not a valid URL"),
        "{err}"
    );
    assert!(!err.contains("s3cret"), "{err}");
    let err = endpoint_url("ftp://files.example.com", "/email", "postmark.api_url").unwrap_err();
    assert_eq!(err, "postmark.api_url must be an http:// or https:// URL");
}

#[test]
fn display_url_hides_user_info() {
    let url =
        reqwest::Url::parse("https://user:s3cret@postal.example.com/api/v1/send/raw").unwrap();
    assert_eq!(
        display_url(&url),
        "https://[redacted]@postal.example.com/api/v1/send/raw"
    );
}

#[test]
fn the_shared_client_builds_with_production_settings() {
    build_client().expect("client builds");
    assert!(USER_AGENT.starts_with("postrelay/"));
}
