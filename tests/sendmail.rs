//! `sendmail` driven by the real programs that call it (Debian's cron,
//! busybox's crond, PHP's `mail()`, mutt, BSD mailx, s-nail, a
//! Symfony-style `-bs` conversation), each message checked in the daemon's
//! dry-run output; and stdin streamed in bounded memory.

mod support;

use std::io::{BufRead, BufReader, Write};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use support::{BIN, Relay, Setup, read_json, run_with_input, tempdir};

fn dry_run(relay: &Relay) -> Vec<serde_json::Value> {
    relay
        .files_in("dry-run", "json")
        .iter()
        .map(|p| read_json(p))
        .collect()
}

/// An executable `sendmail` wrapper that records its arguments (one per
/// line) in `args.txt` and runs the binary under test against `relay`.
fn wrapper(dir: &Path, relay: &Relay, extra_env: &str) -> (PathBuf, PathBuf) {
    let script = dir.join("sendmail");
    let args = dir.join("args.txt");
    std::fs::write(
        &script,
        format!(
            "#!/bin/sh\nprintf '%s\\n' \"$@\" > {args}\nexport POSTRELAY_SMTP__LISTEN={smtp} POSTRELAY_SENDMAIL__MAILDROP={drop} POSTRELAY_LOCAL__DOMAIN=host.example {extra_env}\nexec {BIN} sendmail \"$@\"\n",
            args = args.display(),
            smtp = relay.smtp,
            drop = dir.join("maildrop").display(),
        ),
    )
    .unwrap();
    std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o755)).unwrap();
    (script, args)
}

fn recorded_args(path: &Path) -> Vec<String> {
    std::fs::read_to_string(path)
        .unwrap()
        .lines()
        .map(str::to_string)
        .collect()
}

#[test]
fn debian_cron_mails_job_output_through_sendmail() {
    assert!(
        Path::new("/usr/sbin/cron").exists(),
        "Debian's cron is not installed: apt-get install cron (.ci/run does)"
    );
    let dir = tempdir();
    let relay = Relay::start(dir.path(), &Setup::toml(""));
    let (script, args) = wrapper(
        dir.path(),
        &relay,
        "POSTRELAY_LOCAL__ADMIN_ADDRESS=ops@example.com",
    );
    // A private mount namespace: /usr/sbin/sendmail is the wrapper, cron.d
    // holds one job, nothing else of the host's cron setup is used.
    let sbin = dir.path().join("sbin");
    let crond = dir.path().join("cron.d");
    std::fs::create_dir_all(&sbin).unwrap();
    std::fs::create_dir_all(&crond).unwrap();
    std::fs::copy(&script, sbin.join("sendmail")).unwrap();
    let cron_bin = dir.path().join("cron");
    std::fs::copy("/usr/sbin/cron", &cron_bin).unwrap();
    std::fs::write(
        crond.join("job"),
        "* * * * * root echo cron-output-marker\n",
    )
    .unwrap();
    std::fs::write(dir.path().join("crontab"), "").unwrap();
    let crontabs = dir.path().join("crontabs");
    std::fs::create_dir_all(&crontabs).unwrap();
    let setup = format!(
        "mount --bind {sbin} /usr/sbin && mount --bind {crond} /etc/cron.d && mount --bind {crontab} /etc/crontab && mount --bind {crontabs} /var/spool/cron/crontabs && mount -t tmpfs none /run && mkdir -p /run && exec {cron} -f -L 15",
        sbin = sbin.display(),
        crond = crond.display(),
        crontab = dir.path().join("crontab").display(),
        crontabs = crontabs.display(),
        cron = cron_bin.display(),
    );
    let mut cron = Command::new("unshare")
        .args(["-m", "--propagation", "private", "sh", "-c", &setup])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("unshare (util-linux; needs root for a private mount namespace)");
    // cron runs the job at the next minute boundary.
    let deadline = Instant::now() + Duration::from_secs(90);
    while dry_run(&relay).is_empty() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(200));
    }
    let _ = cron.kill();
    let _ = cron.wait();
    let requests = dry_run(&relay);
    assert!(
        !requests.is_empty(),
        "cron's mail never arrived; log:\n{}",
        relay.log()
    );
    assert_eq!(
        recorded_args(&args),
        ["-FCronDaemon", "-i", "-B8BITMIME", "-oem", "root"],
        "Debian cron's invocation"
    );
    let r = &requests[0];
    assert_eq!(r["From"], "Cron Daemon <root@host.example>", "{r}");
    // root's mail goes to the admin address; the qualified To: root is a
    // header-only address, which is not sent to.
    assert_eq!(r["Bcc"], "ops@example.com", "{r}");
    assert!(r["To"].is_null(), "{r}");
    assert!(
        r["TextBody"]
            .as_str()
            .unwrap()
            .contains("cron-output-marker"),
        "{r}"
    );
}

#[test]
fn busybox_crond_mails_job_output_through_sendmail() {
    let listed = Command::new("busybox")
        .arg("--list")
        .output()
        .expect("busybox (apt-get install busybox-static; .ci/run does)");
    assert!(
        String::from_utf8_lossy(&listed.stdout)
            .lines()
            .any(|l| l == "crond"),
        "this busybox has no crond applet: apt-get install busybox-static"
    );
    let dir = tempdir();
    let relay = Relay::start(dir.path(), &Setup::toml(""));
    let (_, args) = wrapper(
        dir.path(),
        &relay,
        "POSTRELAY_LOCAL__ADMIN_ADDRESS=ops@example.com",
    );
    // busybox crond runs `sendmail` found on its PATH; the job's crontab
    // sets MAILTO (without it busybox mails nothing).
    let crontabs = dir.path().join("crontabs");
    std::fs::create_dir_all(&crontabs).unwrap();
    std::fs::write(
        crontabs.join("root"),
        "MAILTO=root\n* * * * * echo busybox-output-marker\n",
    )
    .unwrap();
    // A private mount namespace: crond keeps its mail file under
    // /var/spool/cron and its reboot marker under /run, both fresh tmpfs.
    let setup = format!(
        "mount -t tmpfs none /var/spool && mkdir /var/spool/cron && mount -t tmpfs none /run && exec env -i PATH={path}:/usr/bin:/bin busybox crond -f -c {crontabs} -L /dev/null",
        path = dir.path().display(),
        crontabs = crontabs.display(),
    );
    let mut crond = Command::new("unshare")
        .args(["-m", "--propagation", "private", "sh", "-c", &setup])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("unshare (util-linux; needs root for a private mount namespace)");
    // crond runs the job at the next minute boundary.
    let deadline = Instant::now() + Duration::from_secs(90);
    while dry_run(&relay).is_empty() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(200));
    }
    let _ = crond.kill();
    let _ = crond.wait();
    let requests = dry_run(&relay);
    assert!(
        !requests.is_empty(),
        "crond's mail never arrived; log:\n{}",
        relay.log()
    );
    assert_eq!(recorded_args(&args), ["-ti"], "busybox crond's invocation");
    let r = &requests[0];
    assert_eq!(r["Subject"], "cron: echo busybox-output-marker", "{r}");
    assert_eq!(r["From"], "root@host.example", "{r}");
    // `To: root` names a local user: the mail goes to the admin address.
    assert_eq!(r["Bcc"], "ops@example.com", "{r}");
    assert!(r["To"].is_null(), "{r}");
    assert_eq!(r["TextBody"], "busybox-output-marker\r\n", "{r}");
}

#[test]
fn php_mail_with_f_and_r_reaches_the_daemon() {
    let dir = tempdir();
    let relay = Relay::start(dir.path(), &Setup::toml(""));
    let (script, args) = wrapper(dir.path(), &relay, "");
    for (flag, n) in [("-fbounce@example.com", 1), ("-r bounce@example.com", 2)] {
        let code = format!(
            "var_dump(mail('ops@example.org', 'php {n}', \"line one\\n.\\nline three\", 'From: App <app@example.com>', '{flag}'));"
        );
        let out = Command::new("php")
            .args([
                "-n",
                "-d",
                &format!("sendmail_path={} -t -i", script.display()),
                "-r",
                &code,
            ])
            .output()
            .expect("php (apt-get install php-cli)");
        assert!(
            String::from_utf8_lossy(&out.stdout).contains("bool(true)"),
            "{out:?}"
        );
        relay.wait_for("php's message", 20, || dry_run(&relay).len() == n);
        let args = recorded_args(&args);
        assert_eq!(args[..2], ["-t", "-i"], "{args:?}");
        assert!(
            args.iter().any(|a| a.contains("bounce@example.com")),
            "{args:?}"
        );
    }
    let mut requests = dry_run(&relay);
    requests.sort_by_key(|r| r["Subject"].as_str().unwrap().to_string());
    for (r, n) in requests.iter().zip(1..) {
        assert_eq!(r["Subject"], format!("php {n}"));
        assert_eq!(r["From"], "App <app@example.com>");
        assert_eq!(r["To"], "ops@example.org");
        assert_eq!(r["TextBody"], "line one\r\n.\r\nline three\r\n");
    }
    let log = relay.log();
    assert_eq!(log.matches("from=bounce@example.com").count(), 2, "{log}");
}

#[test]
fn mutt_with_dsn_settings_reaches_the_daemon() {
    let dir = tempdir();
    let relay = Relay::start(dir.path(), &Setup::toml(""));
    let (script, args) = wrapper(dir.path(), &relay, "");
    let muttrc = dir.path().join("muttrc");
    std::fs::write(
        &muttrc,
        format!(
            "set sendmail=\"{}\"\nset dsn_notify=\"failure,delay\"\nset dsn_return=\"hdrs\"\nset from=\"user@example.com\"\nset use_from=yes\nset envelope_from=yes\nset record=\"\"\nset folder=\"{}\"\n",
            script.display(),
            dir.path().display()
        ),
    )
    .unwrap();
    let mut child = Command::new("mutt")
        .args(["-n", "-F"])
        .arg(&muttrc)
        .args(["-s", "mutt dsn", "ops@example.org"])
        .env("HOME", dir.path())
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("mutt (apt-get install mutt)");
    child
        .stdin
        .take()
        .unwrap()
        .write_all(b"hello from mutt\n")
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success(), "{out:?}");
    relay.wait_for("mutt's message", 20, || dry_run(&relay).len() == 1);
    let args = recorded_args(&args);
    let joined = args.join(" ");
    assert!(
        joined.contains("-N failure,delay") && joined.contains("-R hdrs"),
        "{args:?}"
    );
    let r = &dry_run(&relay)[0];
    assert_eq!(r["Subject"], "mutt dsn");
    assert!(
        r["From"].as_str().unwrap().ends_with("user@example.com>"),
        "{r}"
    );
    assert_eq!(r["TextBody"], "hello from mutt\r\n");
}

/// Where `.ci/run` unpacks bsd-mailx and s-nail (`apt-get download`,
/// `dpkg -x`): installing bsd-mailx would pull in another MTA.
const MAILX_ROOT: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/target/ci/mailx");

/// Runs an unpacked mail client with `args`, the body on stdin, and waits
/// for its message in the dry-run output.
fn run_mail_client(relay: &Relay, program: &str, args: &[&str], env: &[(&str, &Path)]) {
    let root = Path::new(MAILX_ROOT);
    let bin = root.join("usr/bin").join(program);
    assert!(
        bin.exists(),
        "{} is missing: .ci/run unpacks {program} there",
        bin.display()
    );
    // The unpacked liblockfile, under usr/lib/<multiarch triplet>.
    let libs = std::fs::read_dir(root.join("usr/lib"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .find(|p| p.to_string_lossy().ends_with("-linux-gnu"))
        .expect("an unpacked usr/lib/<triplet>");
    let mut child = Command::new(&bin)
        .args(args)
        .env("LD_LIBRARY_PATH", libs)
        .envs(env.iter().copied())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(b"hello from mailx\n")
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success(), "{out:?}");
    relay.wait_for("the mail client's message", 20, || {
        dry_run(relay).len() == 1
    });
}

#[test]
fn bsd_mailx_with_subject_and_sender_reaches_the_daemon() {
    let dir = tempdir();
    let relay = Relay::start(dir.path(), &Setup::toml(""));
    let (script, args) = wrapper(dir.path(), &relay, "");
    // bsd-mailx runs the program its `sendmail` variable names.
    let mailrc = dir.path().join("mailrc");
    std::fs::write(&mailrc, format!("set sendmail={}\n", script.display())).unwrap();
    run_mail_client(
        &relay,
        "bsd-mailx",
        &[
            "-n",
            "-s",
            "mailx subject",
            "-r",
            "app@example.com",
            "ops@example.org",
        ],
        &[("MAILRC", &mailrc), ("HOME", dir.path())],
    );
    assert_eq!(
        recorded_args(&args),
        ["-i", "-t", "-f", "app@example.com"],
        "bsd-mailx's invocation"
    );
    let r = &dry_run(&relay)[0];
    assert_eq!(r["Subject"], "mailx subject", "{r}");
    assert_eq!(r["From"], "app@example.com", "{r}");
    assert_eq!(r["To"], "ops@example.org", "{r}");
    assert_eq!(r["TextBody"], "hello from mailx\r\n", "{r}");
    let log = relay.log();
    assert!(log.contains("from=app@example.com"), "{log}");
}

#[test]
fn s_nail_with_subject_and_sender_reaches_the_daemon() {
    let dir = tempdir();
    let relay = Relay::start(dir.path(), &Setup::toml(""));
    let (script, args) = wrapper(dir.path(), &relay, "");
    let mta = format!("mta={}", script.display());
    run_mail_client(
        &relay,
        "s-nail",
        &[
            "-n",
            "-S",
            &mta,
            "-s",
            "s-nail subject",
            "-r",
            "app@example.com",
            "ops@example.org",
        ],
        &[("MAILRC", Path::new("/dev/null")), ("HOME", dir.path())],
    );
    assert_eq!(
        recorded_args(&args),
        ["-i", "-f", "app@example.com", "--", "ops@example.org"],
        "s-nail's invocation"
    );
    let r = &dry_run(&relay)[0];
    assert_eq!(r["Subject"], "s-nail subject", "{r}");
    assert_eq!(r["From"], "app@example.com", "{r}");
    assert_eq!(r["To"], "ops@example.org", "{r}");
    assert_eq!(r["TextBody"], "hello from mailx\r\n", "{r}");
    let log = relay.log();
    assert!(log.contains("from=app@example.com"), "{log}");
}

/// Speaks SMTP to `sendmail -bs -i` over its stdin/stdout, as Symfony Mailer does.
fn bs_conversation(server: &str, maildrop: &Path) -> Vec<String> {
    let mut child = Command::new(BIN)
        .args(["sendmail", "-bs", "-i", "--server", server])
        .env_clear()
        .env("POSTRELAY_SENDMAIL__MAILDROP", maildrop)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdin = child.stdin.take().unwrap();
    let mut stdout = BufReader::new(child.stdout.take().unwrap());
    let mut replies = Vec::new();
    let mut read_reply = |replies: &mut Vec<String>| loop {
        let mut line = String::new();
        stdout.read_line(&mut line).unwrap();
        if line.as_bytes().get(3) != Some(&b'-') {
            replies.push(line.trim_end().to_string());
            break;
        }
    };
    read_reply(&mut replies);
    for cmd in [
        "EHLO app.example",
        "MAIL FROM:<app@example.com>",
        "RCPT TO:<ops@example.org>",
        "DATA",
        "Subject: via -bs\r\n\r\n..leading dot\r\nbody\r\n.",
        "QUIT",
    ] {
        stdin.write_all(format!("{cmd}\r\n").as_bytes()).unwrap();
        read_reply(&mut replies);
    }
    assert!(child.wait().unwrap().success());
    replies
}

#[test]
fn bs_conversation_is_relayed_to_the_daemon() {
    let dir = tempdir();
    let relay = Relay::start(dir.path(), &Setup::toml(""));
    let replies = bs_conversation(&relay.smtp.to_string(), &dir.path().join("maildrop"));
    let codes: Vec<&str> = replies.iter().map(|r| &r[..3]).collect();
    assert_eq!(
        codes,
        ["220", "250", "250", "250", "354", "250", "221"],
        "{replies:?}"
    );
    assert!(replies[5].contains("queued as"), "{replies:?}");
    relay.wait_for("the -bs message", 20, || dry_run(&relay).len() == 1);
    let r = &dry_run(&relay)[0];
    assert_eq!(r["Subject"], "via -bs");
    assert_eq!(r["TextBody"], ".leading dot\r\nbody\r\n");
}

#[test]
fn bs_conversation_with_the_daemon_down_is_kept_in_the_maildrop() {
    let dir = tempdir();
    let maildrop = dir.path().join("maildrop");
    std::fs::create_dir(&maildrop).unwrap();
    let replies = bs_conversation("127.0.0.1:9", &maildrop);
    assert!(
        replies[5].starts_with("250 2.0.0 Ok: kept in the maildrop as "),
        "{replies:?}"
    );
    let files: Vec<_> = std::fs::read_dir(&maildrop).unwrap().collect();
    assert_eq!(files.len(), 1);
}

#[test]
fn a_large_message_streams_through_in_bounded_memory() {
    let dir = tempdir();
    let maildrop = dir.path().join("maildrop");
    std::fs::create_dir(&maildrop).unwrap();
    let mut child = Command::new(BIN)
        .args(["sendmail", "--server", "127.0.0.1:9", "r@example.org"])
        .env_clear()
        .env("POSTRELAY_SENDMAIL__MAILDROP", &maildrop)
        .env("POSTRELAY_SMTP__MAX_MESSAGE_SIZE", "300000000")
        .stdin(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdin = child.stdin.take().unwrap();
    stdin.write_all(b"Subject: big\n\n").unwrap();
    let line = [b"x".repeat(999), b"\n".to_vec()].concat();
    let chunk = line.repeat(1000);
    let total_mb = 100;
    for _ in 0..total_mb {
        stdin.write_all(&chunk).unwrap();
    }
    stdin.flush().unwrap();
    // All of it was read (the pipe holds at most 64 KiB), the child still runs.
    let hwm_kib: u64 = std::fs::read_to_string(format!("/proc/{}/status", child.id()))
        .unwrap()
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .unwrap();
    drop(stdin);
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        hwm_kib < 32 * 1024,
        "peak RSS {hwm_kib} KiB for a {total_mb} MB message"
    );
    let files: Vec<PathBuf> = std::fs::read_dir(&maildrop)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    let size = std::fs::metadata(&files[0]).unwrap().len();
    assert!(size > total_mb * 1_000_000, "{size}");
}

#[test]
fn an_argument_carrying_smtp_is_a_usage_error_and_nothing_is_sent() {
    let dir = tempdir();
    let maildrop = dir.path().join("maildrop");
    std::fs::create_dir(&maildrop).unwrap();
    let out = Command::new(BIN)
        .args(["sendmail", "--server", "127.0.0.1:9", "-f"])
        .arg("app@example.com>\r\nRCPT TO:<victim@evil.example>")
        .arg("r@example.org")
        .env_clear()
        .env("POSTRELAY_SENDMAIL__MAILDROP", &maildrop)
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(64));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("argument 4 (app@example.com>) contains CR, LF or NUL"),
        "{err}"
    );
    assert_eq!(std::fs::read_dir(&maildrop).unwrap().count(), 0);
}

#[test]
fn a_permanent_refusal_exits_with_sysexits_and_the_daemons_text() {
    let dir = tempdir();
    let relay = Relay::start(dir.path(), &Setup::toml(""));
    let maildrop = dir.path().join("maildrop");
    let out = run_with_input(
        Command::new(BIN)
            .args([
                "sendmail",
                "--server",
                &relay.smtp.to_string(),
                "r@example.org",
            ])
            .env_clear()
            .env("POSTRELAY_SENDMAIL__MAILDROP", &maildrop),
        b"X-PM-Tag: a\nX-PM-Tag: b\nSubject: s\n\nb\n",
    );
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(65), "{err}");
    assert!(
        err.contains("refused the message at end of data: 5"),
        "{err}"
    );
    let left: Vec<PathBuf> = std::fs::read_dir(&maildrop)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.is_file())
        .collect();
    assert!(left.is_empty(), "a refused message is not kept: {left:?}");
}

#[test]
fn mailq_and_newaliases_links_behave_as_on_postfix() {
    let dir = tempdir();
    let link = |name: &str| {
        let path = dir.path().join(name);
        std::os::unix::fs::symlink(BIN, &path).unwrap();
        Command::new(path)
            .env_clear()
            .env("POSTRELAY_SPOOL__DIR", dir.path().join("spool"))
            .output()
            .unwrap()
    };
    let out = link("newaliases");
    assert!(out.status.success() && out.stdout.is_empty(), "{out:?}");
    let out = link("mailq");
    assert!(out.status.success(), "{out:?}");
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        "Queue is empty."
    );
}

#[test]
fn more_recipients_than_the_daemon_takes_is_refused_not_dropped() {
    let dir = tempdir();
    let maildrop = dir.path().join("maildrop");
    std::fs::create_dir(&maildrop).unwrap();
    let out = Command::new(BIN)
        .args([
            "sendmail",
            "--server",
            "127.0.0.1:9",
            "a@example.org",
            "b@example.org",
        ])
        .env_clear()
        .env("POSTRELAY_SENDMAIL__MAILDROP", &maildrop)
        .env("POSTRELAY_SMTP__MAX_RECIPIENTS", "1")
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(65), "{out:?}");
    assert!(String::from_utf8_lossy(&out.stderr).contains("more than smtp.max_recipients (1)"));
    assert_eq!(std::fs::read_dir(&maildrop).unwrap().count(), 0);
}
