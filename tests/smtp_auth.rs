//! SMTP AUTH over real sockets: PLAIN and LOGIN after STARTTLS (raw bytes,
//! lettre, swaks, msmtp and Python's smtplib), `535` and the per-address
//! failure limit, `allowed_from` on the envelope and on `From:`, and
//! `postrelay hash-password`.

mod support;

use std::io::Write;
use std::process::{Command, Stdio};
use std::time::Duration;

use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;
use support::tls::{Dialogue, connect_from, handshake, make_cert, tls_toml};
use support::{BIN, Relay, Setup, tempdir};

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
}

/// `postrelay hash-password` with the password on stdin.
fn hash(password: &str) -> String {
    let mut child = Command::new(BIN)
        .arg("hash-password")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    writeln!(child.stdin.take().unwrap(), "{password}").unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success(), "{out:?}");
    let phc = String::from_utf8(out.stdout).unwrap().trim().to_string();
    assert!(phc.starts_with("$argon2id$"), "{phc}");
    phc
}

fn plain(user: &str, password: &str) -> String {
    B64.encode(format!("\0{user}\0{password}"))
}

/// Loopback-only networks except 127.0.0.1 itself, one user with a hash,
/// one with a password file; STARTTLS available.
fn setup(dir: &std::path::Path, extra_smtp: &str) -> (Setup, std::path::PathBuf) {
    let (cert, key) = make_cert(dir, "relay");
    let pw_file = dir.join("cron.pw");
    std::fs::write(&pw_file, "tick tock\n").unwrap();
    let toml = format!(
        "[smtp]\nallowed_networks = [\"127.0.0.1/32\"]\nauth_failure_delay = \"50ms\"\n{extra_smtp}\n{}\n\
         [[users]]\nname = \"billing\"\npassword_hash = {:?}\nallowed_from = [\"billing@example.com\"]\n\
         [[users]]\nname = \"cron\"\npassword_file = {:?}\n",
        tls_toml(&cert, &key, ""),
        hash("right horse"),
        pw_file.display().to_string(),
    );
    (Setup::toml(&toml), cert)
}

#[test]
fn plain_and_login_after_starttls_let_an_outside_client_send() {
    let dir = tempdir();
    let (setup, cert) = setup(dir.path(), "");
    let relay = Relay::start(dir.path(), &setup);
    runtime().block_on(async {
        let tcp = connect_from("127.0.0.2", relay.smtp).await;
        let mut d = Dialogue::new(tcp);
        assert!(d.reply().await.starts_with("220 "));
        d.cmd("EHLO c", "250").await;
        d.cmd("MAIL FROM:<billing@example.com>", "530 5.7.0").await;
        d.cmd("STARTTLS", "220").await;
        let mut d = Dialogue::new(handshake(d.into_inner(), &cert).await.unwrap());
        let ehlo = d.cmd("EHLO c", "250").await;
        assert!(ehlo.contains("AUTH PLAIN LOGIN"), "{ehlo}");
        d.cmd(
            &format!("AUTH PLAIN {}", plain("billing", "wrong")),
            "535 5.7.8",
        )
        .await;
        d.cmd("AUTH PLAIN", "334").await;
        d.cmd(&plain("billing", "right horse"), "235 2.7.0").await;
        d.cmd("MAIL FROM:<ceo@example.com>", "553 5.7.1").await;
        d.cmd("MAIL FROM:<billing@example.com>", "250").await;
        d.cmd("RCPT TO:<x@example.org>", "250").await;
        d.cmd("DATA", "354").await;
        d.cmd(
            "From: ceo@example.com\r\nSubject: spoof\r\n\r\nhi\r\n.",
            "550 5.7.1",
        )
        .await;
        d.cmd("MAIL FROM:<billing@example.com>", "250").await;
        d.cmd("RCPT TO:<x@example.org>", "250").await;
        d.cmd("DATA", "354").await;
        d.cmd(
            "From: Billing <billing@example.com>\r\nSubject: ok\r\n\r\nhi\r\n.",
            "250 2.0.0",
        )
        .await;
        d.cmd("QUIT", "221").await;

        // LOGIN, with a password file; the user has no allowed_from.
        let tcp = connect_from("127.0.0.2", relay.smtp).await;
        let mut d = Dialogue::new(tcp);
        d.reply().await;
        d.cmd("EHLO c", "250").await;
        d.cmd("STARTTLS", "220").await;
        let mut d = Dialogue::new(handshake(d.into_inner(), &cert).await.unwrap());
        d.cmd("EHLO c", "250").await;
        let prompt = d.cmd("AUTH LOGIN", "334 ").await;
        assert_eq!(
            prompt.trim_end(),
            format!("334 {}", B64.encode("Username:"))
        );
        d.cmd(&B64.encode("cron"), "334 ").await;
        d.cmd(&B64.encode("tick tock"), "235").await;
        d.cmd("MAIL FROM:<anyone@example.net>", "250").await;
    });
    assert!(!relay.log().contains("right horse"));
    assert!(!relay.log().contains("tick tock"));
}

#[test]
fn lettre_authenticates_over_starttls_when_auth_is_required() {
    use lettre::message::Message;
    use lettre::transport::smtp::authentication::{Credentials, Mechanism};
    use lettre::transport::smtp::client::{Certificate, Tls, TlsParameters};
    use lettre::{AsyncSmtpTransport, AsyncTransport, Tokio1Executor};

    let dir = tempdir();
    let (setup, cert) = setup(dir.path(), "require_auth = true");
    let relay = Relay::start(dir.path(), &setup);
    let pem = std::fs::read(&cert).unwrap();
    let transport = |user: &str, password: &str, mechanism: Mechanism| {
        let params = TlsParameters::builder("localhost".into())
            .add_root_certificate(Certificate::from_pem(&pem).unwrap())
            .build_rustls()
            .unwrap();
        AsyncSmtpTransport::<Tokio1Executor>::builder_dangerous("127.0.0.1")
            .port(relay.smtp.port())
            .tls(Tls::Required(params))
            .credentials(Credentials::new(user.into(), password.into()))
            .authentication(vec![mechanism])
            .timeout(Some(Duration::from_secs(20)))
            .build()
    };
    let email = Message::builder()
        .from("billing@example.com".parse().unwrap())
        .to("rcpt@example.org".parse().unwrap())
        .subject("authenticated")
        .body("hello".to_string())
        .unwrap();
    runtime().block_on(async {
        let wrong = transport("billing", "nope", Mechanism::Plain);
        assert!(wrong.send(email.clone()).await.is_err());
        for mechanism in [Mechanism::Plain, Mechanism::Login] {
            let t = transport("billing", "right horse", mechanism);
            let r = t.send(email.clone()).await.expect("authenticated send");
            assert!(r.is_positive());
        }
    });
    relay.wait_for("two dry-run outputs", 20, || {
        relay.files_in("dry-run", "json").len() == 2
    });
}

#[test]
fn repeated_failures_from_one_address_get_421_and_stay_blocked() {
    let dir = tempdir();
    let (setup, _) = setup(dir.path(), "max_auth_failures = 2");
    let relay = Relay::start(dir.path(), &setup);
    runtime().block_on(async {
        // 127.0.0.1 is loopback: AUTH is offered without TLS.
        let tcp = tokio::net::TcpStream::connect(relay.smtp).await.unwrap();
        let mut d = Dialogue::new(tcp);
        d.reply().await;
        d.cmd("EHLO c", "250").await;
        d.cmd(
            &format!("AUTH PLAIN {}", plain("billing", "a")),
            "535 5.7.8",
        )
        .await;
        d.cmd(
            &format!("AUTH PLAIN {}", plain("billing", "b")),
            "421 4.7.0",
        )
        .await;
        assert_eq!(d.reply().await, "", "closed");
        let tcp = tokio::net::TcpStream::connect(relay.smtp).await.unwrap();
        let mut d = Dialogue::new(tcp);
        d.reply().await;
        d.cmd("EHLO c", "250").await;
        let right = plain("billing", "right horse");
        d.cmd(&format!("AUTH PLAIN {right}"), "421 4.7.0").await;
    });
}

#[test]
fn auth_is_not_offered_without_accounts() {
    let dir = tempdir();
    let relay = Relay::start(dir.path(), &Setup::default());
    let mut c = relay.connect();
    c.expect("220");
    let ehlo = c.cmd("EHLO c", "250");
    assert!(!ehlo.contains("AUTH"), "{ehlo}");
    c.cmd(&format!("AUTH PLAIN {}", plain("a", "b")), "502");
}

/// swaks `--tls -a` (STARTTLS, then AUTH) against a test certificate.
#[test]
fn swaks_with_tls_and_auth_sends_through_the_relay() {
    let dir = tempdir();
    let (setup, _) = setup(dir.path(), "require_auth = true");
    let relay = Relay::start(dir.path(), &setup);
    let out = Command::new("swaks")
        .args(["--server", &relay.smtp.to_string(), "--tls"])
        .args(["-a", "PLAIN", "-au", "billing", "-ap", "right horse"])
        .args(["--from", "billing@example.com", "--to", "rcpt@example.org"])
        .args(["--header", "From: billing@example.com", "--timeout", "20"])
        .output()
        .expect("swaks (apt install swaks)");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{text}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(text.contains("<-  220 2.0.0 Ready to start TLS"), "{text}");
    assert!(text.contains("<~  235 2.7.0"), "AUTH over TLS: {text}");
    assert!(text.contains("250 2.0.0 Ok: queued as"), "{text}");
}

/// msmtp with `tls on` and `tls_starttls on`, checking the test
/// certificate (whose SAN holds 127.0.0.1, the address it connects to),
/// then AUTH.
#[test]
fn msmtp_with_starttls_and_auth_sends_through_the_relay() {
    let dir = tempdir();
    let (setup, cert) = setup(dir.path(), "require_auth = true");
    let relay = Relay::start(dir.path(), &setup);
    // An empty configuration of its own: nothing from the machine's.
    let rc = dir.path().join("msmtprc");
    std::fs::write(&rc, "").unwrap();
    let mut msmtp = Command::new("msmtp");
    msmtp
        .arg(format!("--file={}", rc.display()))
        .args(["--host=127.0.0.1", &format!("--port={}", relay.smtp.port())])
        .args(["--tls=on", "--tls-starttls=on"])
        .arg(format!("--tls-trust-file={}", cert.display()))
        .args(["--auth=on", "--user=cron", "--passwordeval=echo tick tock"])
        .args(["--timeout=20", "--from=a@example.com", "r@example.org"]);
    let out = support::run_with_input(
        &mut msmtp,
        b"From: a@example.com\r\nTo: r@example.org\r\nSubject: via msmtp\r\n\r\nhi\r\n",
    );
    assert!(
        out.status.success(),
        "msmtp (apt install msmtp): {}",
        String::from_utf8_lossy(&out.stderr)
    );
    relay.wait_for("the dry-run output", 20, || {
        relay.files_in("dry-run", "json").len() == 1
    });
    let sent = support::read_json(&relay.files_in("dry-run", "json")[0]).to_string();
    assert!(sent.contains("via msmtp"), "{sent}");
    // msmtp refuses to go on without STARTTLS; `require_auth` refuses MAIL
    // without AUTH: the log names the user.
    let log = relay.log();
    assert!(
        log.lines()
            .any(|l| l.contains("authenticated") && l.contains("cron")),
        "{log}"
    );
}

/// Python's smtplib, as Django uses it with `EMAIL_USE_TLS`, configured the
/// way Postmark's SMTP service is: user name and password are the token.
#[test]
fn an_app_set_up_for_postmark_smtp_sends_unchanged_through_passthrough() {
    let dir = tempdir();
    let (cert, key) = make_cert(dir.path(), "relay");
    let toml = format!(
        "[smtp]\nauth_passthrough = true\nrequire_auth = true\n{}",
        tls_toml(&cert, &key, "")
    );
    let relay = Relay::start(dir.path(), &Setup::toml(&toml));
    let script = format!(
        "import smtplib, ssl\n\
         ctx = ssl.create_default_context(cafile={cert:?})\n\
         s = smtplib.SMTP('localhost', {port}, timeout=20)\n\
         s.starttls(context=ctx)\n\
         token = '0a1b2c3d-0000-4000-8000-00000000abcd'\n\
         s.login(token, token)\n\
         s.sendmail('app@example.com', ['user@example.org'], 'From: app@example.com\\r\\nSubject: django\\r\\n\\r\\nhi\\r\\n')\n\
         s.quit()\n",
        cert = cert.display().to_string(),
        port = relay.smtp.port(),
    );
    let out = Command::new("python3")
        .args(["-c", &script])
        .output()
        .expect("python3");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    relay.wait_for("the dry-run output", 20, || {
        relay.files_in("dry-run", "json").len() == 1
    });
    let queued = relay.log();
    assert!(
        !queued.contains("0a1b2c3d-0000"),
        "the token is never logged"
    );
}
