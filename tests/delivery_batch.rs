//! Batch delivery to Postmark end to end: the real daemon, real SMTP, and
//! the scripted API answering `/email` and `/email/batch` per message. To
//! make many messages due at once, the API holds its first answer while
//! the only worker waits on it and mail queues up; then it lets go. Each
//! test proves one promise of design.md's "Batching": each element is
//! classified on its own, a failed call retries every message in it, the
//! element / byte / rate caps, split messages, one credential per call, and
//! a lone message goes to `/email`.

mod support;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::Value;
use support::api_mock::{Answer, ApiMock, Received, postmark_messages, postmark_per_message};
use support::{Relay, Setup, queued_id, recipients_of, tempdir};

const TOKEN: &str = "pm-global-token";

/// How many times each recipient was accepted by the API.
type Tally = Arc<Mutex<HashMap<String, usize>>>;

/// Postmark's code for a message: 300 for `invalid@`, 406 for `inactive@`
/// recipients, else 0, counted in `tally`.
fn by_recipient(tally: &Tally) -> impl FnMut(&Value) -> i64 + Send + 'static {
    let tally = tally.clone();
    move |message| {
        let rcpts = recipients_of(message);
        if rcpts.iter().any(|r| r.starts_with("invalid")) {
            return 300;
        }
        if rcpts.iter().any(|r| r.starts_with("inactive")) {
            return 406;
        }
        let mut tally = tally.lock().unwrap();
        for r in rcpts {
            *tally.entry(r).or_default() += 1;
        }
        0
    }
}

/// The API: answers per message, counted in the returned tally.
fn api() -> (ApiMock, Tally) {
    let tally = Tally::default();
    (
        ApiMock::start(postmark_per_message(by_recipient(&tally))),
        tally,
    )
}

/// Postmark at `api` with one worker, no rate limit and fast retries;
/// `postmark` adds keys to that table, `delivery` adds or overrides
/// `[delivery]` keys, one `key = value` per line.
fn config(api: &ApiMock, postmark: &str, delivery: &str) -> Setup {
    let mut keys = std::collections::BTreeMap::from([
        ("concurrency", "1"),
        ("rate_limit", "0"),
        ("retry_initial", "\"100ms\""),
        ("retry_max", "\"500ms\""),
    ]);
    for line in delivery.lines().filter(|l| !l.trim().is_empty()) {
        let (k, v) = line.split_once('=').expect("key = value");
        keys.insert(k.trim(), v.trim());
    }
    let delivery: String = keys.iter().map(|(k, v)| format!("{k} = {v}\n")).collect();
    Setup::toml(&format!(
        "backend = \"postmark\"\n\
         [postmark]\nserver_token = \"{TOKEN}\"\napi_url = \"{}\"\n{postmark}\n\
         [delivery]\n{delivery}",
        api.url()
    ))
}

fn message(subject: &str, to: &str) -> String {
    format!("From: Sender <sender@example.com>\r\nTo: {to}\r\nSubject: {subject}\r\n\r\nHello.\r\n")
}

/// Sends one message per recipient list over one SMTP session; returns the ids.
fn send_all(relay: &Relay, mail: &[(String, Vec<String>)]) -> Vec<String> {
    let mut c = relay.session();
    let ids = mail
        .iter()
        .map(|(body, rcpts)| {
            let rcpts: Vec<&str> = rcpts.iter().map(String::as_str).collect();
            let r = c.send_mail("sender@example.com", &rcpts, body);
            assert!(r.starts_with("250 2.0.0"), "{r}");
            queued_id(&r)
        })
        .collect();
    c.cmd("QUIT", "221");
    ids
}

/// `n` one-recipient messages to `<prefix><i>@example.org`.
fn singles(prefix: &str, n: usize) -> Vec<(String, Vec<String>)> {
    (0..n)
        .map(|i| {
            let to = format!("{prefix}{i}@example.org");
            (message(&format!("{prefix} {i}"), &to), vec![to])
        })
        .collect()
}

/// Holds the API, sends a first message (it goes alone and keeps the only
/// worker waiting), queues `mail` behind it, then lets the API answer.
fn queue_behind_a_slow_answer(
    relay: &Relay,
    api: &ApiMock,
    mail: &[(String, Vec<String>)],
) -> Vec<String> {
    api.hold();
    send_all(relay, &singles("first", 1));
    api.wait_for_requests(1, 10);
    let ids = send_all(relay, mail);
    api.release();
    ids
}

fn wait_queue_empty(relay: &Relay, secs: u64) {
    relay.wait_for("the queue to empty", secs, || relay.queued_ids().is_empty());
}

fn batch_calls(api: &ApiMock) -> Vec<Received> {
    api.requests()
        .into_iter()
        .filter(|r| r.path == "/email/batch")
        .collect()
}

#[test]
fn an_invalid_and_an_inactive_recipient_in_a_batch_of_100_dead_letter_only_those_two() {
    let (api, tally) = api();
    let dir = tempdir();
    let relay = Relay::start(dir.path(), &config(&api, "", ""));
    let mut mail = singles("ok", 98);
    mail.insert(
        40,
        (
            message("bad", "invalid@example.org"),
            vec!["invalid@example.org".into()],
        ),
    );
    mail.insert(
        70,
        (
            message("gone", "inactive@example.org"),
            vec!["inactive@example.org".into()],
        ),
    );

    let ids = queue_behind_a_slow_answer(&relay, &api, &mail);
    wait_queue_empty(&relay, 30);

    let batches = batch_calls(&api);
    let largest = batches.iter().map(|b| postmark_messages(b).len()).max();
    assert!(largest >= Some(50), "the 100 went in batches: {largest:?}");
    let failed = relay.files_in("failed", "json");
    assert_eq!(failed.len(), 2, "{failed:?}");
    for (id, code) in [(&ids[40], "300"), (&ids[70], "406")] {
        let record = support::read_json(&relay.spool().join(format!("failed/{id}.json")));
        assert_eq!(record["failure"]["code"], code, "{record}");
    }
    let tally = tally.lock().unwrap();
    assert_eq!(tally.len(), 99, "98 plus the first");
    assert!(tally.values().all(|n| *n == 1), "{tally:?}");
}

#[test]
fn a_5xx_for_the_whole_batch_retries_every_message_once_more_without_duplicates() {
    let tally = Tally::default();
    let mut per_message = postmark_per_message(by_recipient(&tally));
    let mut failed_once = false;
    let api = ApiMock::start(move |r| {
        if r.path == "/email/batch" && !failed_once {
            failed_once = true;
            return Answer::text(503, "text/plain", "Service Unavailable");
        }
        per_message(r)
    });
    let dir = tempdir();
    let relay = Relay::start(dir.path(), &config(&api, "", ""));

    queue_behind_a_slow_answer(&relay, &api, &singles("ok", 30));
    wait_queue_empty(&relay, 30);

    assert!(
        batch_calls(&api).len() >= 2,
        "the failed batch, then the retry"
    );
    assert!(relay.files_in("failed", "json").is_empty());
    let tally = tally.lock().unwrap();
    assert_eq!(tally.len(), 31);
    assert!(tally.values().all(|n| *n == 1), "{tally:?}");
}

#[test]
fn a_small_batch_size_caps_every_call() {
    let (api, tally) = api();
    let dir = tempdir();
    let relay = Relay::start(dir.path(), &config(&api, "batch_size = 7", ""));

    queue_behind_a_slow_answer(&relay, &api, &singles("ok", 30));
    wait_queue_empty(&relay, 30);

    let sizes: Vec<usize> = batch_calls(&api)
        .iter()
        .map(|b| postmark_messages(b).len())
        .collect();
    assert!(sizes.iter().all(|n| *n <= 7), "{sizes:?}");
    assert!(sizes.len() >= 4, "30 messages in calls of 7: {sizes:?}");
    assert_eq!(tally.lock().unwrap().len(), 31);
}

#[test]
fn no_batch_call_body_is_over_50_mb() {
    let (api, tally) = api();
    let dir = tempdir();
    let relay = Relay::start(dir.path(), &config(&api, "", ""));
    // Eight messages with a 6 MB attachment: about 8 MB of JSON each, six
    // fit in 50 MB.
    let attachment = base64_lines(6 << 20);
    let mail: Vec<(String, Vec<String>)> = (0..8)
        .map(|i| {
            let to = format!("big{i}@example.org");
            let body = format!(
                "From: sender@example.com\r\nTo: {to}\r\nSubject: big {i}\r\nMIME-Version: 1.0\r\n\
                 Content-Type: multipart/mixed; boundary=b\r\n\r\n--b\r\nContent-Type: text/plain\r\n\r\nsee attached\r\n\
                 --b\r\nContent-Type: application/octet-stream; name=data.dat\r\nContent-Disposition: attachment; filename=data.dat\r\n\
                 Content-Transfer-Encoding: base64\r\n\r\n{attachment}--b--\r\n"
            );
            (body, vec![to])
        })
        .collect();

    queue_behind_a_slow_answer(&relay, &api, &mail);
    wait_queue_empty(&relay, 120);

    let batches = batch_calls(&api);
    assert!(!batches.is_empty(), "the big messages went in batches");
    for b in &batches {
        assert!(b.body.len() <= 50 * 1024 * 1024, "{} bytes", b.body.len());
    }
    let sizes: Vec<usize> = batches.iter().map(|b| postmark_messages(b).len()).collect();
    assert!(batches.len() >= 2, "{sizes:?}");
    assert_eq!(tally.lock().unwrap().len(), 9);
}

/// `bytes` of data as base64 in 76-character lines.
fn base64_lines(bytes: usize) -> String {
    use base64::Engine as _;
    let data: Vec<u8> = (0..bytes).map(|i| (i * 7 % 251) as u8).collect();
    let text = base64::engine::general_purpose::STANDARD.encode(data);
    let mut out = String::with_capacity(text.len() + text.len() / 38);
    for chunk in text.as_bytes().chunks(76) {
        out.push_str(std::str::from_utf8(chunk).unwrap());
        out.push_str("\r\n");
    }
    out
}

#[test]
fn split_and_single_messages_in_one_batch_reach_every_recipient_once() {
    let (api, tally) = api();
    let dir = tempdir();
    let relay = Relay::start(dir.path(), &config(&api, "", ""));
    let mut mail = singles("one", 5);
    for m in 0..3 {
        let rcpts: Vec<String> = (0..60)
            .map(|i| format!("split{m}-{i}@example.org"))
            .collect();
        mail.push((message(&format!("split {m}"), &rcpts[0]), rcpts));
    }

    queue_behind_a_slow_answer(&relay, &api, &mail);
    wait_queue_empty(&relay, 30);

    let batches = batch_calls(&api);
    assert!(
        batches.iter().any(|b| postmark_messages(b).len() >= 8),
        "parts and singles shared a call"
    );
    let tally = tally.lock().unwrap();
    assert_eq!(tally.len(), 1 + 5 + 3 * 60);
    assert!(tally.values().all(|n| *n == 1), "{tally:?}");
}

#[test]
fn with_rate_limit_no_second_at_the_api_holds_more_than_that_many_messages() {
    const RATE: usize = 10;
    let (api, tally) = api();
    let dir = tempdir();
    let relay = Relay::start(
        dir.path(),
        &config(&api, "", &format!("rate_limit = {RATE}\nconcurrency = 4")),
    );

    queue_behind_a_slow_answer(&relay, &api, &singles("ok", 35));
    wait_queue_empty(&relay, 30);

    assert_eq!(tally.lock().unwrap().len(), 36);
    let calls: Vec<(std::time::Instant, usize)> = api
        .requests()
        .iter()
        .map(|r| (r.at, postmark_messages(r).len()))
        .collect();
    assert!(calls.iter().all(|c| c.1 <= RATE), "{calls:?}");
    assert!(
        calls.iter().any(|c| c.1 > 1),
        "batches were sent: {calls:?}"
    );
    for (start, _) in &calls {
        let in_window: usize = calls
            .iter()
            .filter(|(t, _)| *t >= *start && *t < *start + Duration::from_secs(1))
            .map(|c| c.1)
            .sum();
        assert!(
            in_window <= RATE,
            "{in_window} messages within one second: {calls:?}"
        );
    }
}

#[test]
fn a_batch_call_carries_one_credential_only() {
    let (api, _tally) = api();
    let dir = tempdir();
    std::fs::write(dir.path().join("pw"), "letmein99\n").unwrap();
    let pw = dir.path().join("pw");
    let users = format!(
        "[[users]]\nname = \"billing\"\npassword_file = \"{pw}\"\nserver_token = \"billing-token\"\n\
         [[users]]\nname = \"cron\"\npassword_file = \"{pw}\"\nserver_token = \"cron-token\"\n\
         [[users]]\nname = \"plain\"\npassword_file = \"{pw}\"\n",
        pw = pw.display()
    );
    let mut setup = config(&api, "", "");
    setup.toml = format!(
        "{}[smtp]\nauth_failure_delay = \"10ms\"\n{users}",
        setup.toml
    );
    let relay = Relay::start(dir.path(), &setup);

    api.hold();
    send_all(&relay, &singles("first", 1));
    api.wait_for_requests(1, 10);
    // Each user's mail, and the global one's, with the user in the subject.
    for user in ["billing", "cron", "plain", "global"] {
        let mut c = relay.session();
        if user != "global" {
            use base64::Engine as _;
            let plain =
                base64::engine::general_purpose::STANDARD.encode(format!("\0{user}\0letmein99"));
            c.cmd(&format!("AUTH PLAIN {plain}"), "235");
        }
        for i in 0..4 {
            let r = c.send_mail(
                "sender@example.com",
                &[&format!("{user}{i}@example.org")],
                &message(&format!("{user} {i}"), "x@example.org"),
            );
            assert!(r.starts_with("250 2.0.0"), "{r}");
        }
        c.cmd("QUIT", "221");
    }
    api.release();
    wait_queue_empty(&relay, 30);

    let batches = batch_calls(&api);
    assert!(batches.len() >= 3, "{} batch calls", batches.len());
    for b in &batches {
        let token = b.header("x-postmark-server-token").unwrap();
        let want = |subject: &str| match subject.split(' ').next().unwrap() {
            "billing" => "billing-token",
            "cron" => "cron-token",
            // A user without a token of their own sends with the global one.
            _ => TOKEN,
        };
        for m in postmark_messages(b) {
            let subject = m["Subject"].as_str().unwrap().to_string();
            assert_eq!(token, want(&subject), "{subject} went with {token}");
        }
    }
}

#[test]
fn a_lone_message_goes_to_email_and_batch_size_1_never_batches() {
    let (api, tally) = api();
    let dir = tempdir();
    let relay = Relay::start(dir.path(), &config(&api, "batch_size = 1", ""));

    queue_behind_a_slow_answer(&relay, &api, &singles("ok", 10));
    wait_queue_empty(&relay, 30);

    let paths: Vec<String> = api.requests().iter().map(|r| r.path.clone()).collect();
    assert_eq!(paths.len(), 11);
    assert!(paths.iter().all(|p| p == "/email"), "{paths:?}");
    assert_eq!(tally.lock().unwrap().len(), 11);

    // With batches on, one message due alone goes to /email too.
    let (lone_api, _) = self::api();
    let dir = tempdir();
    let relay = Relay::start(dir.path(), &config(&lone_api, "", ""));
    send_all(&relay, &singles("alone", 1));
    wait_queue_empty(&relay, 10);
    let paths: Vec<String> = lone_api.requests().iter().map(|r| r.path.clone()).collect();
    assert_eq!(paths, ["/email"]);
}

#[test]
fn trace_metadata_stamps_the_spool_id_into_every_request() {
    let (api, _) = api();
    let dir = tempdir();
    let relay = Relay::start(dir.path(), &config(&api, "trace_metadata = true", ""));
    let mut mail = singles("ok", 3);
    mail[1].0 = mail[1].0.replacen(
        "\r\n\r\n",
        "\r\nX-PM-Metadata-postrelay-id: forged\r\nX-PM-Metadata-order: 42\r\n\r\n",
        1,
    );

    let ids = queue_behind_a_slow_answer(&relay, &api, &mail);
    wait_queue_empty(&relay, 30);

    let sent: Vec<Value> = api.requests().iter().flat_map(postmark_messages).collect();
    assert_eq!(sent.len(), 4);
    assert!(!batch_calls(&api).is_empty());
    for (i, id) in ids.iter().enumerate() {
        let m = sent
            .iter()
            .find(|m| m["Subject"] == format!("ok {i}"))
            .expect("sent");
        assert_eq!(m["Metadata"]["postrelay-id"], id.as_str(), "{m}");
    }
    let own = sent.iter().find(|m| m["Subject"] == "ok 1").unwrap();
    assert_eq!(
        own["Metadata"]["order"], "42",
        "the message's own metadata stays"
    );
}
