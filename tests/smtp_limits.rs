//! Memory bounded by configuration: the header block cap refuses a header
//! flood before anything parses it, and DATA-time checks of concurrent large
//! messages share one memory budget. Peak RSS is printed for both loads.

mod support;

use std::time::Duration;

use support::{Relay, Setup, simple_message, tempdir};

#[test]
fn header_block_over_max_header_size_gets_552_and_the_session_goes_on() {
    let dir = tempdir();
    let relay = Relay::start(dir.path(), &Setup::toml("[smtp]\nmax_header_size = 1024\n"));
    let mut c = relay.session();
    let header = "X-Filler: 0123456789012345678901234567890123456789\r\n".repeat(30);
    let r = c.send_mail(
        "a@example.com",
        &["b@example.org"],
        &format!("From: a@example.com\r\n{header}\r\nbody\r\n"),
    );
    assert!(r.starts_with("552 5.3.4"), "{r}");
    assert!(r.contains("Header block") && r.contains("1024"), "{r}");
    // Just under the cap is accepted, on the same session.
    let header = "X-Filler: 0123456789\r\n".repeat(40);
    let r = c.send_mail(
        "a@example.com",
        &["b@example.org"],
        &format!("{header}{}", simple_message("fits")),
    );
    assert!(r.starts_with("250 2.0.0"), "{r}");
    assert!(relay.files_in("tmp", "eml").is_empty());
}

#[test]
fn header_flood_is_refused_by_the_cap_without_being_parsed() {
    let dir = tempdir();
    // Default limits: 10 MiB messages, 1 MiB of header block.
    let relay = Relay::start(dir.path(), &Setup::toml(""));
    let mut c = relay.session();
    c.cmd("MAIL FROM:<a@example.com>", "250");
    c.cmd("RCPT TO:<b@example.org>", "250");
    c.cmd("DATA", "354");
    let (before, _) = relay.rss_kib();
    // 700 000 header lines of 14 bytes: 9.8 MB.
    let block = "X-Hdr: 123456\r\n".repeat(10_000);
    for _ in 0..70 {
        c.send(&block);
    }
    c.send("\r\nbody\r\n.\r\n");
    let r = c.reply();
    let (_, peak) = relay.rss_kib();
    eprintln!("header flood (9.8 MB, 700000 lines): RSS before {before} KiB, peak {peak} KiB");
    assert!(
        r.starts_with("552 5.3.4") && r.contains("Header block"),
        "{r}"
    );
    // Parsing it costs hundreds of megabytes; refusing it costs buffers.
    assert!(
        peak.saturating_sub(before) < 32 * 1024,
        "RSS grew from {before} KiB to a peak of {peak} KiB"
    );
    c.cmd("NOOP", "250");
}

#[test]
fn concurrent_large_messages_are_checked_within_the_memory_budget() {
    let dir = tempdir();
    let toml = "backend = \"postal\"\n[smtp]\ncheck_memory = 33554432\nmax_connections = 20\n\
        [postal]\napi_url = \"http://127.0.0.1:9\"\napi_key = \"k\"\n\
        [delivery]\nconcurrency = 1\nretry_initial = \"1h\"\nretry_max = \"2h\"\n";
    // One malloc arena: freed memory is reused instead of kept per thread,
    // so the peak shows what the checks hold at once, not allocator retention.
    let relay = Relay::start(dir.path(), &Setup::toml(toml).env("MALLOC_ARENA_MAX", "1"));
    let (before, _) = relay.rss_kib();
    let body = format!(
        "From: a@example.com\r\nTo: b@example.org\r\nSubject: big\r\n\r\n{}",
        format!("{}\r\n", "A".repeat(998)).repeat(8_000)
    );
    let clients = 8;
    std::thread::scope(|s| {
        let handles: Vec<_> = (0..clients)
            .map(|_| {
                let mut c = relay.session();
                let body = &body;
                s.spawn(move || {
                    c.cmd("MAIL FROM:<a@example.com>", "250");
                    c.cmd("RCPT TO:<b@example.org>", "250");
                    c.cmd("DATA", "354");
                    c.send(body);
                    c.send("\r\n.\r\n");
                    // The checks run one after another within the budget: the
                    // last client waits for all the others (a debug build on
                    // a busy machine takes seconds per check).
                    c.reply_within(Duration::from_secs(180))
                        .unwrap_or_else(|| "no reply".into())
                })
            })
            .collect();
        for h in handles {
            let r = h.join().expect("client");
            assert!(r.starts_with("250 2.0.0"), "{r}");
        }
    });
    let (_, peak) = relay.rss_kib();
    eprintln!(
        "{clients} concurrent 8 MB messages, check_memory 32 MiB: RSS before {before} KiB, peak {peak} KiB"
    );
    // One 8 MB check costs about 40 MB, and so does the one delivery worker's
    // mapping; unbounded, the checks of eight messages overlap.
    assert!(
        peak.saturating_sub(before) < 96 * 1024,
        "RSS grew from {before} KiB to a peak of {peak} KiB"
    );
}
