//! The API fault matrix, end to end: the real binary against a scripted
//! Postmark, one test per fault class, each proving where the message ends
//! (delivered once, dead-lettered or held) and how many calls it took.
//!
//! Classes covered elsewhere (not repeated here): 503 with an HTML page and
//! 429 with and without `Retry-After` (`delivery_postmark.rs`:
//! `retries_on_503_then_delivers`, `retries_on_429_then_delivers`),
//! connection refused until the API comes up on the same port
//! (`recovers_after_api_was_unreachable`), 401 fixed by a restart with a new
//! token (`holds_mail_on_401_and_delivers_after_restart_with_fixed_token`),
//! permanent 422s (`dead_letters_*`), per-element batch failures (the batch
//! tests).
//!
//! Every responder here answers both `POST /email` and `POST /email/batch`
//! (one result per element), so the matrix holds whether the daemon sends a
//! lone message or a batch.

mod support;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;
use serde_json::{Value, json};
use support::api_mock::{Answer, ApiMock, Received, postmark_error};
use support::{Relay, Setup, ok_body, subjects, tempdir};

const TOKEN: &str = "pm-server-token-1234";

/// A Postmark config pointing at `api`, retries within 100ms..500ms.
fn config(api: &str, extra: &str) -> Setup {
    Setup::toml(&format!(
        "backend = \"postmark\"\n\
         [postmark]\nserver_token = \"{TOKEN}\"\napi_url = \"{api}\"\n\
         [delivery]\nretry_initial = \"100ms\"\nretry_max = \"500ms\"\n{extra}"
    ))
}

/// A scripted Postmark that records which subjects it accepted.
struct Api {
    mock: ApiMock,
    accepted: Arc<Mutex<Vec<String>>>,
}

impl Api {
    /// `fault(request, call number)` answers a fault, or `None` for success.
    fn start(mut fault: impl FnMut(&Received, usize) -> Option<Answer> + Send + 'static) -> Api {
        let accepted = Arc::new(Mutex::new(Vec::new()));
        let ledger = accepted.clone();
        let mut calls = 0;
        let mock = ApiMock::start(move |req| {
            calls += 1;
            fault(req, calls - 1).unwrap_or_else(|| {
                let body = req.json();
                ledger.lock().unwrap().extend(subjects(&body));
                Answer::json(200, ok_body(&req.path, &body))
            })
        });
        Api { mock, accepted }
    }

    /// The first `script.len()` calls get the script, later ones succeed.
    fn scripted(script: Vec<Answer>) -> Api {
        Api::start(move |_, n| script.get(n).cloned())
    }

    fn accepted(&self, subject: &str) -> usize {
        self.accepted
            .lock()
            .unwrap()
            .iter()
            .filter(|s| *s == subject)
            .count()
    }

    /// Calls that carried `subject`.
    fn calls_with(&self, subject: &str) -> usize {
        self.mock
            .requests()
            .iter()
            .filter(|r| subjects(&r.json()).iter().any(|s| s == subject))
            .count()
    }
}

#[test]
fn a_burst_of_5xx_answers_is_retried_until_the_message_is_delivered_once() {
    let api = Api::scripted(vec![
        postmark_error(500, 0, "Internal Server Error"),
        Answer::text(502, "text/plain", "Bad Gateway"),
        Answer::text(503, "text/html", "<html>Service Unavailable</html>"),
        Answer::text(504, "text/plain", ""),
        postmark_error(500, 0, "Internal Server Error"),
    ]);
    let dir = tempdir();
    let relay = Relay::start(dir.path(), &config(&api.mock.url(), ""));
    let id = relay.send_simple("burst-5xx", &["rcpt@example.org"]);
    relay.wait_delivered(&id);
    assert_eq!(api.mock.count(), 6, "five faults, then one success");
    assert_eq!(api.accepted("burst-5xx"), 1);
    assert_eq!(relay.log().matches("will retry").count(), 5);
}

#[test]
fn a_200_with_an_html_body_is_not_taken_for_delivery_and_is_retried() {
    // A captive proxy's page: the call's fate is unknown, so it is retried.
    let page = format!(
        "<html><body><h1>Welcome to the proxy</h1>{}<p>page-end</p></body></html>",
        "<p>terms</p>".repeat(200)
    );
    let api = Api::scripted(vec![Answer::text(200, "text/html", &page)]);
    let dir = tempdir();
    let relay = Relay::start(dir.path(), &config(&api.mock.url(), ""));
    let id = relay.send_simple("html-200", &["rcpt@example.org"]);
    relay.wait_delivered(&id);
    assert_eq!(api.mock.count(), 2);
    assert_eq!(api.accepted("html-200"), 1);
    let log = relay.log();
    assert!(log.contains("not Postmark's JSON (HTTP 200"), "{log}");
    assert!(
        log.contains("duplicates the message if Postmark did accept it"),
        "{log}"
    );
    assert!(
        !log.contains("page-end"),
        "the page is cut, not logged whole"
    );
}

#[test]
fn a_401_holds_the_mail_and_the_gate_probe_delivers_it_once_the_token_works_again() {
    // The token is re-enabled at Postmark: no restart, the hold's probe finds it.
    let api = Api::scripted(vec![postmark_error(
        401,
        10,
        "Request does not contain a valid Server token.",
    )]);
    let dir = tempdir();
    let relay = Relay::start(dir.path(), &config(&api.mock.url(), ""));
    let id = relay.send_simple("401-then-fixed", &["rcpt@example.org"]);
    relay.wait_delivered(&id);
    assert!(
        relay
            .log()
            .contains("message held until the operator fixes it"),
        "{}",
        relay.log()
    );
    assert_eq!(api.mock.count(), 2, "the rejected call and the probe");
    assert_eq!(api.accepted("401-then-fixed"), 1);
    assert!(!relay.log().contains(TOKEN), "token in the log");
}

#[test]
fn a_retry_after_of_an_hour_for_one_credential_leaves_the_others_flowing() {
    let api = Api::start(|req, _| {
        (req.header("X-Postmark-Server-Token") == Some("cron-token")).then(|| {
            postmark_error(429, 429, "Rate limit exceeded.").with_header("Retry-After", "3600")
        })
    });
    let dir = tempdir();
    std::fs::write(dir.path().join("pw"), "letmein99\n").unwrap();
    let users = format!(
        "[smtp]\nauth_failure_delay = \"10ms\"\n\
         [[users]]\nname = \"cron\"\npassword_file = \"{pw}\"\nserver_token = \"cron-token\"\n\
         [[users]]\nname = \"billing\"\npassword_file = \"{pw}\"\nserver_token = \"billing-token\"\n",
        pw = dir.path().join("pw").display(),
    );
    let relay = Relay::start(dir.path(), &config(&api.mock.url(), &users));
    send_as(&relay, "cron", "from-cron");
    api.mock.wait_for_requests(1, 20);
    send_as(&relay, "billing", "from-billing");
    relay.send_simple("from-global", &["rcpt@example.org"]);
    // The throttled answer slows every call for at most 10 s; then the
    // other credentials' mail goes while cron's waits its hour.
    relay.wait_for("the other credentials' mail delivered", 30, || {
        api.accepted("from-billing") == 1 && api.accepted("from-global") == 1
    });
    relay.wait_for("only cron's message left", 10, || {
        relay.queued_ids().len() == 1
    });
    assert_eq!(
        api.calls_with("from-cron"),
        1,
        "no second call within the hour"
    );
    assert_eq!(api.accepted("from-cron"), 0);
    assert!(relay.files_in("failed", "json").is_empty());
    let queued = relay
        .queued(&relay.queued_ids()[0])
        .expect("cron's message")
        .0
        .to_string();
    assert!(
        queued.contains("from-cron") || queued.contains("cron"),
        "{queued}"
    );
}

/// Sends one message after AUTH PLAIN as `user` (loopback: no TLS needed).
fn send_as(relay: &Relay, user: &str, subject: &str) {
    let mut c = relay.session();
    let plain = B64.encode(format!("\0{user}\0letmein99"));
    c.cmd(&format!("AUTH PLAIN {plain}"), "235");
    let r = c.send_mail(
        "sender@example.com",
        &["rcpt@example.org"],
        &support::simple_message(subject),
    );
    assert!(r.starts_with("250 2.0.0"), "{r}");
    c.cmd("QUIT", "221");
}

#[test]
fn a_call_hanging_past_the_client_timeout_is_retried_and_may_duplicate() {
    // The client gives a call 30 s; the first answer would take 40.
    let api = Api::scripted(vec![
        Answer::json(200, json!({"ErrorCode": 0, "Message": "OK"})).after(Duration::from_secs(40)),
    ]);
    let dir = tempdir();
    let relay = Relay::start(dir.path(), &config(&api.mock.url(), ""));
    let id = relay.send_simple("hang", &["rcpt@example.org"]);
    api.mock.wait_for_requests(2, 50);
    relay.wait_delivered(&id);
    // The API saw the message twice: had the slow call gone through, it
    // would arrive twice (no idempotency key exists).
    assert_eq!(api.calls_with("hang"), 2);
    assert_eq!(api.accepted("hang"), 1);
    assert!(relay.log().contains("will retry"), "{}", relay.log());
}

/// A raw HTTP/1.1 API: reads each whole request, closes the connection
/// without a byte of answer for the first `drops` requests, answers the
/// later ones like Postmark (both `/email` and `/email/batch`). Returns the
/// address and the subjects of every request it read, with whether it
/// answered.
/// What a raw API read: each request's subjects, and whether it answered.
type Seen = Arc<Mutex<Vec<(Vec<String>, bool)>>>;

fn closing_api(drops: usize) -> (SocketAddr, Seen) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let seen = Arc::new(Mutex::new(Vec::new()));
    let log = seen.clone();
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(stream) = stream else { return };
            let log = log.clone();
            std::thread::spawn(move || serve_or_close(stream, drops, &log));
        }
    });
    (addr, seen)
}

fn serve_or_close(stream: TcpStream, drops: usize, log: &Mutex<Vec<(Vec<String>, bool)>>) {
    let mut reader = BufReader::new(stream.try_clone().unwrap());
    let mut out = stream;
    loop {
        let (mut path, mut length) = (String::new(), 0usize);
        loop {
            let mut line = String::new();
            if reader.read_line(&mut line).unwrap_or(0) == 0 {
                return;
            }
            let line = line.trim_end();
            if line.is_empty() {
                break;
            }
            if path.is_empty() {
                path = line.split(' ').nth(1).unwrap_or_default().to_string();
            }
            if let Some((name, value)) = line.split_once(':')
                && name.eq_ignore_ascii_case("content-length")
            {
                length = value.trim().parse().unwrap_or(0);
            }
        }
        let mut body = vec![0; length];
        if reader.read_exact(&mut body).is_err() {
            return;
        }
        let body: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
        let mut log = log.lock().unwrap();
        let answer = log.len() >= drops;
        log.push((subjects(&body), answer));
        drop(log);
        if !answer {
            return; // closes the socket: the request was read, no answer
        }
        let text = ok_body(&path, &body).to_string();
        let head = format!(
            "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n",
            text.len()
        );
        if out.write_all(head.as_bytes()).is_err() || out.write_all(text.as_bytes()).is_err() {
            return;
        }
    }
}

#[test]
fn a_connection_closed_without_an_answer_is_retried_and_may_duplicate() {
    let (addr, seen) = closing_api(2);
    let dir = tempdir();
    let relay = Relay::start(dir.path(), &config(&format!("http://{addr}"), ""));
    let id = relay.send_simple("closed", &["rcpt@example.org"]);
    relay.wait_delivered(&id);
    let seen = seen.lock().unwrap().clone();
    let carried: Vec<&(Vec<String>, bool)> = seen
        .iter()
        .filter(|(s, _)| s.iter().any(|s| s == "closed"))
        .collect();
    assert_eq!(
        carried.len(),
        3,
        "two dropped calls, then one answered: {seen:?}"
    );
    assert_eq!(carried.iter().filter(|(_, answered)| *answered).count(), 1);
    assert_eq!(
        relay.log().matches("will retry").count(),
        2,
        "{}",
        relay.log()
    );
}
