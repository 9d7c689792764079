//! The spool trusts nothing it did not create: with symlinks planted in it,
//! a directory others can write, or a foreign owner, the daemon and the
//! queue CLI refuse to start with a message saying what to fix, and nothing
//! outside the spool is touched; an entry's id comes from its file name.

mod support;

use std::os::unix::fs::{PermissionsExt, symlink};
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use support::{BIN, Relay, Setup, tempdir};

const ID: &str = "01HQ7W8Z9X0Y1V2T3S4R5P6N7M";

/// A spool as postrelay itself leaves it, and an `outside/` with precious files.
fn tree(dir: &Path) -> (PathBuf, PathBuf) {
    let spool = dir.join("spool");
    let out = Command::new(BIN)
        .args(["queue", "retry", "--all"])
        .env_clear()
        .env("POSTRELAY_SPOOL__DIR", &spool)
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    let outside = dir.join("outside");
    std::fs::create_dir(&outside).unwrap();
    for name in ["precious.json", "precious.eml", "keep.eml", "keep.json"] {
        std::fs::write(outside.join(name), "precious").unwrap();
    }
    (spool, outside)
}

fn untouched(outside: &Path) {
    for name in ["precious.json", "precious.eml", "keep.eml", "keep.json"] {
        assert_eq!(
            std::fs::read_to_string(outside.join(name)).unwrap(),
            "precious",
            "{name} was touched"
        );
    }
}

/// Runs postrelay with `args` on `spool`; kills it if it is still running after 20 s.
fn run(spool: &Path, args: &[&str]) -> Output {
    let mut child = Command::new(BIN)
        .args(args)
        .env_clear()
        .env("POSTRELAY_SMTP__LISTEN", "127.0.0.1:0")
        .env("POSTRELAY_SPOOL__DIR", spool)
        .env("POSTRELAY_SPOOL__MIN_FREE_SPACE", "0")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    while child.try_wait().unwrap().is_none() {
        if Instant::now() > deadline {
            let _ = child.kill();
            let out = child.wait_with_output().unwrap();
            panic!(
                "postrelay {args:?} kept running on an unsafe spool:\n{}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    child.wait_with_output().unwrap()
}

/// The daemon and every queue command that opens the spool refuse it, naming `culprit` and `fix`.
fn refused(spool: &Path, culprit: &Path, fix: &str) {
    for args in [
        &["serve"][..],
        &["queue", "retry", "--all"],
        &["queue", "requeue", "--all"],
        &["queue", "delete", ID],
    ] {
        let out = run(spool, args);
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{args:?} accepted the spool: {err}");
        assert!(
            err.contains(&culprit.display().to_string()) && err.contains(fix),
            "{args:?}: the message must name {} and say `{fix}`: {err}",
            culprit.display()
        );
    }
}

#[test]
fn planted_symlinks_in_the_spool_refuse_the_start_and_touch_nothing_outside() {
    for sub in ["tmp", "dry-run", "queue", "failed", "log"] {
        let dir = tempdir();
        let (spool, outside) = tree(dir.path());
        std::fs::remove_dir(spool.join(sub)).unwrap();
        symlink(&outside, spool.join(sub)).unwrap();
        refused(&spool, &spool.join(sub), "symbolic link");
        untouched(&outside);
    }
}

#[test]
fn a_symlinked_lock_file_or_spool_root_is_refused() {
    let dir = tempdir();
    let (spool, outside) = tree(dir.path());
    let lock = spool.join("postrelay.lock");
    std::fs::remove_file(&lock).unwrap();
    symlink(outside.join("keep.json"), &lock).unwrap();
    refused(&spool, &lock, "symbolic link");
    untouched(&outside);
    // A root symlink in a directory anyone can write could have been planted.
    let open_dir = dir.path().join("anyone-writes-here");
    std::fs::create_dir(&open_dir).unwrap();
    std::fs::set_permissions(&open_dir, std::fs::Permissions::from_mode(0o777)).unwrap();
    let linked = open_dir.join("spool");
    symlink(&spool, &linked).unwrap();
    refused(&linked, &linked, "symbolic link");
}

#[test]
fn a_root_symlink_only_a_trusted_user_could_make_is_followed_like_systemds_state_directory() {
    // systemd's DynamicUser: /var/lib/postrelay -> private/postrelay, made by root.
    let dir = tempdir();
    let (spool, _) = tree(dir.path());
    let linked = dir.path().join("state-dir");
    symlink(&spool, &linked).unwrap();
    let out = run(&linked, &["queue", "retry", "--all"]);
    assert!(out.status.success(), "{out:?}");
    let out = run(&linked, &["queue", "list"]);
    assert!(out.status.success(), "{out:?}");
}

#[test]
fn a_directory_others_can_write_is_refused_with_the_chmod_that_fixes_it() {
    for (sub, mode) in [
        ("", 0o777),
        ("queue", 0o770),
        ("tmp", 0o722),
        ("dry-run", 0o775),
        ("log", 0o707),
    ] {
        let dir = tempdir();
        let (spool, outside) = tree(dir.path());
        let path = if sub.is_empty() {
            spool.clone()
        } else {
            spool.join(sub)
        };
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(mode)).unwrap();
        refused(&spool, &path, &format!("chmod 700 {}", path.display()));
        untouched(&outside);
    }
}

#[test]
fn a_directory_owned_by_another_user_is_refused_with_the_chown_that_fixes_it() {
    if rustix::process::geteuid().as_raw() != 0 {
        println!("skipped: only root can give a directory to another user");
        return;
    }
    let dir = tempdir();
    let (spool, outside) = tree(dir.path());
    let queue = spool.join("queue");
    rustix::fs::chown(&queue, Some(rustix::fs::Uid::from_raw(65534)), None).unwrap();
    refused(&spool, &queue, &format!("chown 0 {}", queue.display()));
    untouched(&outside);
}

#[test]
fn a_record_naming_a_path_outside_the_spool_cannot_make_postrelay_touch_it() {
    let dir = tempdir();
    let (spool, outside) = tree(dir.path());
    let record = r#"{"version": 2, "id": "../../outside/precious",
        "envelope": {"mail_from": "a@example.com", "rcpt_to": ["b@example.org"]}, "size": 30,
        "received_at": "2026-01-01T00:00:00Z", "attempts": 0, "next_attempt_at": "2026-01-01T00:00:00Z"}"#;
    std::fs::write(spool.join("queue").join(format!("{ID}.json")), record).unwrap();
    std::fs::write(
        spool.join("queue").join(format!("{ID}.eml")),
        "Subject: x\r\nFrom: a@example.com\r\nTo: b@example.org\r\n\r\nhi\r\n",
    )
    .unwrap();
    // The CLI, owning the spool itself, retries it; then the daemon delivers it.
    let out = run(&spool, &["queue", "retry", ID]);
    assert!(out.status.success(), "{out:?}");
    let relay = Relay::start(dir.path(), &Setup::toml(""));
    relay.wait_for("the dry-run output", 20, || {
        spool.join("dry-run").join(format!("{ID}.json")).exists()
    });
    relay.wait_for("an empty queue", 20, || {
        relay.queued_ids().is_empty() && relay.files_in("queue", "eml").is_empty()
    });
    untouched(&outside);
}
