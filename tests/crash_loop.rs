//! `kill -9` under load: client threads send continuously, recording every
//! message that got `250` by the unique id in its subject, while the daemon
//! is killed 20 times at random points (seeded, the seed printed; set
//! `CRASH_SEED` to replay) and restarted on the same spool. At the end every
//! acknowledged message reached the API at least once, no entry is broken
//! or parked, the spool is empty, and duplicates are counted and printed.
//! (`bench/soak.py` does the same with hundreds of kills.)

mod support;

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rand::{Rng, SeedableRng};
use support::api_mock::{Answer, ApiMock};
use support::{Lenient, Relay, Setup, ok_body, subjects, tempdir};

const KILLS: usize = 20;
const CLIENTS: usize = 3;

/// Sends until `stop`, to whichever daemon `addr` names; returns the
/// subjects that got `250`.
fn load(client: usize, addr: &Mutex<Option<SocketAddr>>, stop: &AtomicBool) -> Vec<String> {
    let mut acked = Vec::new();
    let mut session: Option<Lenient> = None;
    let mut n = 0;
    while !stop.load(Ordering::Relaxed) {
        let Some(target) = *addr.lock().unwrap() else {
            std::thread::sleep(Duration::from_millis(20));
            continue;
        };
        let s = match session
            .take()
            .map(Ok)
            .unwrap_or_else(|| Lenient::open(target))
        {
            Ok(s) => session.insert(s),
            Err(_) => {
                std::thread::sleep(Duration::from_millis(20));
                continue;
            }
        };
        let subject = format!("crash-{client}-{n}");
        n += 1;
        if s.send(&subject).is_ok() {
            acked.push(subject);
            // A steady load the debug build delivers as fast as it comes.
            std::thread::sleep(Duration::from_millis(10));
        } else {
            session = None;
        }
    }
    acked
}

#[test]
fn twenty_kill_9s_under_load_lose_no_acknowledged_message_and_break_no_entry() {
    let seed: u64 = std::env::var("CRASH_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(rand::random);
    eprintln!("crash loop seed {seed} (CRASH_SEED={seed} replays the kill points)");
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);

    // Every call takes 20 ms, so kills land inside calls too; the API
    // counts what it accepted, whether or not the daemon lived to read it.
    let accepted: Arc<Mutex<BTreeMap<String, usize>>> = Arc::default();
    let ledger = accepted.clone();
    let api = ApiMock::start(move |req| {
        let body = req.json();
        let mut ledger = ledger.lock().unwrap();
        for s in subjects(&body) {
            *ledger.entry(s).or_default() += 1;
        }
        Answer::json(200, ok_body(&req.path, &body)).after(Duration::from_millis(20))
    });
    let dir = tempdir();
    let setup = Setup::toml(&format!(
        "backend = \"postmark\"\n[postmark]\nserver_token = \"crash-loop-token\"\napi_url = \"{}\"\n\
         [delivery]\nretry_initial = \"100ms\"\nretry_max = \"500ms\"\nrate_limit = 0\n",
        api.url()
    ));

    let addr = Mutex::new(None);
    let stop = AtomicBool::new(false);
    let started = Instant::now();
    let (acked, logs, relay) = std::thread::scope(|s| {
        let loaders: Vec<_> = (0..CLIENTS)
            .map(|c| {
                let (addr, stop) = (&addr, &stop);
                s.spawn(move || load(c, addr, stop))
            })
            .collect();
        let mut logs = Vec::new();
        let mut relay = Relay::start(dir.path(), &setup);
        for _ in 0..KILLS {
            *addr.lock().unwrap() = Some(relay.smtp);
            std::thread::sleep(Duration::from_millis(rng.random_range(150..900)));
            relay.kill9();
            *addr.lock().unwrap() = None;
            logs.push(relay.log());
            relay = Relay::start(dir.path(), &setup);
        }
        *addr.lock().unwrap() = Some(relay.smtp);
        std::thread::sleep(Duration::from_millis(300));
        stop.store(true, Ordering::Relaxed);
        let acked: Vec<String> = loaders
            .into_iter()
            .flat_map(|h| h.join().expect("loader"))
            .collect();
        (acked, logs, relay)
    });

    let missing = || -> Vec<String> {
        let accepted = accepted.lock().unwrap();
        acked
            .iter()
            .filter(|s| !accepted.contains_key(*s))
            .cloned()
            .collect()
    };
    let deadline = Instant::now() + Duration::from_secs(40);
    while !missing().is_empty() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(50));
    }
    let lost = missing();
    assert!(
        lost.is_empty(),
        "seed {seed}: acknowledged but never at the API: {lost:?}; queue: {:?}; failed: {:?}; last log:\n{}",
        relay.queued_ids(),
        relay.files_in("failed", "json"),
        relay.log()
    );
    relay.wait_for("an empty queue", 20, || relay.queued_ids().is_empty());
    let accepted = accepted.lock().unwrap().clone();
    let acked_set: BTreeSet<&String> = acked.iter().collect();
    let duplicates: Vec<(&String, &usize)> = accepted.iter().filter(|(_, n)| **n > 1).collect();
    let may_duplicate: usize = logs
        .iter()
        .chain(std::iter::once(&relay.log()))
        .map(|l| l.matches("may duplicate").count())
        .sum();
    eprintln!(
        "crash loop: {KILLS} kills in {:?}, {} acknowledged, {} at the API, 0 lost, {} duplicated (first: {:?}), {may_duplicate} logged as may duplicate",
        started.elapsed(),
        acked_set.len(),
        accepted.len(),
        duplicates.len(),
        &duplicates[..duplicates.len().min(10)]
    );
    assert_eq!(acked_set.len(), acked.len(), "subjects are unique");
    assert!(
        acked.len() > KILLS,
        "the load ran: {} acknowledged",
        acked.len()
    );
    for log in logs.iter().chain(std::iter::once(&relay.log())) {
        for line in log.lines().filter(|l| l.contains("spool recovered")) {
            assert!(
                line.contains(" broken=0") && line.contains(" parked=0"),
                "{line}"
            );
        }
    }
    for sub in ["queue", "failed"] {
        let left: Vec<_> = std::fs::read_dir(relay.spool().join(sub))
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert!(left.is_empty(), "{sub}/ holds {left:?}");
    }
}
