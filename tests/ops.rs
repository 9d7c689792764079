//! The operations surface with the real binary: admin HTTP endpoints, the
//! queue CLI against a running daemon's spool, the sendmail entry point,
//! JSON logs.

mod support;

use std::io::Write;
use std::process::{Command, Output, Stdio};

use support::api_mock::{ApiMock, postmark_error, postmark_ok};
use support::{
    BIN, Relay, Setup, http_get, queued_id, run_with_input, tempdir, unreachable_postmark,
};

fn with_http(toml: &str) -> Setup {
    Setup::toml(toml).env("POSTRELAY_HTTP__LISTEN", "127.0.0.1:0")
}

fn postmark_at(url: &str) -> String {
    format!(
        "backend = \"postmark\"\n[postmark]\nserver_token = \"good-token\"\napi_url = \"{url}\"\n[delivery]\nretry_initial = \"1h\"\nretry_max = \"2h\"\n"
    )
}

/// Runs `postrelay <args>` against the relay's spool.
fn cli(relay: &Relay, toml: &str, args: &[&str]) -> Output {
    let cfg = relay.dir.join("cli.toml");
    std::fs::write(&cfg, toml).unwrap();
    Command::new(BIN)
        .arg("--config")
        .arg(&cfg)
        .args(args)
        .env_clear()
        .env("POSTRELAY_SPOOL__DIR", relay.spool())
        .output()
        .expect("run cli")
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

#[test]
fn healthz_readyz_and_metrics_answer_over_http() {
    let dir = tempdir();
    let relay = Relay::start(dir.path(), &with_http(""));
    let http = relay.http.expect("http listener");
    assert_eq!(
        http_get(http, "/healthz"),
        (200, "{\"status\":\"ok\"}".into())
    );
    assert_eq!(http_get(http, "/readyz").0, 200);
    let id = relay.send_simple("metrics", &["rcpt@example.org"]);
    let out = relay.spool().join("dry-run").join(format!("{id}.json"));
    relay.wait_for("delivery", 20, || out.exists());
    relay.wait_for("delivery metrics", 20, || {
        http_get(http, "/metrics").1.contains(
            "postrelay_delivery_attempts_total{backend=\"dry-run\",outcome=\"delivered\"} 1",
        )
    });
    let (status, body) = http_get(http, "/metrics");
    assert_eq!(status, 200);
    for series in [
        "postrelay_smtp_messages_total{result=\"queued\"} 1",
        "postrelay_smtp_sessions_total 1",
        "postrelay_queue_depth 0",
        "postrelay_queue_oldest_age_seconds 0",
        "postrelay_dead_letters 0",
        "postrelay_api_latency_seconds_bucket{backend=\"dry-run\",le=\"0.01\"}",
    ] {
        assert!(body.contains(series), "missing {series} in\n{body}");
    }
}

#[test]
fn readyz_is_503_naming_the_rejected_token_until_a_delivery_succeeds() {
    let api = ApiMock::scripted(
        vec![postmark_error(
            401,
            10,
            "Request does not contain a valid Server token.",
        )],
        postmark_ok("b7bc2f4a-e38e-4336-af7d-e6c392c2f817"),
    );
    let dir = tempdir();
    let toml = postmark_at(&api.url());
    let relay = Relay::start(dir.path(), &with_http(&toml));
    let http = relay.http.unwrap();
    let id = relay.send_simple("bad-token", &["rcpt@example.org"]);
    api.wait_for_requests(1, 20);
    relay.wait_for("readyz 503", 20, || http_get(http, "/readyz").0 == 503);
    let (_, body) = http_get(http, "/readyz");
    let v: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(v["status"], "unavailable");
    assert_eq!(v["check"], "backend");
    assert!(
        v["reason"].as_str().unwrap().contains("server token"),
        "{body}"
    );
    assert!(!body.contains("good-token"), "{body}");
    // The operator fixes things and retries: the next success clears the fault.
    let out = cli(&relay, &toml, &["queue", "retry", &id]);
    assert!(out.status.success(), "{out:?}");
    api.wait_for_requests(2, 20);
    relay.wait_for("readyz 200", 20, || http_get(http, "/readyz").0 == 200);
}

#[test]
fn readyz_is_503_when_the_disk_is_low() {
    let dir = tempdir();
    let relay = Relay::start(
        dir.path(),
        &with_http("").env("POSTRELAY_SPOOL__MIN_FREE_SPACE", "18446744073709551615"),
    );
    let (status, body) = http_get(relay.http.unwrap(), "/readyz");
    assert_eq!(status, 503, "{body}");
    assert!(
        body.contains("\"check\":\"spool\"") && body.contains("min_free_space"),
        "{body}"
    );
}

#[test]
fn queue_cli_lists_retries_and_deletes_on_a_running_daemon() {
    let dir = tempdir();
    let toml = unreachable_postmark();
    let relay = Relay::start(dir.path(), &Setup::toml(&toml));
    let ids: Vec<String> = (0..3)
        .map(|i| relay.send_simple(&format!("q{i}"), &["rcpt@example.org"]))
        .collect();
    relay.wait_for("three failed attempts", 20, || {
        relay.log().matches("will retry").count() >= 3
    });

    let out = cli(&relay, &toml, &["queue", "list", "--json"]);
    assert!(out.status.success(), "{out:?}");
    let rows: Vec<serde_json::Value> = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(rows.len(), 3);
    assert_eq!(rows[0]["from"], "sender@example.com");
    assert_eq!(rows[0]["attempts"], 1);
    assert!(
        rows[0]["last_error"].as_str().unwrap().contains("connect"),
        "{rows:?}"
    );

    let text = stdout(&cli(&relay, &toml, &["queue", "list"]));
    assert!(
        text.contains(&ids[0]) && text.contains("-- 3 messages"),
        "{text}"
    );

    let out = cli(&relay, &toml, &["queue", "delete", &ids[0]]);
    assert!(out.status.success(), "{out:?}");
    assert_eq!(stdout(&out).trim(), "1 of 1 message deleted");
    assert!(!relay.queued_ids().contains(&ids[0]));

    let out = cli(&relay, &toml, &["queue", "retry", "--all"]);
    assert_eq!(
        stdout(&out).trim(),
        "2 of 2 messages scheduled for immediate retry",
        "{out:?}"
    );
    relay.wait_for("second attempts", 20, || {
        relay.log().matches("will retry").count() >= 5
    });

    let show = stdout(&cli(&relay, &toml, &["queue", "show", &ids[1]]));
    assert!(
        show.contains("== headers")
            && show.contains("Subject: q1")
            && show.contains("\"MessageStream\": \"outbound\""),
        "{show}"
    );

    let out = cli(
        &relay,
        &toml,
        &["queue", "delete", "01NOSUCHMESSAGE0000000000"],
    );
    assert_eq!(out.status.code(), Some(1));
}

#[test]
fn dead_letters_are_listed_and_requeued_to_delivery() {
    let api = ApiMock::scripted(
        vec![postmark_error(
            422,
            300,
            "Invalid 'To' address: 'rcpt@example.org'.",
        )],
        postmark_ok("0d6a1a2b-1111-4c4c-8888-123456789abc"),
    );
    let dir = tempdir();
    let toml = postmark_at(&api.url());
    let relay = Relay::start(dir.path(), &Setup::toml(&toml));
    let id = relay.send_simple("dead", &["rcpt@example.org"]);
    // The log line comes once the move is complete and the entry has left
    // the schedule; failed/ fills a moment earlier.
    relay.wait_for("the dead letter", 20, || {
        relay.log().contains("message dead-lettered")
    });

    let out = cli(&relay, &toml, &["queue", "failed", "--json"]);
    let rows: Vec<serde_json::Value> = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(rows[0]["id"], id.as_str());
    assert_eq!(rows[0]["failure"]["code"], "300");
    assert!(
        rows[0]["failure"]["reason"]
            .as_str()
            .unwrap()
            .contains("Invalid 'To' address"),
        "{rows:?}"
    );

    let out = cli(&relay, &toml, &["queue", "requeue", "--all"]);
    assert_eq!(
        stdout(&out).trim(),
        "1 of 1 message moved back to the queue",
        "{out:?}"
    );
    api.wait_for_requests(2, 20);
    relay.wait_for("delivery after requeue", 20, || {
        relay.log().contains("message delivered")
    });
    assert!(relay.files_in("failed", "json").is_empty());
    assert!(relay.queued_ids().is_empty());
}

#[test]
fn queue_cli_acts_on_the_spool_itself_when_no_daemon_runs() {
    let dir = tempdir();
    let toml = unreachable_postmark();
    let mut relay = Relay::start(dir.path(), &Setup::toml(&toml));
    let id = relay.send_simple("offline", &["rcpt@example.org"]);
    assert!(relay.terminate().success());
    let out = cli(&relay, &toml, &["queue", "delete", &id]);
    assert!(out.status.success(), "{out:?}");
    assert!(relay.queued_ids().is_empty());
}

#[test]
fn sendmail_t_submits_a_message_that_reaches_the_api() {
    let api = ApiMock::start(|_| postmark_ok("5a5a5a5a-0000-4000-8000-000000000001"));
    let dir = tempdir();
    let relay = Relay::start(dir.path(), &Setup::toml(&postmark_at(&api.url())));
    // Called the way cron and PHP call it: through a symlink named sendmail.
    let link = dir.path().join("sendmail");
    std::os::unix::fs::symlink(BIN, &link).unwrap();
    let mut child = Command::new(&link)
        .args(["-t", "-oi", "-f", "cron@example.com", "-F", "Cron Daemon"])
        .env_clear()
        .env("POSTRELAY_SMTP__LISTEN", relay.smtp.to_string())
        .stdin(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(b"To: ops@example.org\nBcc: audit@example.org\nSubject: cron job output\n\nall good\n.\nstill body with -oi\n")
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let reqs = api.wait_for_requests(1, 20);
    let body = reqs[0].json();
    assert_eq!(body["From"], "Cron Daemon <cron@example.com>");
    assert_eq!(body["To"], "ops@example.org");
    assert_eq!(body["Bcc"], "audit@example.org");
    assert_eq!(body["Subject"], "cron job output");
    assert_eq!(body["TextBody"], "all good\r\n.\r\nstill body with -oi\r\n");
}

#[test]
fn sendmail_exits_69_with_a_clear_message_when_the_daemon_is_unreachable() {
    let out = run_with_input(
        Command::new(BIN)
            .args(["sendmail", "--server", "127.0.0.1:9", "someone@example.org"])
            .env_clear()
            // No maildrop to fall back on: the caller must hear it.
            .env("POSTRELAY_SENDMAIL__MAILDROP", "/nonexistent/maildrop"),
        b"Subject: x\n\nbody\n",
    );
    assert_eq!(out.status.code(), Some(69));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("cannot reach postrelay at 127.0.0.1:9")
            && err.contains("is the daemon running"),
        "{err}"
    );
}

#[test]
fn json_logs_carry_stable_fields_per_state_change() {
    let dir = tempdir();
    let relay = Relay::start(dir.path(), &Setup::toml("[log]\nformat = \"json\"\n"));
    let id = relay.send_simple("json", &["rcpt@example.org"]);
    relay.wait_log("\"outcome\":\"delivered\"", 20);
    let events: Vec<serde_json::Value> = relay
        .log()
        .lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .filter(|v: &serde_json::Value| v["id"] == id.as_str())
        .collect();
    let outcomes: Vec<&str> = events
        .iter()
        .filter_map(|e| e["outcome"].as_str())
        .collect();
    assert_eq!(
        outcomes,
        vec!["received", "accepted", "delivered"],
        "{events:?}"
    );
    assert_eq!(events[0]["from"], "sender@example.com");
    assert_eq!(events[0]["rcpts"], 1);
    assert_eq!(events[1]["backend"], "dry-run");
    assert!(
        events[1]["api_message_id"]
            .as_str()
            .unwrap()
            .starts_with("dry-run-")
    );
    assert_eq!(events[2]["attempt"], 1);
}

#[test]
fn a_second_daemon_on_the_same_spool_refuses_to_start() {
    let dir = tempdir();
    let relay = Relay::start(dir.path(), &Setup::toml(""));
    let out = Command::new(BIN)
        .arg("serve")
        .env_clear()
        .env("POSTRELAY_SMTP__LISTEN", "127.0.0.1:0")
        .env("POSTRELAY_SPOOL__DIR", relay.spool())
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("in use by a running postrelay"),
        "{out:?}"
    );
}

#[test]
fn queue_list_needs_no_token() {
    let dir = tempdir();
    let out = Command::new(BIN)
        .args(["queue", "list"])
        .env_clear()
        .env("POSTRELAY_BACKEND", "postmark")
        .env("POSTRELAY_SPOOL__DIR", dir.path().join("spool"))
        .output()
        .unwrap();
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(stdout(&out).trim(), "Queue is empty.");
}

#[test]
fn sendmail_gets_past_config_loading_without_reading_the_token() {
    // PHP running as www-data cannot read the daemon's token file.
    let dir = tempdir();
    let cfg = dir.path().join("postrelay.toml");
    std::fs::write(
        &cfg,
        "backend = \"postmark\"\n[postmark]\nserver_token_file = \"/nonexistent/postmark-token\"\n[smtp]\nlisten = \"127.0.0.1:9\"\n",
    )
    .unwrap();
    let out = run_with_input(
        Command::new(BIN)
            .arg("--config")
            .arg(&cfg)
            .args(["sendmail", "someone@example.org"])
            .env_clear()
            .env("POSTRELAY_SENDMAIL__MAILDROP", "/nonexistent/maildrop"),
        b"Subject: x\n\nbody\n",
    );
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(69), "{err}");
    assert!(
        err.contains("cannot reach postrelay at 127.0.0.1:9"),
        "{err}"
    );
}

#[test]
fn sendmail_v_prints_the_final_reply_naming_the_queue_id() {
    let dir = tempdir();
    let relay = Relay::start(dir.path(), &Setup::toml(""));
    let mut child = Command::new(BIN)
        .args(["sendmail", "-v", "--server", &relay.smtp.to_string()])
        .arg("rcpt@example.org")
        .env_clear()
        .stdin(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(b"hello without headers\n")
        .unwrap();
    let out = child.wait_with_output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{err}");
    assert!(err.starts_with("sendmail: 2.0.0 Ok: queued as "), "{err}");
    let id = queued_id(&err);
    // The headerless input arrived as the body, not as a header.
    let written = relay.spool().join("dry-run").join(format!("{id}.json"));
    relay.wait_for("dry-run delivery", 20, || written.exists());
    let request: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&written).unwrap()).unwrap();
    assert_eq!(
        request["TextBody"], "hello without headers\r\n",
        "{request}"
    );
}

#[test]
fn queue_show_spells_out_control_characters_from_the_message() {
    let dir = tempdir();
    let toml = unreachable_postmark();
    let relay = Relay::start(dir.path(), &Setup::toml(&toml));
    let mut c = relay.session();
    let msg = "From: a@example.com\r\nTo: b@example.org\r\nSubject: hi\x1b]0;pwned\x07\x1b[2J\r\n\r\nbody\r\n";
    let r = c.send_mail("a@example.com", &["b@example.org"], msg);
    assert!(r.starts_with("250 2.0.0"), "{r}");
    let id = support::queued_id(&r);
    let out = cli(&relay, &toml, &["queue", "show", &id]);
    let shown = stdout(&out);
    assert!(out.status.success(), "{out:?}");
    assert!(
        !shown.contains('\x1b') && !shown.contains('\x07'),
        "{shown:?}"
    );
    assert!(
        shown.contains("Subject: hi\\u{1b}]0;pwned\\u{7}\\u{1b}[2J"),
        "{shown}"
    );
}
