//! The maildrop end to end with the real binary: mail submitted while the
//! daemon is stopped (as root and as an unprivileged user) is kept, private
//! to its sender, and delivered once when the daemon starts; a corrupt drop
//! file is moved aside and logged while the others are delivered.

mod support;

use std::io::Write;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

use support::{BIN, Relay, Setup, read_json, run_with_input, tempdir};

/// A port nothing listens on: the daemon is "down".
const DOWN: &str = "127.0.0.1:9";

/// Runs `sendmail ARGS` (through `runuser -u USER` when given) with `input` on stdin.
fn sendmail(user: Option<&str>, maildrop: &Path, args: &[&str], input: &str) -> Output {
    let mut cmd = match user {
        Some(u) => {
            let mut c = Command::new("runuser");
            c.args(["-u", u, "--", BIN]);
            c
        }
        None => Command::new(BIN),
    };
    cmd.arg("sendmail")
        .args(args)
        .env_clear()
        .env("PATH", "/usr/sbin:/usr/bin:/sbin:/bin")
        .env("POSTRELAY_SMTP__LISTEN", DOWN)
        .env("POSTRELAY_SENDMAIL__MAILDROP", maildrop)
        .env("POSTRELAY_LOCAL__DOMAIN", "host.example")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = cmd.spawn().expect("spawn sendmail");
    child
        .stdin
        .take()
        .unwrap()
        .write_all(input.as_bytes())
        .unwrap();
    child.wait_with_output().unwrap()
}

fn drop_files(maildrop: &Path) -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = std::fs::read_dir(maildrop)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.is_file())
        .collect();
    v.sort();
    v
}

/// A test directory other users may traverse (tempdir makes it 0700).
fn shared_dir() -> tempfile::TempDir {
    let dir = tempdir();
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    dir
}

fn dry_run_requests(relay: &Relay) -> Vec<serde_json::Value> {
    relay
        .files_in("dry-run", "json")
        .iter()
        .map(|p| read_json(p))
        .collect()
}

#[test]
fn mail_left_while_the_daemon_is_stopped_is_private_and_delivered_once() {
    let dir = shared_dir();
    let maildrop = dir.path().join("maildrop");
    // The daemon creates the maildrop; then it stops.
    let mut relay = Relay::start(dir.path(), &Setup::toml(""));
    relay.wait_for("the maildrop", 10, || maildrop.exists());
    assert!(relay.terminate().success());
    assert_eq!(
        std::fs::metadata(&maildrop).unwrap().mode() & 0o7777,
        0o3733
    );

    let as_root = sendmail(
        None,
        &maildrop,
        &["-i", "ops@example.org"],
        "Subject: from root\n\nbody\n",
    );
    assert!(as_root.status.success(), "{as_root:?}");
    let as_nobody = sendmail(
        Some("nobody"),
        &maildrop,
        &["-t", "-i"],
        "To: ops@example.org\nSubject: from nobody\n\nbody\n",
    );
    assert!(as_nobody.status.success(), "{as_nobody:?}");
    let files = drop_files(&maildrop);
    assert_eq!(files.len(), 2, "{files:?}");
    let nobody_file = files
        .iter()
        .find(|f| std::fs::metadata(f).unwrap().uid() == 65534)
        .expect("a drop file owned by nobody");
    assert_eq!(
        std::fs::metadata(nobody_file).unwrap().mode() & 0o777,
        0o640
    );

    // Another unprivileged user can neither list, read nor delete it.
    let other = |cmd: &str| {
        Command::new("runuser")
            .args(["-u", "daemon", "--", "sh", "-c", cmd])
            .output()
            .unwrap()
    };
    let path = nobody_file.display().to_string();
    assert!(
        !other(&format!("ls {}", maildrop.display()))
            .status
            .success()
    );
    assert!(!other(&format!("cat {path}")).status.success());
    assert!(!other(&format!("rm -f {path}")).status.success());
    assert!(!other(&format!("mv {path} {path}.x")).status.success());
    assert!(nobody_file.exists());

    let relay = Relay::start(dir.path(), &Setup::toml(""));
    relay.wait_for("both messages delivered", 20, || {
        dry_run_requests(&relay).len() == 2
    });
    relay.wait_for("the maildrop emptied", 10, || {
        drop_files(&maildrop).is_empty()
    });
    let mut subjects: Vec<String> = dry_run_requests(&relay)
        .iter()
        .map(|r| r["Subject"].as_str().unwrap().to_string())
        .collect();
    subjects.sort();
    assert_eq!(subjects, ["from nobody", "from root"]);
    // The import's log line may come after the delivery it made possible.
    relay.wait_for("both imports logged with their uid", 10, || {
        let log = relay.log();
        log.contains("uid=65534") && log.contains("uid=0")
    });
    let senders: Vec<String> = dry_run_requests(&relay)
        .iter()
        .map(|r| r["From"].as_str().unwrap().to_string())
        .collect();
    assert!(
        senders.contains(&"nobody@host.example".to_string()),
        "{senders:?}"
    );
    assert!(
        senders.contains(&"root@host.example".to_string()),
        "{senders:?}"
    );
    assert!(relay.queued_ids().is_empty());
}

#[test]
fn a_corrupt_drop_file_is_moved_aside_and_logged_and_the_others_delivered() {
    let dir = shared_dir();
    let maildrop = dir.path().join("maildrop");
    let mut relay = Relay::start(dir.path(), &Setup::toml(""));
    relay.wait_for("the maildrop", 10, || maildrop.exists());
    assert!(relay.terminate().success());

    for subject in ["one", "two"] {
        let out = sendmail(
            None,
            &maildrop,
            &["r@example.org"],
            &format!("Subject: {subject}\n\nb\n"),
        );
        assert!(out.status.success(), "{out:?}");
    }
    let corrupt = maildrop.join("00-corrupt");
    std::fs::write(
        &corrupt,
        "POSTRELAY-MAILDROP 1\nF a@x\nR r@x>\n\nSubject: evil\r\n\r\n",
    )
    .unwrap();

    let relay = Relay::start(dir.path(), &Setup::toml(""));
    relay.wait_for("two deliveries", 20, || dry_run_requests(&relay).len() == 2);
    relay.wait_log("maildrop file refused, moved to bad/", 10);
    assert!(maildrop.join("bad/00-corrupt").exists());
    assert_eq!(
        std::fs::read_to_string(maildrop.join("bad/00-corrupt.reason")).unwrap(),
        "address on envelope line 3 is not valid\n"
    );
    assert!(drop_files(&maildrop).is_empty());
}

#[test]
fn while_the_daemon_runs_sendmail_hands_mail_straight_to_it() {
    let dir = shared_dir();
    let relay = Relay::start(dir.path(), &Setup::toml(""));
    let out = run_with_input(
        Command::new(BIN)
            .args([
                "sendmail",
                "-v",
                "--server",
                &relay.smtp.to_string(),
                "r@example.org",
            ])
            .env_clear()
            .env("POSTRELAY_SENDMAIL__MAILDROP", dir.path().join("maildrop")),
        b"Subject: direct\n\nb\n",
    );
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success() && err.contains("queued as"), "{err}");
    assert!(drop_files(&dir.path().join("maildrop")).is_empty());
}

#[test]
fn a_temporary_refusal_keeps_the_message_in_the_maildrop_until_the_spool_can_take_it() {
    let dir = shared_dir();
    let maildrop = dir.path().join("maildrop");
    let full = Setup::toml("").env("POSTRELAY_SPOOL__MIN_FREE_SPACE", "18446744073709551615");
    let relay = Relay::start(dir.path(), &full);
    relay.wait_for("the maildrop", 10, || maildrop.exists());
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
        b"Subject: later\n\nb\n",
    );
    assert!(out.status.success(), "{out:?}");
    assert_eq!(drop_files(&maildrop).len(), 1);
    // The daemon cannot import it either while its spool is full: it stays.
    relay.wait_log("maildrop file left for the next round", 10);
    assert_eq!(drop_files(&maildrop).len(), 1);
    drop(relay);
    let relay = Relay::start(dir.path(), &Setup::toml(""));
    relay.wait_for("the delivery", 20, || dry_run_requests(&relay).len() == 1);
    relay.wait_for("the maildrop emptied", 10, || {
        drop_files(&maildrop).is_empty()
    });
    assert_eq!(dry_run_requests(&relay)[0]["Subject"], "later");
}
