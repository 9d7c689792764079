//! End-to-end delivery to Postmark: the real binary, a real SMTP client, and
//! a real HTTP server that answers like Postmark's `POST /email` (status
//! codes, `{"ErrorCode", "Message"}` bodies). Each test proves one promise of
//! design.md: what the request carries, which answers are retried, which are
//! dead-lettered or held, splitting above 50 recipients, the rate ceiling,
//! and what is refused at DATA before anything is queued.

mod support;

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use base64::Engine as _;
use lettre::message::header::{ContentType, HeaderName, HeaderValue};
use lettre::message::{Attachment, Mailbox, MultiPart};
use lettre::{Message, SmtpTransport, Transport};
use serde_json::Value;
use support::api_mock::{self, Answer, ApiMock, postmark_error, postmark_ok};
use support::{
    Relay, Setup, http_get, queued_id, read_json, recipients_of, simple_message, split_addresses,
    tempdir,
};

const TOKEN: &str = "pm-server-token-1234";

/// A Postmark config pointing at `api`, with fast retries (100ms..500ms).
/// `root` adds top-level keys; `delivery` adds or overrides `[delivery]`
/// keys, one `key = value` per line.
fn config(api: &str, root: &str, delivery: &str) -> Setup {
    let mut keys = BTreeMap::from([("retry_initial", "\"100ms\""), ("retry_max", "\"500ms\"")]);
    for line in delivery.lines().filter(|l| !l.trim().is_empty()) {
        let (k, v) = line.split_once('=').expect("key = value");
        keys.insert(k.trim(), v.trim());
    }
    let delivery: String = keys.iter().map(|(k, v)| format!("{k} = {v}\n")).collect();
    Setup::toml(&format!(
        "backend = \"postmark\"\n{root}\n\
         [postmark]\nserver_token = \"{TOKEN}\"\napi_url = \"{api}\"\n\
         [delivery]\n{delivery}"
    ))
}

fn fast(api: &ApiMock) -> Setup {
    config(&api.url(), "", "")
}

/// Waits for `failed/<id>.json` and returns its `failure` object.
fn wait_failed(relay: &Relay, id: &str) -> Value {
    let path = relay.spool().join("failed").join(format!("{id}.json"));
    // failed/ is written first, then the entry leaves the queue.
    relay.wait_for("the dead letter", 20, || {
        path.exists() && !relay.queued_ids().iter().any(|q| q == id)
    });
    read_json(&path)["failure"].clone()
}

#[test]
fn request_carries_token_json_headers_and_fields_mapped_from_a_real_message() {
    let api = ApiMock::scripted(vec![], postmark_ok("b7bc2f4a-e38e-4336-af7d-e6c392c2f817"));
    let dir = tempdir();
    let relay = Relay::start(dir.path(), &fast(&api));

    // A message as a real client library builds it: multipart/mixed with an
    // alternative text/HTML body, an inline image and a PDF attachment, RFC
    // 2047 encoded names and subject, and Postmark's X-PM-* control headers.
    let raw_header = |name: &'static str, value: &str| {
        HeaderValue::new(HeaderName::new_from_ascii_str(name), value.to_string())
    };
    let pdf = b"%PDF-1.4\n%\xe2\xe3\xcf\xd3\n1 0 obj<<>>endobj\ntrailer<<>>\n%%EOF\n".to_vec();
    let png = vec![
        0x89, b'P', b'N', b'G', 0x0d, 0x0a, 0x1a, 0x0a, 0, 0, 0, 0x0d,
    ];
    let text = "Hallo Ann,\r\nanbei der Bericht für Q3.\r\nGrüße, Zoë\r\n";
    let html = "<p>Hallo Ann,</p><p>anbei der Bericht f\u{fc}r Q3.</p><img src=\"cid:logo\">";
    let message = Message::builder()
        .from("Zoë Müller <zoe@example.com>".parse::<Mailbox>().unwrap())
        .to("Ann Example <ann@example.org>".parse::<Mailbox>().unwrap())
        .to("Header Only <ghost@example.net>"
            .parse::<Mailbox>()
            .unwrap())
        .cc("bob@example.org".parse::<Mailbox>().unwrap())
        .reply_to("Support <help@example.com>".parse::<Mailbox>().unwrap())
        .subject("Grüße aus Köln – Bericht Q3")
        .raw_header(raw_header("X-PM-Tag", "quarterly-report"))
        .raw_header(raw_header("X-PM-Metadata-customer-id", "42"))
        .raw_header(raw_header("X-PM-Metadata-plan", "gold"))
        .raw_header(raw_header("X-PM-Message-Stream", "broadcasts"))
        .raw_header(raw_header("X-PM-TrackOpens", "true"))
        .raw_header(raw_header("X-PM-TrackLinks", "HtmlAndText"))
        .raw_header(raw_header("X-Custom-Ref", "order-9876"))
        .envelope(
            lettre::address::Envelope::new(
                Some("bounces@example.com".parse().unwrap()),
                vec![
                    "ann@example.org".parse().unwrap(),
                    "bob@example.org".parse().unwrap(),
                    "hidden@example.org".parse().unwrap(),
                ],
            )
            .unwrap(),
        )
        .multipart(
            MultiPart::mixed()
                .multipart(
                    MultiPart::related()
                        .multipart(MultiPart::alternative_plain_html(
                            text.to_string(),
                            html.to_string(),
                        ))
                        .singlepart(
                            Attachment::new_inline("logo".to_string())
                                .body(png.clone(), ContentType::parse("image/png").unwrap()),
                        ),
                )
                .singlepart(
                    Attachment::new("Bericht Q3.pdf".to_string())
                        .body(pdf.clone(), ContentType::parse("application/pdf").unwrap()),
                ),
        )
        .unwrap();
    let mailer = SmtpTransport::builder_dangerous(relay.smtp.ip().to_string())
        .port(relay.smtp.port())
        .build();
    let response = mailer.send(&message).expect("relay accepts the message");
    assert_eq!(response.code().to_string(), "250");

    let requests = api.wait_for_requests(1, 20);
    relay.wait_for("an empty queue", 20, || relay.queued_ids().is_empty());
    assert_eq!(api.count(), 1);
    let req = &requests[0];
    assert_eq!(req.method, "POST");
    assert_eq!(req.path, "/email");
    assert_eq!(req.header("X-Postmark-Server-Token"), Some(TOKEN));
    assert!(
        req.header("Accept")
            .is_some_and(|a| a.contains("application/json")),
        "{:?}",
        req.headers
    );
    assert!(
        req.header("Content-Type")
            .is_some_and(|c| c.starts_with("application/json")),
        "{:?}",
        req.headers
    );

    let body = req.json();
    assert_eq!(body["From"], "Zoë Müller <zoe@example.com>");
    assert_eq!(body["To"], "Ann Example <ann@example.org>", "{body:#}");
    assert_eq!(body["Cc"], "bob@example.org");
    assert_eq!(body["Bcc"], "hidden@example.org");
    assert_eq!(body["ReplyTo"], "Support <help@example.com>");
    assert_eq!(body["Subject"], "Grüße aus Köln – Bericht Q3");
    assert!(
        !body.to_string().contains("ghost@example.net"),
        "header-only address must not be sent to: {body:#}"
    );
    assert_eq!(
        body["TextBody"].as_str().unwrap().replace("\r\n", "\n"),
        text.replace("\r\n", "\n")
    );
    assert_eq!(body["HtmlBody"].as_str().unwrap().trim_end(), html);

    assert_eq!(body["Tag"], "quarterly-report");
    assert_eq!(
        body["Metadata"],
        serde_json::json!({"customer-id": "42", "plan": "gold"})
    );
    assert_eq!(body["MessageStream"], "broadcasts");
    assert_eq!(body["TrackOpens"], Value::Bool(true));
    assert_eq!(body["TrackLinks"], "HtmlAndText");

    let headers = body["Headers"].as_array().expect("Headers array");
    assert!(
        headers
            .iter()
            .any(|h| h["Name"] == "X-Custom-Ref" && h["Value"] == "order-9876"),
        "{headers:?}"
    );
    for h in headers {
        let name = h["Name"].as_str().unwrap().to_ascii_lowercase();
        assert!(!name.starts_with("x-pm-"), "control header forwarded: {h}");
        assert!(
            !["from", "to", "cc", "bcc", "subject"].contains(&name.as_str()),
            "structural header forwarded: {h}"
        );
    }

    let b64 = base64::engine::general_purpose::STANDARD;
    let attachments = body["Attachments"].as_array().expect("Attachments array");
    assert_eq!(attachments.len(), 2, "{attachments:#?}");
    let by_type: BTreeMap<&str, &Value> = attachments
        .iter()
        .map(|a| (a["ContentType"].as_str().unwrap(), a))
        .collect();
    let report = by_type["application/pdf"];
    assert_eq!(report["Name"], "Bericht Q3.pdf");
    assert_eq!(
        b64.decode(report["Content"].as_str().unwrap()).unwrap(),
        pdf
    );
    assert!(report.get("ContentID").is_none(), "{report}");
    let logo = by_type["image/png"];
    assert_eq!(logo["ContentID"], "cid:logo");
    assert_eq!(b64.decode(logo["Content"].as_str().unwrap()).unwrap(), png);

    // The mail log keeps Postmark's MessageID, never the token.
    relay.wait_log("b7bc2f4a-e38e-4336-af7d-e6c392c2f817", 10);
    assert!(!relay.log().contains(TOKEN), "token in the log");
}

#[test]
fn retries_on_503_then_delivers() {
    let unavailable = Answer::text(
        503,
        "text/html",
        "<html><body>503 Service Unavailable</body></html>",
    );
    let api = ApiMock::scripted(
        vec![unavailable.clone(), unavailable],
        postmark_ok("0a129aee-e1cd-480d-b08d-4f48548ff48d"),
    );
    let dir = tempdir();
    let relay = Relay::start(dir.path(), &fast(&api));
    let id = relay.send_simple("retry-503", &["rcpt@example.org"]);
    relay.wait_delivered(&id);
    let requests = api.requests();
    assert_eq!(requests.len(), 3, "503, 503, 200 means exactly three calls");
    for r in &requests {
        assert_eq!(r.json()["Subject"], "retry-503");
        assert_eq!(r.json()["MessageStream"], "outbound", "the default stream");
    }
    assert_eq!(
        relay.log().matches("will retry").count(),
        2,
        "{}",
        relay.log()
    );
}

#[test]
fn retries_on_429_then_delivers() {
    // Postmark sends no Retry-After; a proxy might. Here the first answer
    // says one second, which is a floor for the next attempt.
    let throttled = postmark_error(429, 429, "Rate limit exceeded. Please slow down.");
    let api = ApiMock::scripted(
        vec![throttled.clone().with_header("Retry-After", "1"), throttled],
        postmark_ok("5b7a9c33-0f4b-4e47-9f57-31ef1b6a4b11"),
    );
    let dir = tempdir();
    let relay = Relay::start(dir.path(), &fast(&api));
    let id = relay.send_simple("retry-429", &["rcpt@example.org"]);
    relay.wait_delivered(&id);
    let requests = api.requests();
    assert_eq!(requests.len(), 3, "429, 429, 200 means exactly three calls");
    let gap = requests[1].at - requests[0].at;
    assert!(
        gap >= Duration::from_millis(990),
        "Retry-After: 1 honoured, but the retry came after {gap:?}"
    );
    assert!(relay.log().contains("rate-limiting"), "{}", relay.log());
}

#[test]
fn dead_letters_on_422_error_300_after_one_attempt() {
    let text = "Invalid 'To' address: 'rcpt@example'.";
    let api = ApiMock::scripted(vec![], postmark_error(422, 300, text));
    let dir = tempdir();
    let relay = Relay::start(dir.path(), &fast(&api));
    let id = relay.send_simple("invalid-300", &["rcpt@example.org"]);
    let failure = wait_failed(&relay, &id);
    assert_eq!(failure["code"], "300", "{failure:#}");
    let reason = failure["reason"].as_str().unwrap();
    assert!(reason.contains(text), "Postmark's Message kept: {reason}");
    assert!(reason.contains("422"), "{reason}");
    assert_eq!(api.count(), 1, "a permanent error is never retried");
    assert!(
        relay.files_in("failed", "eml").len() == 1,
        "the message itself is kept beside the reason"
    );
    relay.wait_log("message dead-lettered", 10);
}

#[test]
fn dead_letters_inactive_recipient_406() {
    let text = "You tried to send to recipient(s) that have been marked as inactive. \
                Found inactive addresses: gone@example.org. Inactive recipients are ones \
                that have generated a hard bounce, a spam complaint, or a manual suppression.";
    let api = ApiMock::scripted(vec![], postmark_error(422, 406, text));
    let dir = tempdir();
    let relay = Relay::start(dir.path(), &fast(&api));
    let id = relay.send_simple("inactive-406", &["gone@example.org"]);
    let failure = wait_failed(&relay, &id);
    assert_eq!(failure["code"], "406", "{failure:#}");
    let reason = failure["reason"].as_str().unwrap();
    assert!(reason.contains("inactive"), "{reason}");
    assert!(reason.contains("gone@example.org"), "{reason}");
    assert_eq!(api.count(), 1, "a permanent error is never retried");
}

#[test]
fn holds_mail_on_401_and_delivers_after_restart_with_fixed_token() {
    const FIXED: &str = "pm-fixed-token-5678";
    // Postmark answers by token: the configured one is rejected, the fixed one works.
    let api = ApiMock::start(|req| {
        if req.header("X-Postmark-Server-Token") == Some(FIXED) {
            postmark_ok("7d3e6b9f-2f1a-4c55-8d6e-0c1b2a3f4e5d")
        } else {
            postmark_error(
                401,
                10,
                "The Server Token you provided in the X-Postmark-Server-Token request header was invalid. Please verify that you are using a valid token.",
            )
        }
    });
    let dir = tempdir();
    // retry_max is an hour: only the restart can explain a delivery within seconds.
    let mut relay = Relay::start(
        dir.path(),
        &config(
            &api.url(),
            "[http]\nlisten = \"127.0.0.1:0\"",
            "retry_max = \"1h\"",
        ),
    );
    let id = relay.send_simple("held-401", &["rcpt@example.org"]);
    relay.wait_for("the held state on disk", 20, || {
        relay.held_ids() == [id.clone()]
    });
    let meta = relay.queued(&id).expect("held message").0;
    assert!(
        meta["last_error"]
            .as_str()
            .is_some_and(|e| e.contains("check postmark.server_token")),
        "{meta:#}"
    );
    assert!(relay.files_in("failed", "json").is_empty());
    // The log says what to fix.
    relay.wait_log("message held until the operator fixes it", 10);
    let log = relay.log();
    assert!(log.contains("check postmark.server_token"), "{log}");
    assert!(!log.contains(TOKEN), "token in the log");
    // ... and so does /readyz.
    let (status, ready) = http_get(relay.http.expect("admin listener"), "/readyz");
    assert_eq!(status, 503, "{ready}");
    assert!(ready.contains("check postmark.server_token"), "{ready}");
    assert!(!ready.contains(TOKEN), "token in /readyz");
    assert_eq!(api.count(), 1);
    assert!(relay.terminate().success());

    // The operator fixes the token and restarts on the same spool.
    let restarted = Instant::now();
    let relay = Relay::start(
        dir.path(),
        &Setup::toml(&format!(
            "backend = \"postmark\"\n[postmark]\nserver_token = \"{FIXED}\"\napi_url = \"{}\"\n\
             [delivery]\nretry_initial = \"100ms\"\nretry_max = \"1h\"\n",
            api.url()
        )),
    );
    relay.wait_delivered(&id);
    assert!(
        restarted.elapsed() < Duration::from_secs(20),
        "delivered at once after the restart"
    );
    assert!(relay.log().contains("held_released=1"), "{}", relay.log());
    let requests = api.requests();
    assert_eq!(requests.len(), 2);
    assert_eq!(requests[1].header("X-Postmark-Server-Token"), Some(FIXED));
    assert_eq!(requests[1].json()["Subject"], "held-401");
}

/// Sends one message with 60 envelope recipients r0..r59; the headers name a
/// few of them in To and Cc, plus one header-only address.
fn send_sixty(relay: &Relay) -> (String, Vec<String>) {
    let rcpts: Vec<String> = (0..60).map(|i| format!("r{i}@example.org")).collect();
    let refs: Vec<&str> = rcpts.iter().map(String::as_str).collect();
    let msg = "From: Sender <sender@example.com>\r\n\
               To: R Zero <r0@example.org>, r55@example.org, Nobody <header-only@example.net>\r\n\
               Cc: r1@example.org, R Fifty-Six <r56@example.org>\r\n\
               Subject: sixty\r\n\r\nHello, all sixty of you.\r\n";
    let mut c = relay.session();
    let r = c.send_mail("sender@example.com", &refs, msg);
    assert!(r.starts_with("250 2.0.0"), "{r}");
    (queued_id(&r), rcpts)
}

/// Each call's To/Cc/Bcc hold exactly that call's recipients: To and Cc
/// only the header addresses that belong to the call.
fn assert_call_fields(body: &Value, expect_to: &[&str], expect_cc: &[&str]) {
    assert_eq!(split_addresses(&body["To"]), expect_to, "{body:#}");
    assert_eq!(split_addresses(&body["Cc"]), expect_cc, "{body:#}");
    assert!(!body.to_string().contains("header-only@example.net"));
}

#[test]
fn splits_sixty_recipients_into_calls_of_50_and_10() {
    let api = ApiMock::scripted(vec![], postmark_ok("9f0c4e65-6a4f-4d07-a6f4-b5d9ef1d4a40"));
    let dir = tempdir();
    let relay = Relay::start(dir.path(), &fast(&api));
    let (id, rcpts) = send_sixty(&relay);
    relay.wait_delivered(&id);
    let requests = api.requests();
    let bodies: Vec<Value> = requests.iter().map(|r| r.json()).collect();
    let sizes: Vec<usize> = bodies.iter().map(|b| recipients_of(b).len()).collect();
    assert_eq!(sizes, [50, 10]);
    let mut seen: Vec<String> = bodies.iter().flat_map(recipients_of).collect();
    seen.sort();
    let mut want = rcpts.clone();
    want.sort();
    assert_eq!(seen, want, "each recipient exactly once across the calls");
    assert_call_fields(&bodies[0], &["r0@example.org"], &["r1@example.org"]);
    assert_call_fields(&bodies[1], &["r55@example.org"], &["r56@example.org"]);
    let first: BTreeSet<String> = recipients_of(&bodies[0]).into_iter().collect();
    let expected_first: BTreeSet<String> = rcpts[..50].iter().cloned().collect();
    assert_eq!(first, expected_first);
}

#[test]
fn failed_second_part_does_not_resend_the_first() {
    let api = ApiMock::scripted(
        vec![
            postmark_ok("11111111-1111-4111-8111-111111111111"),
            Answer::text(503, "text/plain", "Service Unavailable"),
        ],
        postmark_ok("22222222-2222-4222-8222-222222222222"),
    );
    let dir = tempdir();
    let relay = Relay::start(dir.path(), &fast(&api));
    let (id, rcpts) = send_sixty(&relay);
    relay.wait_delivered(&id);
    let bodies: Vec<Value> = api.requests().iter().map(|r| r.json()).collect();
    assert_eq!(bodies.len(), 3, "200, 503, then only the failed part again");
    let sizes: Vec<usize> = bodies.iter().map(|b| recipients_of(b).len()).collect();
    assert_eq!(sizes, [50, 10, 10]);
    assert_eq!(recipients_of(&bodies[1]), recipients_of(&bodies[2]));
    let mut sent_ok: Vec<String> = recipients_of(&bodies[0]);
    sent_ok.extend(recipients_of(&bodies[2]));
    sent_ok.sort();
    let mut want = rcpts;
    want.sort();
    assert_eq!(sent_ok, want, "every recipient accepted exactly once");
    // The retried call still shows only its own recipients in To/Cc.
    assert_call_fields(&bodies[2], &["r55@example.org"], &["r56@example.org"]);
}

/// Recipients whose per-recipient state in a spool record is `state`.
fn recipients_in_state(record: &Value, state: &str) -> BTreeSet<String> {
    record["recipients"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|r| r["state"] == state)
        .map(|r| r["address"].as_str().unwrap().to_string())
        .collect()
}

#[test]
fn refused_first_part_still_delivers_the_second_then_dead_letters_the_rest() {
    let api = ApiMock::scripted(
        vec![postmark_error(
            422,
            300,
            "Invalid 'Bcc' address: 'r7@example.org'.",
        )],
        postmark_ok("55555555-5555-4555-8555-555555555555"),
    );
    let dir = tempdir();
    let relay = Relay::start(dir.path(), &fast(&api));
    let (id, rcpts) = send_sixty(&relay);
    wait_failed(&relay, &id);
    let failed = read_json(&relay.spool().join("failed").join(format!("{id}.json")));
    let bodies: Vec<Value> = api.requests().iter().map(|r| r.json()).collect();
    assert_eq!(bodies.len(), 2, "both parts tried once, nothing retried");
    let delivered = recipients_in_state(&failed, "accepted");
    assert_eq!(
        delivered,
        recipients_of(&bodies[1])
            .into_iter()
            .collect::<BTreeSet<_>>()
    );
    assert_eq!(delivered.len(), 10);
    assert_eq!(failed["failure"]["code"], "300");
    let reason = failed["failure"]["reason"].as_str().unwrap();
    assert!(
        reason.contains("refused for 50 recipients")
            && reason.contains("already accepted for 10 of 60"),
        "{reason}"
    );
    assert_eq!(rcpts.len(), 60);
}

#[test]
fn refused_part_is_not_sent_again_when_another_part_is_retried() {
    let api = ApiMock::scripted(
        vec![
            postmark_error(
                406,
                406,
                "You tried to send to recipient(s) that have been marked as inactive.",
            ),
            Answer::text(503, "text/plain", "Service Unavailable"),
        ],
        postmark_ok("66666666-6666-4666-8666-666666666666"),
    );
    let dir = tempdir();
    let relay = Relay::start(dir.path(), &fast(&api));
    let (id, _) = send_sixty(&relay);
    wait_failed(&relay, &id);
    let bodies: Vec<Value> = api.requests().iter().map(|r| r.json()).collect();
    let sizes: Vec<usize> = bodies.iter().map(|b| recipients_of(b).len()).collect();
    assert_eq!(
        sizes,
        [50, 10, 10],
        "refused 50 once; the other 10 retried alone"
    );
    let failed = read_json(&relay.spool().join("failed").join(format!("{id}.json")));
    assert_eq!(failed["failure"]["code"], "406");
    assert_eq!(recipients_in_state(&failed, "refused").len(), 50);
    assert_eq!(recipients_in_state(&failed, "accepted").len(), 10);
}

#[test]
fn recovers_after_api_was_unreachable() {
    // A port where nothing listens yet: reserve it, then free it.
    let addr = {
        let probe = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        probe.local_addr().unwrap()
    };
    let dir = tempdir();
    let relay = Relay::start(dir.path(), &config(&format!("http://{addr}"), "", ""));
    let id = relay.send_simple("unreachable", &["rcpt@example.org"]);
    relay.wait_log("cannot connect to the API", 20);
    assert!(relay.queued_ids().len() == 1);

    let api = ApiMock::start_on(
        addr,
        api_mock::sequence(vec![], postmark_ok("3c2b1a09-8f7e-4d6c-9b5a-493827160504")),
    );
    relay.wait_delivered(&id);
    let requests = api.requests();
    assert_eq!(requests.len(), 1);
    assert_eq!(requests[0].json()["Subject"], "unreachable");
}

#[test]
fn rate_limit_is_a_ceiling_at_the_mock() {
    const RATE: usize = 5;
    const MESSAGES: usize = 15;
    let api = ApiMock::scripted(vec![], postmark_ok("44444444-4444-4444-8444-444444444444"));
    let dir = tempdir();
    // One call per message (no batches): this is the pace of `/email` calls.
    let relay = Relay::start(
        dir.path(),
        &config(
            &api.url(),
            "",
            &format!("rate_limit = {RATE}\nconcurrency = 8"),
        )
        .env("POSTRELAY_POSTMARK__BATCH_SIZE", "1"),
    );
    let mut c = relay.session();
    for i in 0..MESSAGES {
        let r = c.send_mail(
            "sender@example.com",
            &["rcpt@example.org"],
            &simple_message(&format!("paced-{i}")),
        );
        assert!(r.starts_with("250 2.0.0"), "{r}");
    }
    let mut arrivals: Vec<Instant> = api
        .wait_for_requests(MESSAGES, 30)
        .iter()
        .map(|r| r.at)
        .collect();
    arrivals.sort();
    relay.wait_for("an empty queue", 20, || relay.queued_ids().is_empty());
    assert_eq!(api.count(), MESSAGES);

    // Arrival instants at the mock carry a little noise that the relay does
    // not control (timer wake-up, scheduling, loopback I/O): a perfectly
    // paced relay puts calls 1 and N+1 exactly one second apart, and a few
    // ms of jitter may show them as 998 ms apart; on a machine whose cores
    // are busy with other test binaries, one late wake-up was measured at
    // 21 ms (six calls in 989 ms, each gap paced). A burst, the failure this
    // test exists for, puts calls milliseconds apart. So a window here is
    // one second minus JITTER long.
    const JITTER: Duration = Duration::from_millis(30);
    let window = Duration::from_secs(1) - JITTER;
    let max_in_window = (0..arrivals.len())
        .map(|i| {
            arrivals[i..]
                .iter()
                .take_while(|t| **t - arrivals[i] < window)
                .count()
        })
        .max()
        .unwrap();
    let tightest = arrivals
        .windows(RATE + 1)
        .map(|w| w[RATE] - w[0])
        .min()
        .unwrap();
    let span = *arrivals.last().unwrap() - arrivals[0];
    println!(
        "rate_limit = {RATE}: max {max_in_window} calls in any 1 s window \
         (-{JITTER:?} jitter allowance); tightest span of {} consecutive calls \
         {tightest:?}; {MESSAGES} calls over {span:?}",
        RATE + 1
    );
    assert!(
        max_in_window <= RATE,
        "{max_in_window} calls within one second (rate_limit = {RATE})"
    );
}

/// CPU time (user + system) the process has used, in clock ticks (1/100 s).
fn cpu_ticks(pid: u32) -> u64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).expect("proc stat");
    let fields: Vec<&str> = stat[stat.rfind(')').unwrap() + 2..]
        .split_whitespace()
        .collect();
    // utime and stime are fields 14 and 15 of stat(5), 12 and 13 after the name.
    fields[11].parse::<u64>().unwrap() + fields[12].parse::<u64>().unwrap()
}

#[test]
fn waits_without_spinning_while_every_worker_is_busy() {
    // One worker, a slow API, and a backlog that is already due: the relay
    // has nothing to do until the call returns, and must not poll meanwhile.
    let api = ApiMock::scripted(
        vec![],
        postmark_ok("99999999-9999-4999-8999-999999999999").after(Duration::from_secs(4)),
    );
    let dir = tempdir();
    let relay = Relay::start(dir.path(), &config(&api.url(), "", "concurrency = 1"));
    let mut c = relay.session();
    for i in 0..10 {
        let r = c.send_mail(
            "sender@example.com",
            &["rcpt@example.org"],
            &simple_message(&format!("backlog-{i}")),
        );
        assert!(r.starts_with("250 2.0.0"), "{r}");
    }
    c.cmd("QUIT", "221");
    api.wait_for_requests(1, 20);
    let pid = relay.child.id();
    let before = cpu_ticks(pid);
    // A measuring window, not a wait for an event: the first call is held
    // for 4 s by the API, so for these 2 s the daemon should be asleep.
    std::thread::sleep(Duration::from_secs(2));
    let used = cpu_ticks(pid) - before;
    println!("CPU used while waiting on the API: {used} ticks of 10 ms in 2 s");
    assert_eq!(api.count(), 1, "concurrency = 1 allows one call in flight");
    // A scheduler that re-polls the due backlog every timer tick used ~11
    // ticks here; an idle one uses 0.
    assert!(
        used <= 3,
        "{used} ticks of CPU while idle: the scheduler is spinning"
    );
}

/// Sends `msg` and expects `prefix`; then proves the session is still
/// usable and that nothing of the refused message ever reaches the API: a
/// good message on the same connection is the only request the mock sees.
fn refused_at_data(relay: &Relay, api: &ApiMock, msg: &str, prefix: &str) -> String {
    let mut c = relay.session();
    let r = c.send_mail("sender@example.com", &["rcpt@example.org"], msg);
    assert!(r.starts_with(prefix), "expected {prefix:?}, got {r:?}");
    assert!(relay.queued_ids().is_empty(), "refused message was queued");
    let ok = c.send_mail(
        "sender@example.com",
        &["rcpt@example.org"],
        &simple_message("after-refusal"),
    );
    assert!(ok.starts_with("250 2.0.0"), "{ok}");
    c.cmd("QUIT", "221");
    relay.wait_delivered(&queued_id(&ok));
    let requests = api.requests();
    assert_eq!(requests.len(), 1, "only the good message reaches the API");
    assert_eq!(requests[0].json()["Subject"], "after-refusal");
    r
}

const TWO_TAGS: &str = "From: sender@example.com\r\nTo: rcpt@example.org\r\n\
    Subject: two tags\r\nX-PM-Tag: first-tag\r\nX-PM-Tag: second-tag\r\n\r\nbody\r\n";

#[test]
fn two_tags_are_refused_at_data_with_550_naming_the_feature() {
    let api = ApiMock::scripted(vec![], postmark_ok("55555555-5555-4555-8555-555555555555"));
    let dir = tempdir();
    let relay = Relay::start(dir.path(), &fast(&api));
    let r = refused_at_data(&relay, &api, TWO_TAGS, "550 5.7.1");
    assert!(r.contains("X-PM-Tag"), "{r}");
}

#[test]
fn two_tags_with_ignore_unsupported_features_send_the_first_tag() {
    let api = ApiMock::scripted(vec![], postmark_ok("66666666-6666-4666-8666-666666666666"));
    let dir = tempdir();
    let relay = Relay::start(
        dir.path(),
        &config(&api.url(), "ignore_unsupported_features = true", ""),
    );
    let mut c = relay.session();
    let r = c.send_mail("sender@example.com", &["rcpt@example.org"], TWO_TAGS);
    assert!(r.starts_with("250 2.0.0"), "{r}");
    relay.wait_delivered(&queued_id(&r));
    let body = api.requests()[0].json();
    assert_eq!(body["Tag"], "first-tag");
    assert!(!body.to_string().contains("second-tag"), "{body:#}");
    assert!(
        relay.log().contains("X-PM-Tag"),
        "the dropped tag is logged"
    );
}

#[test]
fn forbidden_exe_attachment_is_refused_at_data_with_554() {
    let api = ApiMock::scripted(vec![], postmark_ok("77777777-7777-4777-8777-777777777777"));
    let dir = tempdir();
    let relay = Relay::start(dir.path(), &fast(&api));
    let msg = "From: sender@example.com\r\nTo: rcpt@example.org\r\nSubject: setup\r\n\
        MIME-Version: 1.0\r\nContent-Type: multipart/mixed; boundary=\"b1\"\r\n\r\n\
        --b1\r\nContent-Type: text/plain\r\n\r\nRun this.\r\n\
        --b1\r\nContent-Type: application/octet-stream\r\n\
        Content-Disposition: attachment; filename=\"setup.exe\"\r\n\
        Content-Transfer-Encoding: base64\r\n\r\nTVqQAAMAAAAEAAAA//8AALgAAAA=\r\n--b1--\r\n";
    let r = refused_at_data(&relay, &api, msg, "554 5.6.0");
    assert!(r.contains("setup.exe") || r.contains(".exe"), "{r}");
}

#[test]
fn eleven_metadata_fields_are_refused_at_data_with_554() {
    let api = ApiMock::scripted(vec![], postmark_ok("88888888-8888-4888-8888-888888888888"));
    let dir = tempdir();
    let relay = Relay::start(dir.path(), &fast(&api));
    let fields: String = (0..11)
        .map(|i| format!("X-PM-Metadata-key{i}: value{i}\r\n"))
        .collect();
    let msg = format!(
        "From: sender@example.com\r\nTo: rcpt@example.org\r\nSubject: meta\r\n{fields}\r\nbody\r\n"
    );
    let r = refused_at_data(&relay, &api, &msg, "554 5.6.0");
    assert!(r.contains("Metadata"), "{r}");
}

#[test]
fn gives_up_after_max_age() {
    let api = ApiMock::scripted(
        vec![],
        Answer::text(
            503,
            "text/html",
            "<html>503 Service Temporarily Unavailable</html>",
        ),
    );
    let dir = tempdir();
    let relay = Relay::start(dir.path(), &config(&api.url(), "", "max_age = \"1s\""));
    let id = relay.send_simple("too-old", &["rcpt@example.org"]);
    let failure = wait_failed(&relay, &id);
    let reason = failure["reason"].as_str().unwrap();
    assert!(reason.contains("gave up"), "{reason}");
    assert!(
        reason.contains("HTTP 503") && reason.contains("Service Temporarily Unavailable"),
        "the last error is kept: {reason}"
    );
    assert!(api.count() >= 2, "it retried before giving up");
}
