//! SMTP conversations over real TCP with the real daemon: capabilities,
//! pipelining, sequence errors, limits and broken input.

mod support;

use std::time::Duration;

use support::{Relay, Setup, queued_id, read_json, simple_message, tempdir, unreachable_postmark};

fn dry_run() -> Setup {
    Setup::toml("")
}

#[test]
fn ehlo_advertises_pipelining_size_8bitmime_smtputf8_enhancedstatuscodes() {
    let dir = tempdir();
    let relay = Relay::start(
        dir.path(),
        &Setup::toml("[smtp]\nmax_message_size = 123456\nhostname = \"mx.test\"\n"),
    );
    let mut c = relay.connect();
    c.expect("220 mx.test");
    let r = c.cmd("EHLO client.example", "250");
    for cap in [
        "PIPELINING",
        "SIZE 123456",
        "8BITMIME",
        "SMTPUTF8",
        "ENHANCEDSTATUSCODES",
    ] {
        assert!(r.lines().any(|l| l[4..] == *cap), "missing {cap} in {r}");
    }
    assert!(!r.contains("STARTTLS") && !r.contains("AUTH"), "{r}");
    // BDAT is refused, so CHUNKING is never offered.
    assert!(!r.contains("CHUNKING"), "{r}");
    c.cmd("QUIT", "221");
}

#[test]
fn pipelined_commands_are_answered_in_order() {
    let dir = tempdir();
    let relay = Relay::start(dir.path(), &dry_run());
    let mut c = relay.connect();
    c.expect("220");
    c.cmd("EHLO client", "250");
    // One write: MAIL, a bad RCPT, two good RCPTs, DATA.
    c.send("MAIL FROM:<a@example.com>\r\nRCPT TO:<not an address>\r\nRCPT TO:<b@example.org>\r\nRCPT TO:<c@example.org>\r\nDATA\r\n");
    c.expect("250 2.1.0");
    c.expect("553 5.1.3");
    c.expect("250 2.1.5");
    c.expect("250 2.1.5");
    c.expect("354");
    c.send(&simple_message("pipelined"));
    // End of data, then RSET and NOOP in the same packet.
    c.send(".\r\nRSET\r\nNOOP\r\n");
    let queued = c.expect("250 2.0.0 Ok: queued as ");
    c.expect("250 2.0.0");
    c.expect("250 2.0.0");
    let id = queued_id(&queued);
    let out = relay.spool().join("dry-run").join(format!("{id}.json"));
    relay.wait_for("dry-run output", 20, || out.exists());
}

#[test]
fn sequence_errors_get_503_and_the_session_goes_on() {
    let dir = tempdir();
    let relay = Relay::start(dir.path(), &dry_run());
    let mut c = relay.connect();
    c.expect("220");
    c.cmd("MAIL FROM:<a@example.com>", "503 5.5.1");
    c.cmd("EHLO client", "250");
    c.cmd("RCPT TO:<b@example.org>", "503 5.5.1");
    c.cmd("DATA", "503 5.5.1");
    c.cmd("MAIL FROM:<a@example.com>", "250");
    c.cmd("MAIL FROM:<a@example.com>", "503 5.5.1");
    c.cmd("DATA", "503 5.5.1");
    c.cmd("RCPT TO:<b@example.org>", "250");
    c.cmd("DATA", "354");
    c.send(&simple_message("after-errors"));
    c.send(".\r\n");
    c.expect("250 2.0.0 Ok: queued as");
}

#[test]
fn garbage_gets_500_or_502_and_too_many_errors_end_the_session() {
    let dir = tempdir();
    let relay = Relay::start(dir.path(), &Setup::toml("[smtp]\nmax_errors = 3\n"));
    let mut c = relay.connect();
    c.expect("220");
    c.cmd("HELLO?", "500 5.5.2");
    c.cmd("STARTTLS", "502 5.5.1");
    c.send_bytes(b"\xff\xfe\x00garbage\r\n");
    c.expect("500");
    c.cmd("NOOP", "250");
    c.cmd("BDAT 10 LAST", "421 4.7.0");
    assert!(c.closed());
    // The daemon is still serving.
    let mut c2 = relay.connect();
    c2.expect("220");
}

#[test]
fn overlong_command_line_gets_500_and_the_session_goes_on() {
    let dir = tempdir();
    let relay = Relay::start(dir.path(), &dry_run());
    let mut c = relay.connect();
    c.expect("220");
    // 100 kB without a line end: bounded buffering, one error reply, session intact.
    for _ in 0..100 {
        c.send(&"x".repeat(1000));
    }
    c.send("\r\n");
    c.expect("500 5.5.6");
    c.cmd("EHLO client", "250");
    c.send(&format!("NOOP {}\r\nNOOP\r\n", "y".repeat(10_000)));
    c.expect("500 5.5.6");
    c.expect("250");
    c.cmd("NOOP", "250");
}

#[test]
fn declared_size_over_limit_is_refused_at_mail_from() {
    let dir = tempdir();
    let relay = Relay::start(
        dir.path(),
        &Setup::toml("[smtp]\nmax_message_size = 1000\n"),
    );
    let mut c = relay.connect();
    c.expect("220");
    c.cmd("EHLO client", "250");
    c.cmd("MAIL FROM:<a@example.com> SIZE=1001", "552 5.3.4");
    c.cmd("MAIL FROM:<a@example.com> SIZE=999", "250");
}

#[test]
fn oversized_message_gets_552_and_nothing_is_queued() {
    let dir = tempdir();
    let relay = Relay::start(
        dir.path(),
        &Setup::toml("[smtp]\nmax_message_size = 2000\n"),
    );
    let mut c = relay.connect();
    c.expect("220");
    c.cmd("EHLO client", "250");
    let body = format!("Subject: big\r\n\r\n{}", "0123456789abcdef\r\n".repeat(500));
    let r = c.send_mail("a@example.com", &["b@example.org"], &body);
    assert!(r.starts_with("552 5.3.4"), "{r}");
    // The session is still usable and the next, small message goes through.
    let r = c.send_mail(
        "a@example.com",
        &["b@example.org"],
        &simple_message("small"),
    );
    assert!(r.starts_with("250 2.0.0"), "{r}");
    assert_eq!(
        relay.files_in("tmp", "eml"),
        Vec::<std::path::PathBuf>::new()
    );
}

#[test]
fn too_many_recipients_get_452_and_the_rest_are_accepted() {
    let dir = tempdir();
    let relay = Relay::start(dir.path(), &Setup::toml("[smtp]\nmax_recipients = 2\n"));
    let mut c = relay.connect();
    c.expect("220");
    c.cmd("EHLO client", "250");
    c.cmd("MAIL FROM:<a@example.com>", "250");
    c.cmd("RCPT TO:<b@example.org>", "250");
    c.cmd("RCPT TO:<c@example.org>", "250");
    c.cmd("RCPT TO:<d@example.org>", "452 4.5.3");
    c.cmd("DATA", "354");
    c.send(&simple_message("two-rcpts"));
    c.send(".\r\n");
    c.expect("250 2.0.0");
}

#[test]
fn null_sender_is_accepted_and_delivered() {
    let dir = tempdir();
    let relay = Relay::start(dir.path(), &dry_run());
    let mut c = relay.connect();
    c.expect("220");
    c.cmd("EHLO client", "250");
    let r = c.send_mail("", &["postmaster@example.org"], &simple_message("bounce"));
    assert!(r.starts_with("250 2.0.0"), "{r}");
    let out = relay
        .spool()
        .join("dry-run")
        .join(format!("{}.json", queued_id(&r)));
    relay.wait_for("dry-run output", 20, || out.exists());
}

#[test]
fn bare_lf_message_is_accepted_and_stored_with_crlf() {
    let dir = tempdir();
    // Delivery cannot happen, so the spooled message stays to be inspected.
    let relay = Relay::start(
        dir.path(),
        // The stored bytes are the client's: no trace header.
        &Setup::toml(&unreachable_postmark()).env("POSTRELAY_SMTP__RECEIVED_HEADER", "false"),
    );
    let mut c = relay.connect();
    c.expect("220");
    c.cmd("EHLO client", "250");
    c.cmd("MAIL FROM:<a@example.com>", "250");
    c.cmd("RCPT TO:<b@example.org>", "250");
    c.cmd("DATA", "354");
    c.send("From: a@example.com\nTo: b@example.org\nSubject: bare lf\n\nline one\nline two\r\n..dot-stuffed\r\n.\r\n");
    let r = c.expect("250 2.0.0");
    let eml = relay.queued(&queued_id(&r)).expect("queued message").1;
    let stored = eml;
    assert_eq!(
        String::from_utf8(stored).unwrap(),
        "From: a@example.com\r\nTo: b@example.org\r\nSubject: bare lf\r\n\r\nline one\r\nline two\r\n.dot-stuffed\r\n"
    );
}

#[test]
fn idle_client_is_told_421_when_the_command_timeout_passes() {
    let dir = tempdir();
    let relay = Relay::start(
        dir.path(),
        &Setup::toml("[smtp]\ncommand_timeout = \"300ms\"\n"),
    );
    let mut c = relay.connect();
    c.expect("220");
    c.cmd("EHLO client", "250");
    // Say nothing: the server gives up and closes.
    c.expect("421 4.4.2");
    assert!(c.closed());
    // Trickling a command one byte at a time does not reset the clock.
    let mut d = relay.connect();
    d.expect("220");
    let started = std::time::Instant::now();
    let reply = loop {
        d.send("N");
        if let Some(r) = d.reply_within(Duration::from_millis(50)) {
            break r;
        }
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "no timeout while trickling"
        );
    };
    assert!(reply.starts_with("421 4.4.2"), "{reply}");
}

#[test]
fn empty_message_and_dot_stuffed_first_line_end_data_correctly() {
    let dir = tempdir();
    let relay = Relay::start(
        dir.path(),
        // The stored bytes are the client's: no trace header.
        &Setup::toml(&unreachable_postmark()).env("POSTRELAY_SMTP__RECEIVED_HEADER", "false"),
    );
    let mut c = relay.connect();
    c.expect("220");
    c.cmd("EHLO client", "250");
    c.cmd("MAIL FROM:<a@example.com>", "250");
    c.cmd("RCPT TO:<b@example.org>", "250");
    c.cmd("DATA", "354");
    // A first line that starts with a dot arrives dot-stuffed.
    c.send("..first line\r\nSubject: x\r\n\r\nbody\r\n.\r\n");
    let r = c.expect("250 2.0.0");
    let eml = relay.queued(&queued_id(&r)).expect("queued message").1;
    assert_eq!(
        String::from_utf8(eml).unwrap(),
        ".first line\r\nSubject: x\r\n\r\nbody\r\n"
    );
    // An empty message ends at once.
    c.cmd("MAIL FROM:<a@example.com>", "250");
    c.cmd("RCPT TO:<b@example.org>", "250");
    c.cmd("DATA", "354");
    c.send(".\r\n");
    let r = c.reply();
    assert!(r.starts_with("250 2.0.0"), "{r}");
    c.cmd("NOOP", "250");
}

#[test]
fn data_trickled_slower_than_the_minimum_rate_is_cut_off() {
    let dir = tempdir();
    let relay = Relay::start(
        dir.path(),
        &Setup::toml("[smtp]\ndata_timeout = \"500ms\"\n"),
    );
    let mut c = relay.connect();
    c.expect("220");
    c.cmd("EHLO client", "250");
    c.cmd("MAIL FROM:<a@example.com>", "250");
    c.cmd("RCPT TO:<b@example.org>", "250");
    c.cmd("DATA", "354");
    // One byte every 100 ms: never silent for 500 ms, but far below 512 bytes/s.
    let started = std::time::Instant::now();
    let reply = loop {
        c.send("x");
        if let Some(r) = c.reply_within(Duration::from_millis(100)) {
            break r;
        }
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "trickling was never cut off"
        );
    };
    assert!(reply.starts_with("421 4.4.2"), "{reply}");
    assert!(relay.queued_ids().is_empty());
}

#[test]
fn connections_over_the_cap_get_421() {
    let dir = tempdir();
    let relay = Relay::start(dir.path(), &Setup::toml("[smtp]\nmax_connections = 2\n"));
    let mut a = relay.connect();
    a.expect("220");
    let mut b = relay.connect();
    b.expect("220");
    let mut c = relay.connect();
    c.expect("421 4.3.2");
    assert!(c.closed());
    a.cmd("QUIT", "221");
    drop(a);
    // A slot frees up once a session ends.
    relay.wait_for("a free connection slot", 10, || {
        let mut d = relay.connect();
        d.reply().starts_with("220")
    });
}

#[test]
fn low_disk_answers_452_and_queues_nothing() {
    let dir = tempdir();
    let relay = Relay::start(
        dir.path(),
        &Setup::toml("").env("POSTRELAY_SPOOL__MIN_FREE_SPACE", "18446744073709551615"),
    );
    let mut c = relay.connect();
    c.expect("220");
    c.cmd("EHLO client", "250");
    c.cmd("MAIL FROM:<a@example.com>", "250");
    c.cmd("RCPT TO:<b@example.org>", "250");
    c.cmd("DATA", "452 4.3.1");
    c.cmd("NOOP", "250");
    assert!(relay.queued_ids().is_empty());
}

#[test]
fn lettre_client_sends_a_message_that_reaches_the_dry_run_output() {
    use lettre::{Message, SmtpTransport, Transport};
    let dir = tempdir();
    let relay = Relay::start(dir.path(), &dry_run());
    let email = Message::builder()
        .from("Zoë Sender <sender@example.com>".parse().unwrap())
        .to("rcpt@example.org".parse().unwrap())
        .subject("Grüße from lettre")
        .body("Hallo, Welt!".to_string())
        .unwrap();
    let mailer = SmtpTransport::builder_dangerous(relay.smtp.ip().to_string())
        .port(relay.smtp.port())
        .timeout(Some(Duration::from_secs(20)))
        .build();
    let response = mailer.send(&email).expect("lettre send");
    let id = response
        .message()
        .last()
        .expect("reply text")
        .rsplit(' ')
        .next()
        .unwrap()
        .to_string();
    let out = relay.spool().join("dry-run").join(format!("{id}.json"));
    relay.wait_for("dry-run output", 20, || out.exists());
}

/// Streams a 30 MB message and reports the daemon's memory while it does.
#[test]
fn thirty_megabyte_message_streams_without_memory_growing_with_it() {
    let dir = tempdir();
    let toml = "backend = \"postal\"\n[smtp]\nmax_message_size = 41943040\n[postal]\napi_url = \"http://127.0.0.1:9\"\napi_key = \"k\"\nmax_message_size = 41943040\n[delivery]\nretry_initial = \"1h\"\nretry_max = \"2h\"\n";
    let relay = Relay::start(dir.path(), &Setup::toml(toml));
    let mut c = relay.connect();
    c.expect("220");
    c.cmd("EHLO client", "250");
    c.cmd("MAIL FROM:<a@example.com> SIZE=31457280", "250");
    c.cmd("RCPT TO:<b@example.org>", "250");
    c.cmd("DATA", "354");
    c.send("From: a@example.com\r\nTo: b@example.org\r\nSubject: big\r\n\r\n");
    let line = format!("{}\r\n", "A".repeat(998));
    let chunk = line.repeat(1000); // ~1 MB
    let (before, _) = relay.rss_kib();
    let mut mid = 0;
    for i in 0..30 {
        c.send(&chunk);
        if i == 25 {
            std::thread::sleep(Duration::from_millis(200));
            mid = relay.rss_kib().0;
        }
    }
    c.send(".\r\n");
    let r = c.expect("250 2.0.0");
    let (after, peak) = relay.rss_kib();
    let eml = relay.queued(&queued_id(&r)).expect("queued message").1;
    let size = eml.len() as u64;
    assert!(size > 30_000_000, "{size}");
    eprintln!(
        "RSS KiB: before {before}, mid-stream (26 MB sent) {mid}, after accept {after}, peak {peak}"
    );
    // Streaming holds a few buffers, not the message: growth stays far below 26 MB.
    assert!(
        mid.saturating_sub(before) < 8 * 1024,
        "RSS grew from {before} KiB to {mid} KiB while streaming"
    );
}

/// Deterministic pseudo-random bytes (xorshift), so a failure replays.
fn noise(seed: &mut u64, len: usize) -> Vec<u8> {
    (0..len)
        .map(|_| {
            *seed ^= *seed << 13;
            *seed ^= *seed >> 7;
            *seed ^= *seed << 17;
            // Mostly protocol-ish bytes, some anything.
            let alphabet = b"MAIL FROM:<>RCPT TO:DATA\r\n.EHLO @x";
            if (*seed).is_multiple_of(4) {
                (*seed >> 8) as u8
            } else {
                alphabet[(*seed >> 16) as usize % alphabet.len()]
            }
        })
        .collect()
}

#[test]
fn garbage_on_many_connections_leaves_the_daemon_serving() {
    let dir = tempdir();
    let mut relay = Relay::start(
        dir.path(),
        &Setup::toml("[smtp]\nmax_errors = 1000\ncommand_timeout = \"2s\"\n"),
    );
    let mut seed = 0x9E37_79B9_7F4A_7C15u64;
    for _ in 0..50 {
        let mut c = relay.connect();
        c.expect("220");
        for _ in 0..20 {
            let bytes = noise(&mut seed, 200);
            if !c.try_send_bytes(&bytes) {
                break;
            }
        }
        // Whatever state the session is in, the daemon answers or closes it.
        drop(c);
    }
    // Still alive, still correct.
    let mut c = relay.connect();
    c.expect("220");
    c.cmd("EHLO client", "250");
    let r = c.send_mail(
        "a@example.com",
        &["b@example.org"],
        &simple_message("after-noise"),
    );
    assert!(r.starts_with("250 2.0.0"), "{r}");
    assert!(
        relay.child.try_wait().unwrap().is_none(),
        "daemon exited:\n{}",
        relay.log()
    );
}

#[test]
fn mail_to_the_bare_postmaster_goes_to_the_admin_address() {
    let dir = tempdir();
    let setup = Setup::toml("[local]\nadmin_address = \"ops@example.com\"\n");
    let relay = Relay::start(dir.path(), &setup);
    let mut c = relay.session();
    let r = c.send_mail("", &["postmaster"], &simple_message("to the postmaster"));
    assert!(r.starts_with("250 2.0.0"), "{r}");
    relay.wait_for("the dry-run request", 10, || {
        !relay.files_in("dry-run", "json").is_empty()
    });
    let request = read_json(&relay.files_in("dry-run", "json")[0]);
    // Not in To/Cc: the envelope-only recipient is a Bcc.
    assert_eq!(request["Bcc"], "ops@example.com", "{request}");
}
