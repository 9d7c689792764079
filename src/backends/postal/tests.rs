//! Tests of the Postal backend: `classify` against Postal's real envelopes
//! (one table), then `PostalClient` against a scripted server.

use std::time::Duration;

use secrecy::SecretString;
use serde_json::json;

use super::*;
use crate::backends::api_mock::{self, Answer, ApiMock};
use crate::backends::http::{Timeouts, build_client, build_client_with};

const KEY: &str = "KQ3ozl8LfxWr0uVxqE2vV0sJ";
const SUCCESS: &str = r#"{"status":"success","time":0.02,"flags":{},"data":{"message_id":"abc@rp.example","messages":{"a@b.c":{"id":12,"token":"Xy"}}}}"#;

#[derive(Debug)]
enum Want {
    Transient { throttled: bool },
    Permanent(&'static str),
    Config(Option<&'static str>),
}

fn error(code: &str, message: &str) -> String {
    json!({"status":"error","time":0.01,"flags":{},"data":{"code":code,"message":message}})
        .to_string()
}

#[test]
fn classify_maps_every_postal_answer_to_one_outcome() {
    use Want::*;
    let e = error;
    let invalid_key = json!({"status":"error","time":0.01,"flags":{},"data":{
        "code":"InvalidServerAPIKey",
        "message":"The API token provided in X-Server-API-Key was not valid.",
        "token":"x"}})
    .to_string();
    let parameter_error = json!({"status":"parameter-error","time":0.0,"flags":{},
        "data":{"message":"`rcpt_to` parameter is required but is missing"}})
    .to_string();
    let cases: Vec<(&str, u16, String, Want, &[&str])> = vec![
        // Never: dead-letter with Postal's code and text.
        (
            "no recipients",
            200,
            e(
                "NoRecipients",
                "There are no recipients defined to receive this message",
            ),
            Permanent("NoRecipients"),
            &["no recipients", "NoRecipients"],
        ),
        (
            "no content",
            200,
            e("NoContent", "There is no content defined for this e-mail"),
            Permanent("NoContent"),
            &["There is no content"],
        ),
        (
            "unauthenticated From",
            200,
            e(
                "UnauthenticatedFromAddress",
                "The From address is not authorised to send mail from this server",
            ),
            Permanent("UnauthenticatedFromAddress"),
            &["not authorised"],
        ),
        (
            "From missing",
            200,
            e(
                "FromAddressMissing",
                "The From address is missing and is required",
            ),
            Permanent("FromAddressMissing"),
            &["no From address"],
        ),
        (
            "attachment name",
            200,
            e("AttachmentMissingName", "An attachment is missing a name"),
            Permanent("AttachmentMissingName"),
            &["attachment"],
        ),
        (
            "attachment data",
            200,
            e("AttachmentMissingData", "An attachment is missing data"),
            Permanent("AttachmentMissingData"),
            &["attachment"],
        ),
        (
            "too many To",
            200,
            e(
                "TooManyToAddresses",
                "The maximum number of To addresses has been reached (maximum 50)",
            ),
            Permanent("TooManyToAddresses"),
            &["too many recipients", "maximum 50"],
        ),
        (
            "too many Cc",
            200,
            e(
                "TooManyCCAddresses",
                "The maximum number of CC addresses has been reached (maximum 50)",
            ),
            Permanent("TooManyCCAddresses"),
            &["too many"],
        ),
        (
            "too many Bcc",
            200,
            e(
                "TooManyBCCAddresses",
                "The maximum number of BCC addresses has been reached (maximum 50)",
            ),
            Permanent("TooManyBCCAddresses"),
            &["too many"],
        ),
        // The operator must act.
        (
            "no key",
            200,
            e("AccessDenied", "Must be authenticated as a server."),
            Config(Some("AccessDenied")),
            &["check postal.api_key", "Must be authenticated"],
        ),
        (
            "invalid key",
            200,
            invalid_key,
            Config(Some("InvalidServerAPIKey")),
            &[
                "rejected the API key",
                "InvalidServerAPIKey",
                "was not valid",
                "check postal.api_key",
            ],
        ),
        (
            "suspended",
            200,
            e("ServerSuspended", "Mail server has been suspended"),
            Config(Some("ServerSuspended")),
            &["suspended", "lift the suspension"],
        ),
        (
            "parameter error",
            200,
            parameter_error,
            Config(None),
            &["postrelay bug", "`rcpt_to` parameter is required"],
        ),
        (
            "wrong api_url",
            404,
            "<h1>Not Found</h1>".into(),
            Config(None),
            &["check postal.api_url", "HTTP 404"],
        ),
        (
            "redirect to https",
            301,
            String::new(),
            Config(None),
            &["check postal.api_url", "HTTP 301"],
        ),
        // Try again later.
        (
            "bad gateway",
            502,
            "<html>502 Bad Gateway</html>".into(),
            Transient { throttled: false },
            &["unavailable", "HTTP 502"],
        ),
        (
            "crashed app",
            500,
            "We're sorry, but something went wrong.".into(),
            Transient { throttled: false },
            &["HTTP 500", "something went wrong"],
        ),
        (
            "proxy rate limit",
            429,
            String::new(),
            Transient { throttled: true },
            &["HTTP 429"],
        ),
        (
            "proxy auth",
            401,
            String::new(),
            Transient { throttled: false },
            &["HTTP 401"],
        ),
        (
            "200 that is not JSON",
            200,
            "<html>maintenance</html>".into(),
            Transient { throttled: false },
            &["without its JSON envelope", "maintenance"],
        ),
        (
            "200 with an empty body",
            200,
            String::new(),
            Transient { throttled: false },
            &["empty body"],
        ),
        (
            "200 JSON without status",
            200,
            r#"{"ok":true}"#.into(),
            Transient { throttled: false },
            &["without its JSON envelope"],
        ),
        (
            "unknown status word",
            200,
            r#"{"status":"pending","data":{}}"#.into(),
            Transient { throttled: false },
            &["without its JSON envelope"],
        ),
        (
            "error envelope on a 500",
            500,
            e("NoRecipients", "x"),
            Transient { throttled: false },
            &["HTTP 500"],
        ),
        // Decision: an unknown error code keeps the mail (see the module doc).
        (
            "unknown error code",
            200,
            e("ValidationError", "Something new"),
            Transient { throttled: false },
            &["does not know", "ValidationError", "Something new"],
        ),
    ];
    for (name, status, body, want, says) in &cases {
        let outcome = classify(*status, body.as_bytes());
        let text = match (&outcome, want) {
            (
                Outcome::Transient {
                    reason, throttled, ..
                },
                Transient { throttled: t },
            ) => {
                assert_eq!(throttled, t, "{name}: throttled");
                reason.clone()
            }
            (Outcome::Permanent { code, reason }, Permanent(c)) => {
                assert_eq!(code.as_deref(), Some(*c), "{name}: code");
                reason.clone()
            }
            (Outcome::ConfigFault { code, reason }, Config(c)) => {
                assert_eq!(code.as_deref(), *c, "{name}: code");
                reason.clone()
            }
            _ => panic!("{name}: expected {want:?}, got {outcome:?}"),
        };
        for needle in *says {
            assert!(text.contains(needle), "{name}: {text:?} lacks {needle:?}");
        }
    }
}

#[test]
fn success_gives_the_message_id_and_lists_each_recipient_id() {
    assert_eq!(
        classify(200, SUCCESS.as_bytes()),
        Outcome::Delivered {
            api_id: Some("abc@rp.example".into()),
            note: Some("a@b.c=12".into()),
        }
    );
    let two = json!({"status":"success","time":0.1,"flags":{},"data":{"message_id":null,
        "messages":{"z@x.org":{"id":41,"token":"t2"},"b@x.org":{"id":40,"token":"t1"}}}});
    assert_eq!(
        classify(200, two.to_string().as_bytes()),
        Outcome::Delivered {
            api_id: None,
            note: Some("b@x.org=40, z@x.org=41".into()),
        }
    );
}

#[test]
fn success_without_messages_has_no_note() {
    let body =
        json!({"status":"success","time":0.1,"flags":{},"data":{"message_id":"m@x","messages":{}}});
    assert_eq!(
        classify(200, body.to_string().as_bytes()),
        Outcome::Delivered {
            api_id: Some("m@x".into()),
            note: None,
        }
    );
}

#[test]
fn the_token_postal_returns_with_an_invalid_key_is_never_shown() {
    let body = json!({"status":"error","time":0.01,"flags":{},"data":{
        "code":"InvalidServerAPIKey","message":"The API token provided in X-Server-API-Key was not valid.",
        "token":KEY}});
    let outcome = classify(200, body.to_string().as_bytes());
    assert!(!format!("{outcome:?}").contains(KEY), "{outcome:?}");
}

// ---- through the real client, against a scripted server ----

fn key() -> SecretString {
    SecretString::from(KEY)
}

fn client_for(api: &ApiMock) -> PostalClient {
    PostalClient::new(build_client().unwrap(), &api.url(), key()).unwrap()
}

fn success() -> Answer {
    Answer::text(200, "application/json", SUCCESS)
}

/// The one request `api` received, checked to have gone to the send endpoint.
fn only_request(api: &ApiMock) -> api_mock::Received {
    let got = api.requests();
    assert_eq!(got.len(), 1, "{got:?}");
    assert_eq!(got[0].path, "/api/v1/send/raw");
    got[0].clone()
}

fn raw_message() -> Value {
    json!({
        "mail_from": "bounces@example.com",
        "rcpt_to": ["a@b.c"],
        "data": "RnJvbTogYXBwQGV4YW1wbGUuY29tDQoNCkhp",
        "bounce": false
    })
}

fn unused_port() -> u16 {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    listener.local_addr().unwrap().port()
}

#[tokio::test]
async fn send_posts_the_body_to_send_raw_with_the_api_key() {
    let api = ApiMock::scripted(vec![], success());

    let outcome = client_for(&api).send(&raw_message()).await;

    let sent = only_request(&api);
    assert_eq!(sent.method, "POST");
    assert_eq!(sent.header("x-server-api-key"), Some(KEY));
    assert_eq!(sent.header("accept"), Some("application/json"));
    assert_eq!(sent.header("content-type"), Some("application/json"));
    assert!(
        sent.header("user-agent")
            .is_some_and(|ua| ua.starts_with("postrelay/"))
    );
    assert_eq!(sent.json(), raw_message());

    assert_eq!(
        outcome,
        Outcome::Delivered {
            api_id: Some("abc@rp.example".into()),
            note: Some("a@b.c=12".into()),
        }
    );
}

#[tokio::test]
async fn trailing_slash_on_api_url_does_not_double_the_slash() {
    let api = ApiMock::scripted(vec![], success());
    let client =
        PostalClient::new(build_client().unwrap(), &format!("{}/", api.url()), key()).unwrap();

    assert!(matches!(
        client.send(&raw_message()).await,
        Outcome::Delivered { .. }
    ));
    only_request(&api);
}

#[tokio::test]
async fn a_bad_gateway_is_transient_then_the_next_try_delivers() {
    let api = ApiMock::scripted(vec![Answer::text(503, "text/plain", "")], success());
    let client = client_for(&api);

    let first = client.send(&raw_message()).await;
    let second = client.send(&raw_message()).await;

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
async fn retry_after_of_a_proxy_429_reaches_the_outcome() {
    let answer = Answer::text(429, "text/plain", "").with_header("Retry-After", "9");
    let api = ApiMock::scripted(vec![], answer);

    let outcome = client_for(&api).send(&raw_message()).await;

    assert!(
        matches!(
            outcome,
            Outcome::Transient {
                retry_after: Some(d),
                throttled: true,
                ..
            } if d == Duration::from_secs(9)
        ),
        "{outcome:?}"
    );
}

#[tokio::test]
async fn an_answer_slower_than_the_time_limit_is_transient() {
    let api = ApiMock::scripted(vec![], success().after(Duration::from_secs(3)));
    let http = build_client_with(Timeouts {
        connect: Duration::from_secs(1),
        total: Duration::from_millis(200),
    })
    .unwrap();
    let client = PostalClient::new(http, &api.url(), key()).unwrap();

    let outcome = client.send(&raw_message()).await;

    assert!(
        matches!(&outcome, Outcome::Transient { reason, .. } if reason.contains("time limit")),
        "{outcome:?}"
    );
}

#[tokio::test]
async fn connection_refused_is_transient() {
    let url = format!("http://127.0.0.1:{}", unused_port());
    let client = PostalClient::new(build_client().unwrap(), &url, key()).unwrap();

    let outcome = client.send(&raw_message()).await;

    assert!(
        matches!(&outcome, Outcome::Transient { reason, throttled: false, .. } if reason.contains("cannot connect")),
        "{outcome:?}"
    );
}

#[tokio::test]
async fn an_invalid_key_answer_is_a_config_fault_that_never_shows_the_key() {
    let answer = json!({"status":"error","time":0.01,"flags":{},"data":{
        "code":"InvalidServerAPIKey",
        "message":format!("The API token provided in X-Server-API-Key was not valid ({KEY})."),
        "token":KEY}});
    let api = ApiMock::scripted(vec![], Answer::json(200, answer));

    let outcome = client_for(&api).send(&raw_message()).await;

    let Outcome::ConfigFault { code, reason } = &outcome else {
        panic!("{outcome:?}")
    };
    assert_eq!(code.as_deref(), Some("InvalidServerAPIKey"));
    assert!(reason.contains("check postal.api_key"), "{reason}");
    assert!(!reason.contains(KEY), "{reason}");
}

#[test]
fn a_key_that_cannot_be_a_header_is_refused_when_the_backend_is_built() {
    let built = PostalClient::new(
        build_client().unwrap(),
        "https://postal.example.com",
        SecretString::from("key\r\n"),
    );

    let Err(err) = built else {
        panic!("built with a key that cannot be a header")
    };
    assert!(err.to_string().contains("postal.api_key"), "{err}");
}

#[test]
fn debug_output_never_shows_the_api_key() {
    let client = PostalClient::new(
        build_client().unwrap(),
        "https://postal.example.com/",
        key(),
    )
    .unwrap();

    let shown = format!("{client:?}");

    assert!(!shown.contains(KEY), "{shown}");
    assert!(
        shown.contains("https://postal.example.com/api/v1/send/raw"),
        "{shown}"
    );
}
