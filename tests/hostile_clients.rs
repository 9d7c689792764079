//! Hostile clients do not starve the others: while each attack runs, a
//! well-behaved client still gets `250` within a generous deadline. The
//! attacks alone (their timeouts, caps and replies) are proven in
//! `smtp_dialogue.rs`, `smtp_limits.rs` and `smtp_access.rs`; memory
//! figures come from `bench/hostile.py`, not from timed assertions here.

mod support;

use std::io::{BufRead, BufReader, Write};
use std::net::TcpStream;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use support::{Lenient, Relay, Setup, tempdir};

/// Loopback attackers share the good client's address: the per-address
/// cap is raised so it does not decide the outcome.
const CONFIG: &str = "[smtp]\nmax_connections = 200\nmax_connections_per_ip = 200\n";

/// How long a good client may wait for its `250` (a debug build on a busy
/// machine is slow; a starved one never answers).
const GENEROUS: Duration = Duration::from_secs(30);

/// Runs `attack` until told to stop; once it reports ready, a good client
/// sends three messages, each of which must get `250` within [`GENEROUS`].
fn good_client_served_during(
    config: &str,
    attack: impl FnOnce(&Relay, &AtomicBool, &AtomicBool) + Send,
) {
    let dir = tempdir();
    let relay = Relay::start(dir.path(), &Setup::toml(config));
    let (ready, stop) = (AtomicBool::new(false), AtomicBool::new(false));
    std::thread::scope(|s| {
        let attacker = s.spawn(|| attack(&relay, &ready, &stop));
        relay.wait_for("the attack to be under way", 30, || {
            ready.load(Ordering::SeqCst) || attacker.is_finished()
        });
        for n in 0..3 {
            let started = Instant::now();
            let mut last = String::new();
            let served = loop {
                match Lenient::open(relay.smtp).and_then(|mut c| c.send(&format!("good-{n}"))) {
                    Ok(()) => break true,
                    Err(e) => last = e.to_string(),
                }
                if started.elapsed() > GENEROUS {
                    break false;
                }
                std::thread::sleep(Duration::from_millis(100));
            };
            assert!(
                served,
                "good client not served within {GENEROUS:?} ({last}); log:\n{}",
                relay.log()
            );
            eprintln!("good client {n} served in {:?}", started.elapsed());
        }
        stop.store(true, Ordering::SeqCst);
        attacker.join().expect("attacker");
    });
}

fn connect(relay: &Relay) -> TcpStream {
    let s = TcpStream::connect(relay.smtp).expect("connect");
    s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    s.set_write_timeout(Some(Duration::from_secs(5))).unwrap();
    s
}

/// Reads replies until one starts with `code` (a multi-line one whole).
fn read_until(reader: &mut impl BufRead, code: &str) {
    loop {
        let mut line = String::new();
        assert!(reader.read_line(&mut line).unwrap() > 0, "closed");
        if line.starts_with(code) && line.as_bytes().get(3) == Some(&b' ') {
            return;
        }
    }
}

/// `n` connections, each brought to where `prelude` leaves it, then
/// trickling one byte each per 100 ms until stopped or cut off.
fn trickle(relay: &Relay, ready: &AtomicBool, stop: &AtomicBool, n: usize, prelude: &[&str]) {
    let mut conns: Vec<TcpStream> = (0..n)
        .map(|_| {
            let s = connect(relay);
            let mut r = BufReader::new(s.try_clone().unwrap());
            read_until(&mut r, "220");
            for (line, code) in prelude.iter().map(|l| l.split_once('|').unwrap()) {
                (&s).write_all(format!("{line}\r\n").as_bytes()).unwrap();
                read_until(&mut r, code);
            }
            s
        })
        .collect();
    ready.store(true, Ordering::SeqCst);
    while !stop.load(Ordering::SeqCst) && !conns.is_empty() {
        conns.retain(|mut s| s.write_all(b"x").is_ok());
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn slowloris_on_commands_does_not_starve_a_good_client() {
    good_client_served_during(CONFIG, |relay, ready, stop| {
        trickle(relay, ready, stop, 50, &["EHLO slow.example|250"]);
    });
}

#[test]
fn slowloris_in_data_does_not_starve_a_good_client() {
    good_client_served_during(CONFIG, |relay, ready, stop| {
        let prelude = [
            "EHLO slow.example|250",
            "MAIL FROM:<a@example.com>|250",
            "RCPT TO:<b@example.org>|250",
            "DATA|354",
        ];
        trickle(relay, ready, stop, 50, &prelude);
    });
}

#[test]
fn many_idle_connections_at_the_cap_are_timed_out_and_a_good_client_gets_in() {
    let config =
        "[smtp]\nmax_connections = 40\nmax_connections_per_ip = 40\ncommand_timeout = \"2s\"\n";
    good_client_served_during(config, |relay, ready, stop| {
        // Every slot taken by a connection that never says a word.
        let idle: Vec<TcpStream> = (0..40).map(|_| connect(relay)).collect();
        ready.store(true, Ordering::SeqCst);
        while !stop.load(Ordering::SeqCst) {
            std::thread::sleep(Duration::from_millis(50));
        }
        drop(idle);
    });
}

#[test]
fn a_pipelined_flood_that_never_reads_its_replies_does_not_starve_a_good_client() {
    good_client_served_during(CONFIG, |relay, ready, stop| {
        let s = connect(relay);
        let mut r = BufReader::new(s.try_clone().unwrap());
        read_until(&mut r, "220");
        let chunk =
            "NOOP\r\nRSET\r\nMAIL FROM:<a@example.com>\r\nRCPT TO:<b@example.org>\r\n".repeat(1000);
        ready.store(true, Ordering::SeqCst);
        // The replies pile up unread: the daemon must stop reading, not buffer.
        let mut sent = 0usize;
        while !stop.load(Ordering::SeqCst) && (&s).write_all(chunk.as_bytes()).is_ok() {
            sent += chunk.len();
        }
        eprintln!("flood: {sent} bytes written before the daemon stopped reading");
    });
}

#[test]
fn huge_header_blocks_on_several_connections_do_not_starve_a_good_client() {
    good_client_served_during(CONFIG, |relay, ready, stop| {
        let block = "X-Hdr: 123456\r\n".repeat(10_000);
        std::thread::scope(|s| {
            for _ in 0..4 {
                s.spawn(|| {
                    let c = connect(relay);
                    let mut r = BufReader::new(c.try_clone().unwrap());
                    read_until(&mut r, "220");
                    let head = "EHLO big.example\r\nMAIL FROM:<a@example.com>\r\nRCPT TO:<b@example.org>\r\nDATA\r\n";
                    (&c).write_all(head.as_bytes()).unwrap();
                    read_until(&mut r, "354");
                    ready.store(true, Ordering::SeqCst);
                    for _ in 0..70 {
                        if stop.load(Ordering::SeqCst) || (&c).write_all(block.as_bytes()).is_err()
                        {
                            return;
                        }
                    }
                    let _ = (&c).write_all(b"\r\nbody\r\n.\r\n");
                    read_until(&mut r, "552");
                });
            }
        });
    });
}

#[test]
fn ten_thousand_recipients_are_capped_then_cut_off_and_do_not_starve_a_good_client() {
    good_client_served_during(CONFIG, |relay, ready, _stop| {
        let c = connect(relay);
        let mut r = BufReader::new(c.try_clone().unwrap());
        read_until(&mut r, "220");
        (&c).write_all(b"EHLO many.example\r\nMAIL FROM:<a@example.com>\r\n")
            .unwrap();
        read_until(&mut r, "250");
        read_until(&mut r, "250");
        ready.store(true, Ordering::SeqCst);
        let writer = c.try_clone().unwrap();
        let feeder = std::thread::spawn(move || {
            let rcpts: String = (0..10_000)
                .map(|i| format!("RCPT TO:<r{i}@example.org>\r\n"))
                .collect();
            // The daemon may close before all of it is read.
            let _ = (&writer).write_all(rcpts.as_bytes());
        });
        // 1000 are taken (max_recipients); the refusals count as errors,
        // and max_errors of them end the session.
        let (mut ok, mut capped) = (0, 0);
        let last = loop {
            let mut line = String::new();
            if r.read_line(&mut line).unwrap_or(0) == 0 {
                break line;
            }
            match &line[..3] {
                "250" => ok += 1,
                "452" => capped += 1,
                _ => break line,
            }
        };
        let _ = feeder.join();
        eprintln!("10 000 RCPTs: {ok} accepted, {capped} refused, then {last:?}");
        assert_eq!(ok, 1000, "max_recipients holds");
        assert!(capped >= 1, "refusals before the cut");
        assert!(last.starts_with("421 4.7.0"), "{last}");
    });
}
