//! Tests of the Postmark backend: `classify` against Postmark's real answer
//! shapes (one table), then `PostmarkClient` against a scripted server.

use std::time::Duration;

use secrecy::SecretString;
use serde_json::json;

use super::*;
use crate::backends::api_mock::{self, Answer, ApiMock};
use crate::backends::http::{Timeouts, build_client, build_client_with};

const TOKEN: &str = "pm-token-0b5e7c1d";
const MESSAGE_ID: &str = "b7bc2f4a-e38e-4336-af7d-e6c392c2f817";
const SUCCESS: &str = r#"{"To":"a@b","SubmittedAt":"2026-11-22T10:00:00.0000000-05:00","MessageID":"b7bc2f4a-e38e-4336-af7d-e6c392c2f817","ErrorCode":0,"Message":"OK"}"#;

/// What a table row expects; `says` lists texts the reason or note holds.
#[derive(Debug)]
enum Want {
    Delivered { note: bool },
    Transient { throttled: bool },
    Permanent(Option<&'static str>),
    Config(Option<&'static str>),
}

fn check(name: &str, outcome: &Outcome, want: &Want, says: &[&str]) {
    let text = match (outcome, want) {
        (Outcome::Delivered { note, .. }, Want::Delivered { note: want_note }) => {
            assert_eq!(note.is_some(), *want_note, "{name}: note {note:?}");
            note.clone().unwrap_or_default()
        }
        (
            Outcome::Transient {
                reason, throttled, ..
            },
            Want::Transient { throttled: want },
        ) => {
            assert_eq!(throttled, want, "{name}: throttled");
            reason.clone()
        }
        (Outcome::Permanent { code, reason }, Want::Permanent(want))
        | (Outcome::ConfigFault { code, reason }, Want::Config(want)) => {
            assert_eq!(code.as_deref(), *want, "{name}: code");
            reason.clone()
        }
        _ => panic!("{name}: expected {want:?}, got {outcome:?}"),
    };
    for needle in says {
        assert!(text.contains(needle), "{name}: {text:?} lacks {needle:?}");
    }
}

fn error_body(code: i64, message: &str) -> String {
    json!({ "ErrorCode": code, "Message": message }).to_string()
}

#[test]
fn classify_maps_every_postmark_answer_to_one_outcome() {
    use Want::*;
    let e = error_body;
    let cases: Vec<(&str, u16, String, Want, &[&str])> = vec![
        // Accepted.
        ("success", 200, SUCCESS.into(), Delivered { note: false }, &[]),
        (
            "test token accepted",
            200,
            json!({"ErrorCode":0,"Message":"Test job accepted","MessageID":MESSAGE_ID}).to_string(),
            Delivered { note: false },
            &[],
        ),
        (
            "partial success: inactive addresses dropped",
            200,
            json!({"To":"a@b, x@y.z","MessageID":MESSAGE_ID,"ErrorCode":0,
                "Message":"Message OK, but will not deliver to these inactive addresses: x@y.z. Inactive recipients are ones that have generated a hard bounce, a spam complaint, or a manual suppression."})
            .to_string(),
            Delivered { note: true },
            &["inactive addresses: x@y.z"],
        ),
        (
            "accepted with delay, ErrorCode absent",
            200,
            json!({"MessageID":MESSAGE_ID,"Message":"Message accepted, but delivery may be delayed."}).to_string(),
            Delivered { note: true },
            &["may be delayed"],
        ),
        // Try again later.
        ("rate limited", 429, e(429, "Rate limit exceeded."), Transient { throttled: true }, &["rate-limiting", "HTTP 429"]),
        ("rate limited, empty body", 429, String::new(), Transient { throttled: true }, &["HTTP 429, empty body"]),
        ("internal error", 500, "Internal Server Error".into(), Transient { throttled: false }, &["HTTP 500", "Internal Server Error"]),
        ("bad gateway page", 502, "<html><h1>502</h1>\n</html>".into(), Transient { throttled: false }, &["HTTP 502"]),
        ("service unavailable", 503, String::new(), Transient { throttled: false }, &["server error", "HTTP 503"]),
        ("maintenance on 503", 503, e(100, "Maintenance"), Transient { throttled: false }, &["maintenance", "ErrorCode 100"]),
        ("maintenance on 422", 422, e(100, "Maintenance"), Transient { throttled: false }, &["maintenance"]),
        // Never: dead-letter with Postmark's code and text.
        ("invalid To", 422, e(300, "Invalid 'To' address: 'x'."), Permanent(Some("300")), &["ErrorCode 300", "Invalid 'To' address: 'x'."]),
        (
            "inactive recipient",
            422,
            e(406, "You tried to send to recipient(s) that have been marked as inactive. Found inactive addresses: x@y.z."),
            Permanent(Some("406")),
            &["inactive", "Found inactive addresses: x@y.z."],
        ),
        ("forbidden attachment", 422, e(411, "Forbidden attachment type: 'exe'."), Permanent(Some("411")), &["forbidden file type", "'exe'"]),
        ("template query error", 422, e(1100, "Template query error."), Permanent(Some("1100")), &["template"]),
        ("template not found", 422, e(1101, "The Template was not found."), Permanent(Some("1101")), &["ErrorCode 1101"]),
        ("template field not allowed", 422, e(1123, "Field not allowed."), Permanent(Some("1123")), &["ErrorCode 1123"]),
        ("error code on a 200", 200, e(300, "Invalid 'From' address."), Permanent(Some("300")), &["Invalid 'From' address."]),
        ("too large", 413, "Request Entity Too Large".into(), Permanent(None), &["too large", "HTTP 413"]),
        // The operator must act: each text says what to fix.
        (
            "bad token",
            401,
            e(10, "Request does not contain a valid Server token."),
            Config(Some("10")),
            &["rejected the server token", "ErrorCode 10", "valid Server token", "check postmark.server_token"],
        ),
        ("401 without a body", 401, String::new(), Config(None), &["check postmark.server_token"]),
        ("ErrorCode 10 on a 422", 422, e(10, "No token."), Config(Some("10")), &["check postmark.server_token"]),
        ("sender signature not found", 422, e(400, "Sender signature not found."), Config(Some("400")), &["no sender signature", "Sender signature not found."]),
        ("sender signature unconfirmed", 422, e(401, "Sender signature not confirmed."), Config(Some("401")), &["not confirmed", "confirm the sender signature"]),
        ("out of credits", 422, e(405, "Not allowed to send."), Config(Some("405")), &["out of credits", "add credits"]),
        ("account pending", 422, e(412, "Account is pending."), Config(Some("412")), &["pending approval"]),
        ("account may not send", 422, e(413, "Not allowed to send."), Config(Some("413")), &["not allowed to send", "contact Postmark"]),
        ("stream missing", 422, e(1235, "The message stream for the provided 'ID' was not found."), Config(Some("1235")), &["stream does not exist", "postmark.message_stream"]),
        ("stream cannot send", 422, e(1236, "The message stream does not support sending."), Config(Some("1236")), &["does not allow sending"]),
        ("wrong api_url", 404, "Not Found".into(), Config(None), &["check postmark.api_url"]),
        ("redirect", 301, String::new(), Config(None), &["redirect", "postmark.api_url"]),
        // Relay bugs are the operator's to report, never a dead letter.
        ("invalid JSON", 422, e(402, "Received invalid JSON input."), Config(Some("402")), &["postrelay bug", "invalid JSON"]),
        ("incompatible JSON", 422, e(403, "Invalid request field(s) - Foo."), Config(Some("403")), &["postrelay bug", "Foo"]),
        ("JSON required", 422, e(409, "JSON data required."), Config(Some("409")), &["postrelay bug"]),
        ("too many batch messages", 422, e(410, "Too many batch messages."), Config(Some("410")), &["postrelay bug"]),
        ("unsupported media type", 415, String::new(), Config(None), &["postrelay bug", "HTTP 415"]),
        // Decisions (see the module doc).
        ("2xx that is not JSON", 200, "<html>Welcome</html>".into(), Transient { throttled: false }, &["not Postmark's JSON", "<html>Welcome</html>", "postmark.api_url"]),
        ("2xx with an empty object", 200, "{}".into(), Transient { throttled: false }, &["not Postmark's JSON"]),
        ("2xx with a JSON array", 200, "[]".into(), Transient { throttled: false }, &["not Postmark's JSON"]),
        ("unknown ErrorCode on a 422", 422, e(999, "Something new."), Transient { throttled: false }, &["does not know", "ErrorCode 999", "Something new."]),
        ("just past the template range", 422, e(1124, "Other."), Transient { throttled: false }, &["ErrorCode 1124"]),
        ("422 that is not JSON", 422, "Unprocessable".into(), Transient { throttled: false }, &["HTTP 422", "Unprocessable"]),
        ("undocumented status", 400, String::new(), Transient { throttled: false }, &["HTTP 400"]),
    ];
    for (name, status, body, want, says) in &cases {
        let outcome = classify(*status, body.as_bytes(), None);
        check(name, &outcome, want, says);
    }
}

#[test]
fn classify_returns_postmark_message_id_as_api_id() {
    assert_eq!(
        classify(200, SUCCESS.as_bytes(), None),
        Outcome::Delivered {
            api_id: Some(MESSAGE_ID.into()),
            note: None
        }
    );
}

#[test]
fn classify_keeps_retry_after_on_transient_answers() {
    let wait = Some(Duration::from_secs(20));
    for (status, body) in [(429, String::new()), (503, error_body(100, "Maintenance"))] {
        match classify(status, body.as_bytes(), wait) {
            Outcome::Transient { retry_after, .. } => {
                assert_eq!(retry_after, wait, "HTTP {status}")
            }
            other => panic!("HTTP {status}: {other:?}"),
        }
    }
}

#[test]
fn classify_flattens_multi_line_api_messages() {
    let outcome = classify(
        422,
        error_body(300, "bad\r\nFake-Log-Line: x").as_bytes(),
        None,
    );
    let Outcome::Permanent { reason, .. } = outcome else {
        panic!("{outcome:?}")
    };
    assert!(
        !reason.contains('\n') && !reason.contains('\r'),
        "{reason:?}"
    );
}

// ---- through the real client, against a scripted server ----

fn token() -> SecretString {
    SecretString::from(TOKEN)
}

fn client_for(api: &ApiMock) -> PostmarkClient {
    PostmarkClient::new(build_client().unwrap(), &api.url(), token()).unwrap()
}

fn success() -> Answer {
    Answer::text(200, "application/json", SUCCESS)
}

/// The one request `api` received, checked to have gone to the send endpoint.
fn only_request(api: &ApiMock) -> api_mock::Received {
    let got = api.requests();
    assert_eq!(got.len(), 1, "{got:?}");
    assert_eq!(got[0].path, "/email");
    got[0].clone()
}

fn message() -> Value {
    json!({
        "From": "app@example.com",
        "To": "user@example.org",
        "Subject": "Hello ✓",
        "TextBody": "Hi",
        "MessageStream": "outbound"
    })
}

/// A port on loopback that nothing listens on.
fn unused_port() -> u16 {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    listener.local_addr().unwrap().port()
}

#[tokio::test]
async fn send_posts_the_body_to_email_with_token_and_json_headers() {
    let api = ApiMock::scripted(vec![], success());

    let outcome = client_for(&api).send(&message()).await;

    let sent = only_request(&api);
    assert_eq!(sent.method, "POST");
    assert_eq!(sent.header("x-postmark-server-token"), Some(TOKEN));
    assert_eq!(sent.header("accept"), Some("application/json"));
    assert_eq!(sent.header("content-type"), Some("application/json"));
    assert!(
        sent.header("user-agent")
            .is_some_and(|ua| ua.starts_with("postrelay/"))
    );
    assert_eq!(sent.json(), message());

    assert_eq!(
        outcome,
        Outcome::Delivered {
            api_id: Some(MESSAGE_ID.into()),
            note: None
        }
    );
}

#[tokio::test]
async fn trailing_slash_on_api_url_does_not_double_the_slash() {
    let api = ApiMock::scripted(vec![], success());
    let client =
        PostmarkClient::new(build_client().unwrap(), &format!("{}/", api.url()), token()).unwrap();

    assert!(matches!(
        client.send(&message()).await,
        Outcome::Delivered { .. }
    ));
    only_request(&api);
}

#[tokio::test]
async fn service_unavailable_is_transient_then_the_next_try_delivers() {
    let api = ApiMock::scripted(vec![Answer::text(503, "text/plain", "")], success());
    let client = client_for(&api);

    let first = client.send(&message()).await;
    let second = client.send(&message()).await;

    assert!(
        matches!(
            first,
            Outcome::Transient {
                throttled: false,
                ..
            }
        ),
        "{first:?}"
    );
    assert!(matches!(second, Outcome::Delivered { .. }), "{second:?}");
}

#[tokio::test]
async fn retry_after_of_a_429_reaches_the_outcome() {
    let answer = Answer::text(
        429,
        "application/json",
        &error_body(429, "Rate limit exceeded."),
    )
    .with_header("Retry-After", "7");
    let api = ApiMock::scripted(vec![], answer);

    let outcome = client_for(&api).send(&message()).await;

    let Outcome::Transient {
        retry_after,
        throttled,
        ..
    } = outcome
    else {
        panic!("{outcome:?}")
    };
    assert_eq!(retry_after, Some(Duration::from_secs(7)));
    assert!(throttled);
}

#[tokio::test]
async fn an_answer_slower_than_the_time_limit_is_transient() {
    let api = ApiMock::scripted(vec![], success().after(Duration::from_secs(3)));
    let http = build_client_with(Timeouts {
        connect: Duration::from_secs(1),
        total: Duration::from_millis(200),
    })
    .unwrap();
    let client = PostmarkClient::new(http, &api.url(), token()).unwrap();

    let outcome = client.send(&message()).await;

    let Outcome::Transient { reason, .. } = &outcome else {
        panic!("{outcome:?}")
    };
    assert!(reason.contains("time limit"), "{reason}");
    assert!(!reason.contains(&api.url()), "{reason}");
}

#[tokio::test]
async fn connection_refused_is_transient_and_names_the_cause() {
    let url = format!("http://127.0.0.1:{}", unused_port());
    let client = PostmarkClient::new(build_client().unwrap(), &url, token()).unwrap();

    let outcome = client.send(&message()).await;

    let Outcome::Transient {
        reason, throttled, ..
    } = &outcome
    else {
        panic!("{outcome:?}")
    };
    assert!(!throttled);
    assert!(reason.contains("cannot connect"), "{reason}");
    assert!(reason.to_lowercase().contains("refused"), "{reason}");
    assert!(!reason.contains("127.0.0.1"), "{reason}");
}

#[tokio::test]
async fn a_token_echoed_by_the_api_is_redacted() {
    let body = error_body(10, &format!("Token '{TOKEN}' is not valid."));
    let api = ApiMock::scripted(vec![], Answer::text(401, "application/json", &body));

    let outcome = client_for(&api).send(&message()).await;

    let Outcome::ConfigFault { reason, .. } = &outcome else {
        panic!("{outcome:?}")
    };
    assert!(!reason.contains(TOKEN), "{reason}");
    assert!(reason.contains("[redacted]"), "{reason}");
}

#[tokio::test]
async fn a_redirect_is_not_followed_so_the_token_stays_home() {
    let elsewhere = ApiMock::scripted(vec![], success());
    let redirect = Answer::text(307, "text/plain", "")
        .with_header("Location", &format!("{}/email", elsewhere.url()));
    let api = ApiMock::scripted(vec![], redirect);

    let outcome = client_for(&api).send(&message()).await;

    assert!(
        matches!(outcome, Outcome::ConfigFault { .. }),
        "{outcome:?}"
    );
    assert_eq!(elsewhere.count(), 0, "the redirect was followed");
}

#[test]
fn a_token_that_cannot_be_a_header_is_refused_when_the_backend_is_built() {
    let built = PostmarkClient::new(
        build_client().unwrap(),
        "https://api.postmarkapp.com",
        SecretString::from("abc\ndef"),
    );

    let Err(err) = built else {
        panic!("built with a token that cannot be a header")
    };
    let reason = err.to_string();
    assert!(reason.contains("postmark.server_token"), "{reason}");
    assert!(!reason.contains("abc"), "{reason}");
}

#[test]
fn an_unusable_api_url_is_refused_when_the_backend_is_built() {
    let built = PostmarkClient::new(build_client().unwrap(), "api.postmarkapp.com", token());

    let Err(err) = built else {
        panic!("built with an unusable api_url")
    };
    assert!(err.to_string().contains("postmark.api_url"), "{err}");
}

#[test]
fn debug_output_never_shows_the_token_or_url_credentials() {
    let client = PostmarkClient::new(
        build_client().unwrap(),
        "https://user:pw-s3cret@api.postmarkapp.com/",
        token(),
    )
    .unwrap();

    let shown = format!("{client:?}");

    assert!(!shown.contains(TOKEN), "{shown}");
    assert!(!shown.contains("pw-s3cret"), "{shown}");
    assert!(
        shown.contains("https://[redacted]@api.postmarkapp.com/email"),
        "{shown}"
    );
}
