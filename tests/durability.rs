//! Crash safety and shutdown with the real binary: what got `250` survives
//! `kill -9`; SIGTERM drains and exits cleanly; start-up recovery cleans up.

mod support;

use std::collections::BTreeSet;

use support::{Relay, Setup, queued_id, simple_message, tempdir, unreachable_postmark};

#[test]
fn kill_9_before_delivery_loses_nothing_that_got_250() {
    let dir = tempdir();
    const N: usize = 40;
    let mut ids = BTreeSet::new();
    // An API that accepts connections and never answers: every delivery is
    // in flight when the daemon dies, nothing was recorded yet.
    let api = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let toml = format!(
        "backend = \"postmark\"\n[postmark]\nserver_token = \"t\"\napi_url = \"http://{}\"\n",
        api.local_addr().unwrap()
    );
    {
        let mut relay = Relay::start(dir.path(), &Setup::toml(&toml));
        let mut c = relay.connect();
        c.expect("220");
        c.cmd("EHLO client", "250");
        for i in 0..N {
            let r = c.send_mail(
                "a@example.com",
                &["b@example.org"],
                &simple_message(&format!("crash-{i}")),
            );
            assert!(r.starts_with("250 2.0.0"), "{r}");
            ids.insert(queued_id(&r));
        }
        relay.kill9();
    }
    assert_eq!(ids.len(), N);
    // Restart on the same spool with the dry-run backend: everything is delivered.
    let relay = Relay::start(dir.path(), &Setup::toml(""));
    relay.wait_for("all dry-run outputs", 30, || {
        relay.files_in("dry-run", "json").len() == N
    });
    let delivered: BTreeSet<String> = relay
        .files_in("dry-run", "json")
        .iter()
        .map(|p| p.file_stem().unwrap().to_string_lossy().into_owned())
        .collect();
    assert_eq!(delivered, ids);
    relay.wait_for("an empty queue", 30, || relay.queued_ids().is_empty());
    assert!(
        relay.log().contains(&format!("queued={N}")),
        "{}",
        relay.log()
    );
}

#[test]
fn kill_9_mid_transaction_leaves_no_partial_message() {
    let dir = tempdir();
    {
        let mut relay = Relay::start(dir.path(), &Setup::toml(&unreachable_postmark()));
        let mut c = relay.connect();
        c.expect("220");
        c.cmd("EHLO client", "250");
        c.cmd("MAIL FROM:<a@example.com>", "250");
        c.cmd("RCPT TO:<b@example.org>", "250");
        c.cmd("DATA", "354");
        // Past what is held in memory: the message spills to its temp file.
        c.send("Subject: half\r\n\r\n");
        c.send(&format!("{}\r\n", "x".repeat(70)).repeat(2000));
        c.send("this message never ends");
        relay.wait_for("the temp file", 10, || {
            !relay.files_in("tmp", "eml").is_empty()
        });
        relay.kill9();
    }
    let relay = Relay::start(dir.path(), &Setup::toml(""));
    assert!(relay.log().contains("temp_removed=1"), "{}", relay.log());
    assert!(relay.files_in("tmp", "eml").is_empty());
    assert!(relay.queued_ids().is_empty());
}

#[test]
fn sigterm_finishes_the_open_transaction_then_exits_zero() {
    let dir = tempdir();
    let mut relay = Relay::start(dir.path(), &Setup::toml(&unreachable_postmark()));
    let mut idle = relay.connect();
    idle.expect("220");
    let mut c = relay.connect();
    c.expect("220");
    c.cmd("EHLO client", "250");
    c.cmd("MAIL FROM:<a@example.com>", "250");
    c.cmd("RCPT TO:<b@example.org>", "250");
    c.cmd("DATA", "354");
    support::signal(relay.child.id(), "TERM");
    relay.wait_log("draining", 10);
    // The idle session is told to go away; the one in DATA completes.
    idle.expect("421 4.3.2");
    c.send(&simple_message("during-shutdown"));
    c.send(".\r\n");
    let r = c.expect("250 2.0.0");
    // The session is idle again: it is told 421, and the drained daemon exits.
    c.expect("421 4.3.2");
    let status = relay.wait_exit();
    assert!(status.success(), "{status:?}\n{}", relay.log());
    let id = queued_id(&r);
    assert!(relay.queued_ids().contains(&id), "{id} queued");
}

#[test]
fn orphan_message_without_envelope_is_removed_at_start_up() {
    let dir = tempdir();
    let queue = dir.path().join("spool").join("queue");
    std::fs::create_dir_all(&queue).unwrap();
    // A crash between the two renames: the .eml arrived, its .json never did (no 250 was sent).
    std::fs::write(
        queue.join("01HZZZZZZZZZZZZZZZZZZZZZZ0.eml"),
        simple_message("orphan"),
    )
    .unwrap();
    std::fs::write(queue.join("01HYYYYYYYYYYYYYYYYYYYYYY0.json"), "{not json").unwrap();
    std::fs::write(
        queue.join("01HYYYYYYYYYYYYYYYYYYYYYY0.eml"),
        simple_message("broken"),
    )
    .unwrap();
    let relay = Relay::start(dir.path(), &Setup::toml(""));
    assert!(relay.log().contains("orphans_removed=1"), "{}", relay.log());
    assert!(relay.log().contains("broken=1"), "{}", relay.log());
    assert!(!queue.join("01HZZZZZZZZZZZZZZZZZZZZZZ0.eml").exists());
    assert!(
        queue
            .join("01HYYYYYYYYYYYYYYYYYYYYYY0.json.broken")
            .exists()
    );
}

#[test]
fn temp_files_of_a_save_killed_midway_are_removed_at_start_up() {
    let dir = tempdir();
    let spool = dir.path().join("spool");
    for sub in ["queue", "tmp"] {
        std::fs::create_dir_all(spool.join(sub)).unwrap();
    }
    // An older version's fixed temp name beside the record, and ours in tmp/.
    let old = spool
        .join("queue")
        .join(".01HZZZZZZZZZZZZZZZZZZZZZZ0.json.tmp");
    let new = spool
        .join("tmp")
        .join(".01HZZZZZZZZZZZZZZZZZZZZZZ0.json.9f3a0c1d2e4b5a69.tmp");
    std::fs::write(&old, "{\"version\": 2, \"half").unwrap();
    std::fs::write(&new, "{\"version\": 2, \"half").unwrap();
    let relay = Relay::start(dir.path(), &Setup::toml(""));
    assert!(relay.log().contains("temp_removed=2"), "{}", relay.log());
    assert!(!old.exists() && !new.exists());
}

#[test]
fn a_message_whose_api_call_was_cut_by_kill_9_is_logged_as_may_duplicate_after_restart() {
    let dir = tempdir();
    // An API that takes the request and never answers: the call is in
    // flight when the daemon dies.
    let api = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let toml = format!(
        "backend = \"postmark\"\n[postmark]\nserver_token = \"t\"\napi_url = \"http://{}\"\n",
        api.local_addr().unwrap()
    );
    let id = {
        let mut relay = Relay::start(dir.path(), &Setup::toml(&toml));
        let id = relay.send_simple("in flight", &["b@example.org"]);
        // The daemon has connected to the API: its call is under way.
        let (_held, _) = api.accept().unwrap();
        relay.kill9();
        id
    };
    let relay = Relay::start(dir.path(), &Setup::toml(""));
    relay.wait_for("the dry-run output", 30, || {
        relay.files_in("dry-run", "json").len() == 1
    });
    let log = relay.log();
    let line = log
        .lines()
        .find(|l| l.contains("may duplicate"))
        .unwrap_or_else(|| panic!("no may-duplicate line:\n{log}"));
    assert!(line.contains(&id), "{line}");
    assert!(log.contains("may_duplicate=1"), "{log}");
}
