//! Broken input over a real socket: DATA ends only on `<CR><LF>.<CR><LF>`,
//! whatever the read boundaries; `MAIL FROM` without its colon and `BDAT`
//! never swallow or smuggle the commands around them.

mod support;

use std::time::Duration;

use support::{Relay, Setup, queued_id, tempdir, unreachable_postmark};

#[test]
fn mail_from_and_rcpt_to_without_a_colon_get_501_and_the_next_command_is_answered() {
    let dir = tempdir();
    let relay = Relay::start(dir.path(), &Setup::toml(""));
    let mut c = relay.session();
    c.send("MAIL FROM\r\nNOOP\r\n");
    c.expect("501 5.5.4");
    c.expect("250");
    // Split inside the verb: still one syntax error, then the next command.
    c.send("MAIL FR");
    c.send("OM\r\nRCPT TO\r\nQUIT\r\n");
    c.expect("501 5.5.4");
    c.expect("501 5.5.4");
    c.expect("221");
    assert!(c.closed());
}

#[test]
fn bdat_gets_502_and_its_chunk_is_dropped_never_read_as_commands() {
    let dir = tempdir();
    let relay = Relay::start(dir.path(), &Setup::toml(""));
    let mut c = relay.session();
    c.cmd("MAIL FROM:<a@example.com>", "250");
    let chunk = "RCPT TO:<b@example.org>\r\nDATA\r\n";
    // The announced bytes arrive in two writes; neither half is a command.
    c.send(&format!("BDAT {} LAST\r\n{}", chunk.len(), &chunk[..10]));
    c.expect("502 5.5.1");
    c.send(&format!("{}NOOP\r\n", &chunk[10..]));
    c.expect("250 2.0.0");
    // The RCPT inside the chunk was never seen: there is no recipient yet.
    c.cmd("DATA", "503 5.5.1");
    c.cmd("QUIT", "221");
}

#[test]
fn bdat_chunk_larger_than_the_message_size_limit_closes_the_session() {
    let dir = tempdir();
    let relay = Relay::start(
        dir.path(),
        &Setup::toml("[smtp]\nmax_message_size = 1000\n"),
    );
    let mut c = relay.session();
    let r = c.cmd("BDAT 1001", "421");
    assert!(r.contains("BDAT"), "{r}");
    assert!(c.closed());
}

#[test]
fn dot_cr_cr_lf_does_not_end_data_and_a_smuggled_message_stays_inside() {
    let dir = tempdir();
    let relay = Relay::start(
        dir.path(),
        &Setup::toml(&unreachable_postmark()).env("POSTRELAY_SMTP__RECEIVED_HEADER", "false"),
    );
    let mut c = relay.session();
    c.cmd("MAIL FROM:<a@example.com>", "250");
    c.cmd("RCPT TO:<b@example.org>", "250");
    c.cmd("DATA", "354");
    c.send("From: a@example.com\r\nSubject: one\r\n\r\nhi\r\n.\r\r\n");
    c.send("MAIL FROM:<evil@example.com>\r\nRCPT TO:<victim@example.org>\r\nDATA\r\n");
    c.send("From: evil@example.com\r\nSubject: two\r\n\r\nsmuggled\r\n.\r\n");
    let r = c.expect("250 2.0.0 Ok: queued as");
    c.cmd("QUIT", "221");
    assert_eq!(relay.queued_ids().len(), 1, "exactly one message");
    let eml = relay.queued(&queued_id(&r)).expect("queued message").1;
    assert_eq!(
        String::from_utf8(eml).unwrap(),
        "From: a@example.com\r\nSubject: one\r\n\r\nhi\r\n\r\r\nMAIL FROM:<evil@example.com>\r\nRCPT TO:<victim@example.org>\r\nDATA\r\nFrom: evil@example.com\r\nSubject: two\r\n\r\nsmuggled\r\n"
    );
}

#[test]
fn a_read_boundary_between_the_final_cr_and_lf_leaves_no_stray_cr() {
    let dir = tempdir();
    let relay = Relay::start(
        dir.path(),
        &Setup::toml(&unreachable_postmark()).env("POSTRELAY_SMTP__RECEIVED_HEADER", "false"),
    );
    let mut c = relay.session();
    c.cmd("MAIL FROM:<a@example.com>", "250");
    c.cmd("RCPT TO:<b@example.org>", "250");
    c.cmd("DATA", "354");
    c.send("From: a@example.com\r\n\r\nbody\r\n.\r");
    // Nothing to wait for: the pause makes the LF arrive in a read of its own.
    std::thread::sleep(Duration::from_millis(50));
    c.send("\n");
    let r = c.expect("250 2.0.0");
    let eml = relay.queued(&queued_id(&r)).expect("queued message").1;
    assert_eq!(eml, b"From: a@example.com\r\n\r\nbody\r\n");
}
