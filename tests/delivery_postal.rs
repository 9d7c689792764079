//! End-to-end delivery to Postal: the real binary, a real SMTP client, and a
//! real HTTP server that answers like Postal's legacy `send/raw` API (HTTP
//! 200 with a `{"status": "success" | "error" | "parameter-error"}`
//! envelope). Proves the request shape (the message byte for byte, all
//! recipients in one call), each outcome class, and the refusals at DATA.

mod support;

use std::collections::BTreeMap;

use base64::Engine as _;
use serde_json::Value;
use support::api_mock::{Answer, ApiMock, postal_error, postal_success};
use support::{Relay, Setup, queued_id, read_json, simple_message, tempdir};

const KEY: &str = "postal-api-key-AbCdEf123456";
const POSTAL_ID: &str = "0f4c6a52-93d1-4f3e-bb0c-7d2e1a9c5b38@rp.postal.example.com";

/// A Postal config pointing at `api`, with fast retries (100ms..500ms).
/// `root` adds top-level keys; `delivery` adds or overrides `[delivery]` keys.
fn config(api: &str, root: &str, delivery: &str) -> Setup {
    let mut keys = BTreeMap::from([("retry_initial", "\"100ms\""), ("retry_max", "\"500ms\"")]);
    for line in delivery.lines().filter(|l| !l.trim().is_empty()) {
        let (k, v) = line.split_once('=').expect("key = value");
        keys.insert(k.trim(), v.trim());
    }
    let delivery: String = keys.iter().map(|(k, v)| format!("{k} = {v}\n")).collect();
    Setup::toml(&format!(
        "backend = \"postal\"\n{root}\n\
         [postal]\napi_key = \"{KEY}\"\napi_url = \"{api}\"\n\
         [delivery]\n{delivery}"
    ))
}

/// A mock that answers `success` for whatever recipients the call names.
fn accepting_api() -> ApiMock {
    ApiMock::start(|req| {
        let rcpt: Vec<String> = req.json()["rcpt_to"]
            .as_array()
            .map(|a| {
                a.iter()
                    .filter_map(|r| r.as_str().map(str::to_owned))
                    .collect()
            })
            .unwrap_or_default();
        postal_success(POSTAL_ID, &rcpt)
    })
}

/// The message bytes in the request's `data`.
fn data_of(body: &Value) -> Vec<u8> {
    base64::engine::general_purpose::STANDARD
        .decode(body["data"].as_str().expect("data"))
        .expect("data is base64")
}

/// The message as Postal received it minus the one field postrelay
/// prepends, the `Received:` trace header (the documented exception to
/// byte-for-byte), which must be there, naming the client and the relay.
fn without_trace(data: &[u8]) -> Vec<u8> {
    let text = String::from_utf8_lossy(data);
    assert!(
        text.starts_with("Received: from client.example (127.0.0.1)\r\n\tby "),
        "{text}"
    );
    let mut end = 0;
    loop {
        end += data[end..]
            .windows(2)
            .position(|w| w == b"\r\n")
            .expect("the field ends")
            + 2;
        if !matches!(data.get(end), Some(b'\t' | b' ')) {
            break;
        }
    }
    data[end..].to_vec()
}

/// Dot-stuffing for the wire (RFC 5321 4.5.2).
fn dot_stuff(msg: &str) -> String {
    msg.split_inclusive("\r\n")
        .map(|l| {
            if l.starts_with('.') {
                format!(".{l}")
            } else {
                l.to_string()
            }
        })
        .collect()
}

#[test]
fn sends_the_exact_message_to_send_raw_for_all_sixty_recipients_in_one_call() {
    let api = accepting_api();
    let dir = tempdir();
    let relay = Relay::start(dir.path(), &config(&api.url(), "", ""));

    // What the client means to send (CRLF, 8-bit UTF-8 body, a line that
    // starts with a dot); only the two header rules may change it.
    let sent = "Received: from app.internal (app.internal [10.0.0.7])\r\n\tby mx.internal; Mon, 2 Mar 2026 10:00:00 +0000\r\n\
        From: App <app@example.com>\r\n\
        To: r0@example.org\r\n\
        Subject: =?UTF-8?Q?Gr=C3=BC=C3=9Fe?=\r\n\
        X-PM-Tag: onboarding\r\n\
        X-Postal-MsgID: AbC123xYz\r\n\
        Message-ID: <raw-1@example.com>\r\n\
        MIME-Version: 1.0\r\n\
        Content-Type: text/plain; charset=utf-8\r\n\
        Content-Transfer-Encoding: 8bit\r\n\
        \r\n\
        Grüße aus Köln.\r\n\
        .a line that starts with a dot\r\n\
        X-PM-Tag: this is body text, not a header\r\n";
    let expected = sent
        .replace("X-PM-Tag: onboarding\r\n", "X-Postal-Tag: onboarding\r\n")
        .replace("X-Postal-MsgID: AbC123xYz\r\n", "");

    let rcpts: Vec<String> = (0..60).map(|i| format!("r{i}@example.org")).collect();
    let mut c = relay.session();
    c.cmd("MAIL FROM:<bounces@example.com>", "250");
    for r in &rcpts {
        c.cmd(&format!("RCPT TO:<{r}>"), "250");
    }
    c.cmd("DATA", "354");
    c.send(&dot_stuff(sent));
    c.send(".\r\n");
    let r = c.expect("250 2.0.0");
    relay.wait_delivered(&queued_id(&r));

    let requests = api.requests();
    assert_eq!(requests.len(), 1, "send/raw has no recipient cap: one call");
    let req = &requests[0];
    assert_eq!(req.method, "POST");
    assert_eq!(req.path, "/api/v1/send/raw");
    assert_eq!(req.header("X-Server-API-Key"), Some(KEY));
    assert!(
        req.header("Content-Type")
            .is_some_and(|c| c.starts_with("application/json")),
        "{:?}",
        req.headers
    );
    let body = req.json();
    assert_eq!(body["mail_from"], "bounces@example.com");
    let rcpt_to: Vec<&str> = body["rcpt_to"]
        .as_array()
        .expect("rcpt_to is an array")
        .iter()
        .map(|r| r.as_str().unwrap())
        .collect();
    assert_eq!(rcpt_to, rcpts);
    assert_eq!(body["bounce"], Value::Bool(false));
    let data = without_trace(&data_of(&body));
    assert_eq!(
        String::from_utf8_lossy(&data),
        expected,
        "data is the message as sent, apart from the two header rules"
    );
    assert_eq!(data, expected.as_bytes());
}

#[test]
fn null_sender_is_sent_as_a_bounce() {
    let api = accepting_api();
    let dir = tempdir();
    let relay = Relay::start(dir.path(), &config(&api.url(), "", ""));
    let dsn = "From: Mail Delivery System <mailer-daemon@example.com>\r\n\
        To: app@example.org\r\nSubject: Undelivered Mail Returned to Sender\r\n\r\n\
        The message could not be delivered.\r\n";
    let mut c = relay.session();
    c.cmd("MAIL FROM:<>", "250");
    c.cmd("RCPT TO:<app@example.org>", "250");
    c.cmd("DATA", "354");
    c.send(dsn);
    c.send(".\r\n");
    let r = c.expect("250 2.0.0");
    relay.wait_delivered(&queued_id(&r));
    let body = api.requests()[0].json();
    assert_eq!(body["bounce"], Value::Bool(true), "{body:#}");
    // Postal refuses a blank mail_from and ignores it for bounces.
    assert_eq!(body["mail_from"], "<>");
    assert_eq!(body["rcpt_to"], serde_json::json!(["app@example.org"]));
    assert_eq!(without_trace(&data_of(&body)), dsn.as_bytes());
}

#[test]
fn success_is_delivered_and_the_log_records_postals_message_id() {
    let api = accepting_api();
    let dir = tempdir();
    let relay = Relay::start(dir.path(), &config(&api.url(), "", ""));
    let id = relay.send_simple("postal-ok", &["rcpt@example.org"]);
    relay.wait_delivered(&id);
    assert_eq!(api.count(), 1);
    let log = relay.log();
    let line = log
        .lines()
        .find(|l| l.contains("API accepted the message") && l.contains(&id))
        .unwrap_or_else(|| panic!("no acceptance line for {id}:\n{log}"));
    assert!(line.contains(POSTAL_ID), "Postal's message id in: {line}");
    assert!(
        line.contains("rcpt@example.org=1000"),
        "per-recipient id in: {line}"
    );
    assert!(!log.contains(KEY), "API key in the log");
}

#[test]
fn unauthenticated_from_address_is_dead_lettered_after_one_attempt() {
    let text = "The From address is not authorised to send mail from this server";
    let api = ApiMock::scripted(vec![], postal_error("UnauthenticatedFromAddress", text));
    let dir = tempdir();
    let relay = Relay::start(dir.path(), &config(&api.url(), "", ""));
    let id = relay.send_simple("postal-unauth-from", &["rcpt@example.org"]);
    let path = relay.spool().join("failed").join(format!("{id}.json"));
    // failed/ is written first, then the entry leaves the queue.
    relay.wait_for("the dead letter", 20, || {
        path.exists() && !relay.queued_ids().contains(&id)
    });
    let failure = read_json(&path)["failure"].clone();
    assert_eq!(failure["code"], "UnauthenticatedFromAddress", "{failure:#}");
    assert!(
        failure["reason"].as_str().unwrap().contains(text),
        "{failure:#}"
    );
    assert_eq!(api.count(), 1, "a permanent error is never retried");
}

#[test]
fn invalid_server_api_key_holds_the_message() {
    // Postal echoes the key back in `token`; it must never reach the log.
    let api = ApiMock::scripted(
        vec![],
        Answer::json(
            200,
            serde_json::json!({
                "status": "error",
                "time": 0.002,
                "flags": {},
                "data": {
                    "code": "InvalidServerAPIKey",
                    "message": "The API token provided in X-Server-API-Key was not valid.",
                    "token": KEY
                }
            }),
        ),
    );
    let dir = tempdir();
    let relay = Relay::start(dir.path(), &config(&api.url(), "", "retry_max = \"1h\""));
    let id = relay.send_simple("postal-bad-key", &["rcpt@example.org"]);
    relay.wait_for("the held state on disk", 20, || {
        relay.held_ids() == [id.clone()]
    });
    assert!(relay.files_in("failed", "json").is_empty());
    relay.wait_log("message held until the operator fixes it", 10);
    let log = relay.log();
    assert!(log.contains("InvalidServerAPIKey"), "{log}");
    assert!(
        log.contains("check postal.api_key"),
        "the log says what to fix: {log}"
    );
    assert!(!log.contains(KEY), "API key in the log");
    assert_eq!(api.count(), 1, "held, not retried at the normal pace");
}

#[test]
fn bad_gateway_and_non_json_answers_are_retried_then_delivered() {
    let api = ApiMock::scripted(
        vec![
            Answer::text(
                502,
                "text/html",
                "<html><head><title>502 Bad Gateway</title></head><body>nginx</body></html>",
            ),
            Answer::text(
                200,
                "text/html",
                "<html><body>Postal is starting</body></html>",
            ),
        ],
        postal_success(POSTAL_ID, &["rcpt@example.org".to_string()]),
    );
    let dir = tempdir();
    let relay = Relay::start(dir.path(), &config(&api.url(), "", ""));
    let id = relay.send_simple("postal-retry", &["rcpt@example.org"]);
    relay.wait_delivered(&id);
    assert_eq!(api.count(), 3, "502, non-JSON 200, success");
    let log = relay.log();
    assert!(log.contains("HTTP 502"), "{log}");
    assert!(log.contains("without its JSON envelope"), "{log}");
}

/// Sends `msg`, expects a 5xx naming `header`, and proves nothing reaches
/// Postal: a good message on the same connection is the only request.
fn refused_at_data(header: &str) {
    let api = accepting_api();
    let dir = tempdir();
    let relay = Relay::start(dir.path(), &config(&api.url(), "", ""));
    let msg = format!(
        "From: app@example.com\r\nTo: rcpt@example.org\r\nSubject: unsupported\r\n{header}\r\n\r\nbody\r\n"
    );
    let mut c = relay.session();
    let r = c.send_mail("app@example.com", &["rcpt@example.org"], &msg);
    let name = header.split(':').next().unwrap();
    assert!(r.starts_with("550 5.7.1"), "{r}");
    assert!(r.contains(name), "the reply names {name}: {r}");
    assert!(relay.queued_ids().is_empty());
    let ok = c.send_mail(
        "app@example.com",
        &["rcpt@example.org"],
        &simple_message("after-refusal"),
    );
    assert!(ok.starts_with("250 2.0.0"), "{ok}");
    relay.wait_delivered(&queued_id(&ok));
    let requests = api.requests();
    assert_eq!(requests.len(), 1, "only the good message reaches Postal");
    assert!(String::from_utf8_lossy(&data_of(&requests[0].json())).contains("after-refusal"));
}

#[test]
fn track_opens_is_refused_at_data_naming_the_header() {
    refused_at_data("X-PM-TrackOpens: true");
}

#[test]
fn metadata_is_refused_at_data_naming_the_header() {
    refused_at_data("X-PM-Metadata-customer: 42");
}

#[test]
fn message_stream_is_refused_at_data_naming_the_header() {
    refused_at_data("X-PM-Message-Stream: broadcasts");
}

#[test]
fn unsupported_headers_are_stripped_with_ignore_unsupported_features() {
    let api = accepting_api();
    let dir = tempdir();
    let relay = Relay::start(
        dir.path(),
        &config(&api.url(), "ignore_unsupported_features = true", ""),
    );
    let msg = "From: app@example.com\r\nTo: rcpt@example.org\r\nSubject: stripped\r\n\
        X-PM-TrackOpens: true\r\nX-PM-Metadata-customer: 42\r\n\
        X-PM-Message-Stream: broadcasts\r\nX-PM-TrackLinks: HtmlOnly\r\n\
        X-Custom: stays\r\n\r\nbody\r\n";
    let mut c = relay.session();
    let r = c.send_mail("app@example.com", &["rcpt@example.org"], msg);
    assert!(r.starts_with("250 2.0.0"), "{r}");
    relay.wait_delivered(&queued_id(&r));
    let data = String::from_utf8(without_trace(&data_of(&api.requests()[0].json()))).unwrap();
    let expected =
        msg.replace(
            "X-PM-TrackOpens: true\r\nX-PM-Metadata-customer: 42\r\n",
            "",
        )
        .replace(
            "X-PM-Message-Stream: broadcasts\r\nX-PM-TrackLinks: HtmlOnly\r\n",
            "",
        ) + "\r\n";
    assert_eq!(data, expected);
    let log = relay.log();
    for name in [
        "X-PM-TrackOpens",
        "X-PM-Metadata-customer",
        "X-PM-Message-Stream",
    ] {
        assert!(log.contains(name), "dropping {name} is logged: {log}");
    }
}
