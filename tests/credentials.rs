//! Credentials per message, end to end against the scripted API: each
//! user's own token and a passthrough token reach the API in
//! `X-Postmark-Server-Token`; a rejected one (the global one too) holds
//! only its own mail and shows in `/readyz` by name, never by value; a
//! user's own `message_stream` is the default stream of their mail.

mod support;

use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;
use support::api_mock::{ApiMock, postmark_error, postmark_ok};
use support::{Relay, Setup, http_get, simple_message, tempdir};

/// Sends one message after AUTH PLAIN as `user` / `password` (loopback: no TLS needed).
fn send_as(relay: &Relay, user: &str, password: &str, subject: &str) {
    send_message_as(relay, user, password, &simple_message(subject));
}

fn send_message_as(relay: &Relay, user: &str, password: &str, message: &str) {
    let mut c = relay.session();
    let plain = B64.encode(format!("\0{user}\0{password}"));
    c.cmd(&format!("AUTH PLAIN {plain}"), "235");
    let r = c.send_mail("sender@example.com", &["rcpt@example.org"], message);
    assert!(r.starts_with("250 2.0.0"), "{r}");
    c.cmd("QUIT", "221");
}

#[test]
fn each_message_goes_with_its_own_credential_and_a_rejected_one_holds_only_its_mail() {
    let api = ApiMock::start(|req| match req.header("X-Postmark-Server-Token") {
        Some("cron-token-rejected") => {
            postmark_error(401, 10, "Request does not contain a valid Server token.")
        }
        _ => postmark_ok("b7bc2f4a-e38e-4336-af7d-e6c392c2f817"),
    });
    let dir = tempdir();
    let toml = format!(
        "backend = \"postmark\"\n\
         [smtp]\nauth_passthrough = true\nauth_failure_delay = \"10ms\"\n\
         [postmark]\nserver_token = \"global-token\"\napi_url = \"{}\"\n\
         [delivery]\nretry_initial = \"1h\"\nretry_max = \"2h\"\n\
         [[users]]\nname = \"billing\"\npassword_file = \"{pw}\"\nserver_token = \"billing-token-good\"\n\
         [[users]]\nname = \"cron\"\npassword_file = \"{pw}\"\nserver_token = \"cron-token-rejected\"\n",
        api.url(),
        pw = dir.path().join("pw").display(),
    );
    std::fs::write(dir.path().join("pw"), "letmein99\n").unwrap();
    let relay = Relay::start(
        dir.path(),
        &Setup::toml(&toml).env("POSTRELAY_HTTP__LISTEN", "127.0.0.1:0"),
    );
    let http = relay.http.unwrap();

    send_as(&relay, "cron", "letmein99", "from-cron");
    api.wait_for_requests(1, 20);
    relay.wait_for("the held credential in /readyz", 20, || {
        http_get(http, "/readyz").1.contains("user cron")
    });
    send_as(&relay, "billing", "letmein99", "from-billing");
    send_as(&relay, "app", "pass-through-token-0001", "from-passthrough");
    relay.send_simple("from-loopback", &["rcpt@example.org"]);
    let requests = api.wait_for_requests(4, 20);
    let token_of = |subject: &str| {
        requests
            .iter()
            .find(|r| r.json()["Subject"] == subject)
            .and_then(|r| r.header("X-Postmark-Server-Token").map(str::to_string))
            .unwrap_or_else(|| panic!("no request for {subject}"))
    };
    assert_eq!(token_of("from-cron"), "cron-token-rejected");
    assert_eq!(token_of("from-billing"), "billing-token-good");
    assert_eq!(token_of("from-passthrough"), "pass-through-token-0001");
    assert_eq!(token_of("from-loopback"), "global-token");

    // Only cron's message stays queued, held; the relay stays ready.
    relay.wait_for("three messages delivered and cron's held", 20, || {
        relay.queued_ids().len() == 1 && relay.held_ids().len() == 1
    });
    let (status, body) = http_get(http, "/readyz");
    assert_eq!(status, 200, "{body}");
    assert!(body.contains("user cron"), "{body}");
    assert!(
        !body.contains("cron-token-rejected"),
        "never the secret: {body}"
    );
    assert!(
        !relay.log().contains("pass-through-token-0001"),
        "a passthrough token is never logged"
    );
    assert!(!relay.log().contains("cron-token-rejected"));

    // While cron's credential is paused, its next message is held without a call.
    send_as(&relay, "cron", "letmein99", "from-cron-again");
    relay.wait_for("both cron messages held", 20, || {
        relay.queued_ids().len() == 2 && relay.held_ids().len() == 2
    });
    let cron_calls = api
        .requests()
        .iter()
        .filter(|r| r.header("X-Postmark-Server-Token") == Some("cron-token-rejected"))
        .count();
    assert_eq!(
        cron_calls, 1,
        "one probe per period, not one call per held message"
    );
}

#[test]
fn a_rejected_global_credential_holds_only_the_mail_that_uses_it() {
    let api = ApiMock::start(|req| match req.header("X-Postmark-Server-Token") {
        Some("global-token-rejected") => {
            postmark_error(401, 10, "Request does not contain a valid Server token.")
        }
        _ => postmark_ok("b7bc2f4a-e38e-4336-af7d-e6c392c2f817"),
    });
    let dir = tempdir();
    let toml = format!(
        "backend = \"postmark\"\n\
         [smtp]\nauth_passthrough = true\nauth_failure_delay = \"10ms\"\n\
         [postmark]\nserver_token = \"global-token-rejected\"\napi_url = \"{}\"\n\
         [delivery]\nretry_initial = \"1h\"\nretry_max = \"2h\"\n\
         [[users]]\nname = \"billing\"\npassword_file = \"{pw}\"\nserver_token = \"billing-token-good\"\n",
        api.url(),
        pw = dir.path().join("pw").display(),
    );
    std::fs::write(dir.path().join("pw"), "letmein99\n").unwrap();
    let relay = Relay::start(dir.path(), &Setup::toml(&toml));

    relay.send_simple("global-first", &["rcpt@example.org"]);
    api.wait_for_requests(1, 20);
    let rejected_at = std::time::Instant::now();
    relay.wait_for("the global message held", 20, || {
        !relay.held_ids().is_empty()
    });

    // The global credential's pause (10 s) does not reach other credentials:
    // their mail goes at once.
    send_as(&relay, "billing", "letmein99", "from-billing");
    send_as(&relay, "app", "pass-through-token-0001", "from-passthrough");
    relay.wait_for("the user's and the passthrough mail delivered", 5, || {
        api.count() >= 3 && relay.queued_ids().len() == 1
    });

    // Global mail sent meanwhile is held: one call per 10 s probe period at
    // most, never one per held message.
    relay.send_simple("global-again", &["rcpt@example.org"]);
    relay.wait_for("both global messages held", 20, || {
        relay.queued_ids().len() == 2 && relay.held_ids().len() == 2
    });
    let periods = 1 + rejected_at.elapsed().as_secs() as usize / 10;
    let requests = api.requests();
    let subjects = |token: &str| -> Vec<String> {
        requests
            .iter()
            .filter(|r| r.header("X-Postmark-Server-Token") == Some(token))
            .map(|r| r.json()["Subject"].as_str().unwrap_or_default().to_string())
            .collect()
    };
    let global = subjects("global-token-rejected");
    assert_eq!(global[0], "global-first");
    assert!(global.len() <= periods, "{global:?} in {periods} periods");
    assert_eq!(subjects("billing-token-good"), ["from-billing"]);
    assert_eq!(subjects("pass-through-token-0001"), ["from-passthrough"]);
}

#[test]
fn a_users_message_stream_is_their_default_and_the_header_wins() {
    let api = ApiMock::start(|_| postmark_ok("b7bc2f4a-e38e-4336-af7d-e6c392c2f817"));
    let dir = tempdir();
    let toml = format!(
        "backend = \"postmark\"\n\
         [smtp]\nauth_failure_delay = \"10ms\"\n\
         [postmark]\nserver_token = \"global-token\"\napi_url = \"{}\"\n\
         [[users]]\nname = \"billing\"\npassword_file = \"{pw}\"\nmessage_stream = \"billing\"\n",
        api.url(),
        pw = dir.path().join("pw").display(),
    );
    std::fs::write(dir.path().join("pw"), "letmein99\n").unwrap();
    let relay = Relay::start(dir.path(), &Setup::toml(&toml));

    send_as(&relay, "billing", "letmein99", "no-header");
    let with_header =
        simple_message("with-header").replacen("\r\n", "\r\nX-PM-Message-Stream: broadcast\r\n", 1);
    send_message_as(&relay, "billing", "letmein99", &with_header);
    relay.send_simple("not-a-user", &["rcpt@example.org"]);
    let requests = api.wait_for_requests(3, 20);
    let stream_of = |subject: &str| {
        requests
            .iter()
            .find(|r| r.json()["Subject"] == subject)
            .map(|r| r.json()["MessageStream"].clone())
            .unwrap_or_else(|| panic!("no request for {subject}"))
    };
    assert_eq!(stream_of("no-header"), "billing");
    assert_eq!(stream_of("with-header"), "broadcast");
    assert_eq!(stream_of("not-a-user"), "outbound");
}
