//! A full disk, for real: the spool and the maildrop each on a small tmpfs
//! (mounting needs root; otherwise the test says why it skips). While the
//! spool is full SMTP answers `452`/`451` for what it cannot store and never
//! `250` for a message that is not whole on disk; a drop file the daemon
//! cannot import stays in the maildrop; `sendmail` into a full maildrop
//! fails with a temporary error and leaves no partial file; a dead letter
//! the full disk cannot record stays queued, whole. When space returns,
//! everything acknowledged is delivered or dead-lettered.

mod support;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use support::api_mock::{Answer, ApiMock, postmark_error};
use support::{BIN, Relay, Setup, ok_body, queued_id, run_with_input, subjects, tempdir};

/// A tmpfs mounted for the test, unmounted (lazily) when dropped.
struct Tmpfs(PathBuf);

impl Tmpfs {
    /// Mounts a `size` tmpfs at `path`; `Err` says why it cannot.
    fn mount(path: &Path, size: &str, mode: &str) -> Result<Tmpfs, String> {
        std::fs::create_dir_all(path).map_err(|e| e.to_string())?;
        let out = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size},mode={mode}")])
            .arg("tmpfs")
            .arg(path)
            .output()
            .map_err(|e| format!("cannot run mount: {e}"))?;
        if !out.status.success() {
            return Err(String::from_utf8_lossy(&out.stderr).trim().to_string());
        }
        Ok(Tmpfs(path.to_path_buf()))
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.0).status();
    }
}

fn is_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
}

/// Regular files in `dir`, recursively (the maildrop keeps `bad/` inside).
fn files(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        let p = e.path();
        if p.is_dir() {
            out.extend(files(&p));
        } else {
            out.push(p);
        }
    }
    out
}

/// `postrelay sendmail` with the daemon's SMTP port closed: straight to the maildrop.
fn sendmail(maildrop: &Path, subject: &str) -> std::process::Output {
    let mut cmd = Command::new(BIN);
    cmd.args(["sendmail", "-f", "cron@host.example", "rcpt@example.org"])
        .env_clear()
        .env("PATH", "/usr/sbin:/usr/bin:/sbin:/bin")
        .env("POSTRELAY_SMTP__LISTEN", "127.0.0.1:9")
        .env("POSTRELAY_SENDMAIL__MAILDROP", maildrop)
        .env("POSTRELAY_LOCAL__DOMAIN", "host.example");
    run_with_input(&mut cmd, support::simple_message(subject).as_bytes())
}

#[test]
fn a_full_spool_answers_452_never_250_and_delivers_everything_acknowledged_when_space_returns() {
    if !is_root() {
        eprintln!("skipped: mounting a small tmpfs as the spool needs root");
        return;
    }
    let dir = tempdir();
    let spool_fs = match Tmpfs::mount(&dir.path().join("spool"), "8m", "0700") {
        Ok(m) => m,
        Err(why) => {
            eprintln!("skipped: cannot mount a tmpfs ({why})");
            return;
        }
    };
    let drop_fs = Tmpfs::mount(&dir.path().join("dropfs"), "1m", "0755").expect("second tmpfs");
    let maildrop = drop_fs.0.join("maildrop");

    // Down (503) until the test brings it up.
    let up = Arc::new(AtomicBool::new(false));
    let accepted: Arc<Mutex<BTreeMap<String, usize>>> = Arc::default();
    let (up_flag, ledger) = (up.clone(), accepted.clone());
    let api = ApiMock::start(move |req| {
        if !up_flag.load(Ordering::SeqCst) {
            return postmark_error(503, 0, "Service Unavailable");
        }
        let body = req.json();
        for s in subjects(&body) {
            *ledger.lock().unwrap().entry(s).or_default() += 1;
        }
        Answer::json(200, ok_body(&req.path, &body))
    });
    let setup = Setup::toml(&format!(
        "backend = \"postmark\"\n[postmark]\nserver_token = \"t\"\napi_url = \"{}\"\n\
         [delivery]\nretry_initial = \"200ms\"\nretry_max = \"1s\"\nrate_limit = 0\n",
        api.url()
    ))
    .env("POSTRELAY_SENDMAIL__MAILDROP", maildrop.to_str().unwrap());
    let relay = Relay::start(dir.path(), &setup);

    // 256 KB messages until the spool refuses three in a row.
    let filler = format!("{}\r\n", "F".repeat(998)).repeat(256);
    let mut acked: BTreeMap<String, String> = BTreeMap::new();
    let mut refusals = Vec::new();
    let mut c = relay.session();
    for n in 0..200 {
        let subject = format!("fill-{n}");
        let msg = format!("{}{filler}", support::simple_message(&subject));
        let r = c.send_mail("a@example.com", &["rcpt@example.org"], &msg);
        if r.starts_with("250 2.0.0") {
            let id = queued_id(&r);
            // 250 only for a message whole on disk, its record with it.
            let (record, on_disk) = relay.queued(&id).expect("acknowledged message on disk");
            assert!(
                String::from_utf8_lossy(&on_disk)
                    .trim_end()
                    .ends_with(filler.trim_end()),
                "{id} is not whole on disk"
            );
            assert_eq!(record["id"], id.as_str());
            acked.insert(subject, id);
        } else {
            assert!(
                r.starts_with("452") || r.starts_with("451"),
                "a full spool answers 452 or 451, got {r}"
            );
            refusals.push(r);
            if refusals.len() == 3 {
                break;
            }
        }
    }
    assert_eq!(refusals.len(), 3, "the 8 MB spool never filled");
    assert!(!acked.is_empty(), "nothing fitted at all");
    eprintln!(
        "full after {} messages; refusals: {:?}",
        acked.len(),
        refusals
    );
    c.cmd("RSET", "250");
    c.cmd("QUIT", "221");
    relay.wait_for("tmp/ emptied of refused messages", 10, || {
        relay.files_in("tmp", "eml").is_empty()
    });

    // A drop file the full spool cannot take stays in the maildrop. The
    // refusals leave up to one message's worth free: take the rest, so the
    // spool is full to the last byte.
    let spool_ballast = fill(&spool_fs.0);
    let dropped = sendmail(&maildrop, "dropped-while-full");
    assert!(dropped.status.success(), "{dropped:?}");
    relay.wait_log("maildrop file left for the next round", 10);
    let drops: Vec<PathBuf> = files(&maildrop)
        .into_iter()
        .filter(|p| !p.starts_with(maildrop.join("bad")))
        .collect();
    assert_eq!(
        drops.len(),
        1,
        "the drop file waits: {drops:?}\n{}",
        relay.log()
    );
    assert!(
        files(&maildrop.join("bad")).is_empty(),
        "not set aside as bad"
    );
    let log = relay.log();
    let why = log
        .lines()
        .find(|l| l.contains("maildrop file left for the next round"))
        .unwrap();
    assert!(
        why.contains("full") || why.contains("space"),
        "a clear reason: {why}"
    );

    // sendmail into a full maildrop: a temporary failure, no partial file.
    let ballast = drop_fs.0.join("ballast");
    let _ = std::fs::write(&ballast, vec![0u8; 2 << 20]);
    let refused = sendmail(&maildrop, "refused-by-sendmail");
    assert_eq!(refused.status.code(), Some(75), "{refused:?}");
    assert_eq!(
        files(&maildrop).len(),
        1,
        "no partial drop file: {:?}",
        files(&maildrop)
    );
    std::fs::remove_file(&ballast).unwrap();

    // Space returns as the API comes up and delivers the backlog.
    std::fs::remove_file(&spool_ballast).unwrap();
    up.store(true, Ordering::SeqCst);
    relay.wait_for("every acknowledged message delivered", 40, || {
        let accepted = accepted.lock().unwrap();
        acked.keys().all(|s| accepted.contains_key(s))
            && accepted.contains_key("dropped-while-full")
    });
    relay.wait_for("an empty queue", 20, || relay.queued_ids().is_empty());
    assert!(relay.files_in("failed", "json").is_empty());
    assert!(!accepted.lock().unwrap().contains_key("refused-by-sendmail"));
    // ... and the spool takes mail again.
    let id = relay.send_simple("after-space-returned", &["rcpt@example.org"]);
    relay.wait_delivered(&id);
    drop(relay);
    drop(drop_fs);
    drop(spool_fs);
}

/// Fills the filesystem of `dir` to the last byte with a file of its own.
fn fill(dir: &Path) -> PathBuf {
    use std::io::Write;
    let ballast = dir.join("ballast");
    let mut f = std::fs::File::create(&ballast).expect("ballast");
    let chunk = vec![0u8; 4096];
    while f.write_all(&chunk).is_ok() {}
    while f.write_all(&chunk[..1]).is_ok() {}
    let _ = f.sync_all();
    ballast
}

#[test]
fn a_dead_letter_that_a_full_disk_cannot_record_stays_queued_and_is_moved_when_space_returns() {
    if !is_root() {
        eprintln!("skipped: mounting a small tmpfs as the spool needs root");
        return;
    }
    let dir = tempdir();
    let spool_fs = match Tmpfs::mount(&dir.path().join("spool"), "4m", "0700") {
        Ok(m) => m,
        Err(why) => {
            eprintln!("skipped: cannot mount a tmpfs ({why})");
            return;
        }
    };
    // Down (503) until the spool is full, then a permanent refusal.
    let refuse = Arc::new(AtomicBool::new(false));
    let flag = refuse.clone();
    let api = ApiMock::start(move |_| {
        if flag.load(Ordering::SeqCst) {
            postmark_error(422, 300, "Invalid 'To' address")
        } else {
            postmark_error(503, 0, "Service Unavailable")
        }
    });
    let setup = Setup::toml(&format!(
        "backend = \"postmark\"\n[postmark]\nserver_token = \"t\"\napi_url = \"{}\"\n\
         [delivery]\nretry_initial = \"200ms\"\nretry_max = \"500ms\"\nrate_limit = 0\n",
        api.url()
    ));
    let id = {
        let relay = Relay::start(dir.path(), &setup);
        let id = relay.send_simple("doomed", &["rcpt@example.org"]);
        let ballast = fill(&spool_fs.0);
        refuse.store(true, Ordering::SeqCst);
        relay.wait_log("cannot move message to failed/; it stays queued", 30);
        // Not lost, not half-moved: still queued, whole, and nothing in failed/.
        let (_, raw) = relay.queued(&id).expect("still queued");
        assert!(String::from_utf8_lossy(&raw).contains("Subject: doomed"));
        assert!(
            relay.files_in("failed", "json").is_empty(),
            "{:?}",
            relay.files_in("failed", "json")
        );
        std::fs::remove_file(ballast).unwrap();
        id
    };
    // Space is back: the next attempt (at once after a restart) moves it.
    let relay = Relay::start(dir.path(), &setup);
    relay.wait_for("the dead letter in failed/", 30, || {
        relay.files_in("failed", "json").len() == 1
    });
    let record = support::read_json(&relay.spool().join("failed").join(format!("{id}.json")));
    assert_eq!(record["failure"]["code"], "300", "{record}");
    assert!(relay.queued_ids().is_empty());
    drop(relay);
    drop(spool_fs);
}
