//! Who may send, over real sockets: client networks, the per-address
//! connection cap, STARTTLS (with the pipelining injection case) and the
//! implicit-TLS listener, with a certificate made for the test.

mod support;

use std::net::SocketAddr;
use std::time::Duration;

use support::tls::{Dialogue, connect_from, handshake, make_cert, tls_toml};
use support::{Relay, Setup, tempdir};

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
}

/// The implicit-TLS listener's address, from the start-up log.
fn tls_addr(relay: &Relay) -> SocketAddr {
    let needle = "smtp implicit TLS listening on ";
    relay.wait_log(needle, 20);
    let log = relay.log();
    let line = log.lines().find(|l| l.contains(needle)).unwrap();
    let rest = &line[line.find(needle).unwrap() + needle.len()..];
    rest.split_whitespace().next().unwrap().parse().unwrap()
}

#[test]
fn a_client_outside_allowed_networks_is_refused_at_connect_when_no_auth_exists() {
    let dir = tempdir();
    let relay = Relay::start(
        dir.path(),
        &Setup::toml("[smtp]\nallowed_networks = [\"127.0.0.1/32\"]\n"),
    );
    runtime().block_on(async {
        let outside = connect_from("127.0.0.2", relay.smtp).await;
        let mut d = Dialogue::new(outside);
        let greeting = d.reply().await;
        assert!(greeting.starts_with("554 5.7.1"), "{greeting:?}");
        assert_eq!(d.reply().await, "", "closed after the refusal");

        let inside = connect_from("127.0.0.1", relay.smtp).await;
        let mut d = Dialogue::new(inside);
        assert!(d.reply().await.starts_with("220 "));
        d.cmd("EHLO c", "250").await;
        d.cmd("MAIL FROM:<a@example.com>", "250").await;
    });
    relay.wait_log("outside smtp.allowed_networks", 10);
}

#[test]
fn connections_over_the_per_address_cap_get_421_4_7_0() {
    let dir = tempdir();
    let relay = Relay::start(
        dir.path(),
        &Setup::toml("[smtp]\nmax_connections_per_ip = 2\n"),
    );
    let mut first = relay.connect();
    first.expect("220");
    let mut second = relay.connect();
    second.expect("220");
    let mut third = relay.connect();
    third.expect("421 4.7.0");
    drop(first);
    // The slot comes back once the first session has ended.
    relay.wait_for("a freed slot", 20, || {
        let mut c = relay.connect();
        c.reply().starts_with("220")
    });
    second.cmd("EHLO c", "250");
}

#[test]
fn starttls_upgrades_discards_pipelined_commands_and_resets_the_session() {
    let dir = tempdir();
    let (cert, key) = make_cert(dir.path(), "relay");
    let relay = Relay::start(dir.path(), &Setup::toml(&tls_toml(&cert, &key, "")));
    runtime().block_on(async {
        let tcp = tokio::net::TcpStream::connect(relay.smtp).await.unwrap();
        let mut d = Dialogue::new(tcp);
        assert!(d.reply().await.starts_with("220 "));
        let ehlo = d.cmd("EHLO c", "250").await;
        assert!(ehlo.contains("STARTTLS"), "{ehlo}");
        // One packet: STARTTLS plus commands an attacker injected after it.
        d.send("STARTTLS\r\nMAIL FROM:<evil@example.com>\r\nRCPT TO:<victim@example.org>\r\n")
            .await;
        let ready = d.reply().await;
        assert!(ready.starts_with("220 2.0.0"), "{ready:?}");
        assert!(
            d.pending().is_empty(),
            "nothing answered the injected commands"
        );
        let tls = handshake(d.into_inner(), &cert).await.expect("handshake");
        let mut d = Dialogue::new(tls);
        // The session starts over: MAIL needs EHLO, and no sender is set.
        d.cmd("MAIL FROM:<a@example.com>", "503").await;
        let ehlo = d.cmd("EHLO c", "250").await;
        assert!(!ehlo.contains("STARTTLS"), "not offered twice: {ehlo}");
        d.cmd("RCPT TO:<x@example.org>", "503").await;
        d.cmd("STARTTLS", "502").await;
        d.cmd("MAIL FROM:<a@example.com>", "250").await;
        d.cmd("RCPT TO:<x@example.org>", "250").await;
        d.cmd("DATA", "354").await;
        d.cmd("Subject: over TLS\r\n\r\nhello\r\n.", "250 2.0.0")
            .await;
        d.cmd("QUIT", "221").await;
    });
    relay.wait_log("bytes pipelined after STARTTLS discarded", 10);
}

#[test]
fn lettre_sends_with_starttls_and_over_implicit_tls() {
    use lettre::message::Message;
    use lettre::transport::smtp::client::{Certificate, Tls, TlsParameters};
    use lettre::{AsyncSmtpTransport, AsyncTransport, Tokio1Executor};

    let dir = tempdir();
    let (cert, key) = make_cert(dir.path(), "relay");
    let toml = tls_toml(&cert, &key, "listen = \"127.0.0.1:0\"\nrequired = true");
    let relay = Relay::start(dir.path(), &Setup::toml(&toml));
    let implicit = tls_addr(&relay);
    let pem = std::fs::read(&cert).unwrap();
    let params = || {
        TlsParameters::builder("localhost".into())
            .add_root_certificate(Certificate::from_pem(&pem).unwrap())
            .build_rustls()
            .unwrap()
    };
    let email = |subject: &str| {
        Message::builder()
            .from("sender@example.com".parse().unwrap())
            .to("rcpt@example.org".parse().unwrap())
            .subject(subject)
            .body("hello".to_string())
            .unwrap()
    };
    runtime().block_on(async {
        let starttls = AsyncSmtpTransport::<Tokio1Executor>::builder_dangerous("127.0.0.1")
            .port(relay.smtp.port())
            .tls(Tls::Required(params()))
            .timeout(Some(Duration::from_secs(20)))
            .build();
        let r = starttls
            .send(email("via STARTTLS"))
            .await
            .expect("STARTTLS send");
        assert!(r.is_positive());
        let wrapped = AsyncSmtpTransport::<Tokio1Executor>::builder_dangerous("127.0.0.1")
            .port(implicit.port())
            .tls(Tls::Wrapper(params()))
            .timeout(Some(Duration::from_secs(20)))
            .build();
        let r = wrapped
            .send(email("via implicit TLS"))
            .await
            .expect("implicit TLS send");
        assert!(r.is_positive());
    });
    relay.wait_for("two dry-run outputs", 20, || {
        relay.files_in("dry-run", "json").len() == 2
    });
}

#[test]
fn a_stalled_handshake_is_cut_off_and_a_bad_one_leaves_the_listener_serving() {
    let dir = tempdir();
    let (cert, key) = make_cert(dir.path(), "relay");
    let toml = tls_toml(
        &cert,
        &key,
        "listen = \"127.0.0.1:0\"\nhandshake_timeout = \"1s\"",
    );
    let relay = Relay::start(dir.path(), &Setup::toml(&toml));
    let implicit = tls_addr(&relay);
    runtime().block_on(async {
        // Says nothing: the server gives up after the handshake timeout.
        let mut silent = Dialogue::new(tokio::net::TcpStream::connect(implicit).await.unwrap());
        assert_eq!(silent.reply().await, "", "closed without a word");
        // Plain SMTP to the TLS port fails its handshake; the next client is served.
        let mut plain = Dialogue::new(tokio::net::TcpStream::connect(implicit).await.unwrap());
        plain.send("EHLO c\r\n").await;
        let _ = plain.reply().await;
        let tcp = tokio::net::TcpStream::connect(implicit).await.unwrap();
        let mut d = Dialogue::new(handshake(tcp, &cert).await.expect("handshake"));
        assert!(d.reply().await.starts_with("220 "));
        d.cmd("EHLO c", "250").await;
    });
}

#[test]
fn sighup_reloads_the_certificate_without_dropping_the_listener() {
    let dir = tempdir();
    let (cert, key) = make_cert(dir.path(), "relay");
    let relay = Relay::start(dir.path(), &Setup::toml(&tls_toml(&cert, &key, "")));
    let (new_cert, new_key) = make_cert(dir.path(), "renewed");
    std::fs::copy(&new_cert, &cert).unwrap();
    std::fs::copy(&new_key, &key).unwrap();
    support::signal(relay.child.id(), "HUP");
    relay.wait_log("TLS certificate reloaded", 20);
    runtime().block_on(async {
        let tcp = tokio::net::TcpStream::connect(relay.smtp).await.unwrap();
        let mut d = Dialogue::new(tcp);
        d.reply().await;
        d.cmd("EHLO c", "250").await;
        d.cmd("STARTTLS", "220").await;
        // Only the renewed certificate is trusted now.
        let tls = handshake(d.into_inner(), &new_cert)
            .await
            .expect("renewed cert served");
        let mut d = Dialogue::new(tls);
        d.cmd("EHLO c", "250").await;
    });
}

#[test]
fn a_session_is_cut_off_at_its_time_limit_whatever_it_does() {
    let dir = tempdir();
    let relay = Relay::start(
        dir.path(),
        &Setup::toml("[smtp]\nmax_session_time = \"1s\"\n"),
    );
    let mut c = relay.session();
    c.cmd("MAIL FROM:<a@example.com>", "250");
    c.cmd("RCPT TO:<b@example.org>", "250");
    c.cmd("DATA", "354");
    // A trickle that keeps each read well inside data_timeout.
    let started = std::time::Instant::now();
    let mut said = None;
    while started.elapsed() < Duration::from_secs(20) {
        if !c.try_send_bytes(b"x") {
            break;
        }
        if let Some(r) = c.reply_within(Duration::from_millis(200)) {
            said = Some(r);
            break;
        }
    }
    let said = said.expect("the relay spoke before 20s");
    assert!(said.starts_with("421 4.4.2"), "{said}");
    assert!(said.contains("session time limit"), "{said}");
    assert!(relay.queued_ids().is_empty(), "nothing queued");
}

#[test]
fn the_admin_listener_caps_connections_and_closes_silent_ones() {
    use std::io::{Read, Write};
    let dir = tempdir();
    let setup = Setup::toml("[http]\nmax_connections = 2\nheader_read_timeout = \"500ms\"\n")
        .env("POSTRELAY_HTTP__LISTEN", "127.0.0.1:0");
    let relay = Relay::start(dir.path(), &setup);
    let http = relay.http.unwrap();
    let idle: Vec<std::net::TcpStream> = (0..2)
        .map(|_| std::net::TcpStream::connect(http).unwrap())
        .collect();
    // Let the daemon accept both before the third arrives.
    std::thread::sleep(Duration::from_millis(100));
    let mut third = std::net::TcpStream::connect(http).unwrap();
    third
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    let _ = third.write_all(b"GET /healthz HTTP/1.0\r\n\r\n");
    let mut buf = Vec::new();
    let _ = third.read_to_end(&mut buf);
    assert!(buf.is_empty(), "over the cap: closed without an answer");
    // The silent ones are closed after header_read_timeout ...
    for mut c in idle {
        c.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        let mut buf = [0u8; 16];
        assert_eq!(c.read(&mut buf).unwrap_or(0), 0, "closed");
    }
    // ... which frees their slots.
    relay.wait_for("a served /healthz", 10, || {
        let mut c = std::net::TcpStream::connect(http).unwrap();
        c.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        let _ = c.write_all(b"GET /healthz HTTP/1.0\r\nHost: x\r\n\r\n");
        let mut s = String::new();
        let _ = c.read_to_string(&mut s);
        s.starts_with("HTTP/1.0 200") || s.starts_with("HTTP/1.1 200")
    });
}

#[test]
fn sighup_without_tls_is_ignored_and_the_daemon_keeps_serving() {
    let dir = tempdir();
    let relay = Relay::start(dir.path(), &Setup::default());
    support::signal(relay.child.id(), "HUP");
    relay.wait_log("SIGHUP: nothing to reload", 20);
    let mut c = relay.session();
    c.cmd("QUIT", "221");
}
