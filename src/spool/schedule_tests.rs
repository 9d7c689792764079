//! The schedule's ordering, claims and their release, on paused tokio time.

use std::path::Path;
use std::time::{Duration, SystemTime};

use super::*;
use crate::message::Envelope;

fn open(dir: &Path) -> Arc<Spool> {
    Arc::new(Spool::open(dir, 0).expect("open spool").0)
}

async fn put(spool: &Arc<Spool>) -> String {
    let mut inc = spool.receive().await.unwrap();
    inc.write(b"Subject: x\r\n\r\n").await.unwrap();
    let env = Envelope {
        mail_from: "a@example.com".into(),
        rcpt_to: vec!["b@example.org".into()],
    };
    inc.commit(spool, env).await.unwrap()
}

fn ids(claims: &[Claim]) -> Vec<&str> {
    claims.iter().map(Claim::id).collect()
}

#[test]
fn the_index_gives_due_entries_earliest_first_ties_by_id() {
    let t0 = Instant::now();
    let at = |s: u64| t0 + Duration::from_secs(s);
    let mut s = Schedule::default();
    let received = SystemTime::UNIX_EPOCH;
    s.insert("C", at(5), received);
    s.insert("B", at(5), received + Duration::from_secs(1));
    s.insert("A", at(9), received + Duration::from_secs(2));
    s.insert("D", at(1), received + Duration::from_secs(3));
    assert_eq!(s.next_due(), Some(at(1)));
    assert_eq!(s.take_due(at(0), 10), Vec::<String>::new());
    assert_eq!(s.take_due(at(5), 2), vec!["D", "B"]);
    assert_eq!(s.take_due(at(5), 10), vec!["C"]);
    assert_eq!(s.next_due(), Some(at(9)));
    // In flight counts in the depth; the oldest receive time is C's.
    assert_eq!(s.depth(), (4, Some(received)));
    assert!(matches!(s.take("D"), Err(SpoolError::InFlight(_))));
    assert!(matches!(s.take("Z"), Err(SpoolError::NotFound(_))));
    s.put_back("D", at(2));
    assert_eq!(s.next_due(), Some(at(2)));
    s.remove("C");
    assert_eq!(s.depth(), (3, Some(received + Duration::from_secs(1))));
    assert!(!s.reserve("A", at(0), received));
    assert!(s.reserve("E", at(0), received));
    assert_eq!(s.take_due(at(100), 10), vec!["D", "A"]);
}

#[test]
fn wall_time_and_tokio_time_convert_without_going_into_the_past() {
    let now = Instant::now();
    let wall = SystemTime::UNIX_EPOCH + Duration::from_secs(1_000_000);
    let cases = [
        (
            wall + Duration::from_secs(30),
            now + Duration::from_secs(30),
        ),
        (wall, now),
        (wall - Duration::from_secs(3600), now),
    ];
    for (on_disk, due) in cases {
        assert_eq!(due_from_wall(on_disk, wall, now), due);
    }
    assert_eq!(
        wall_from_due(now + Duration::from_secs(90), now, wall),
        wall + Duration::from_secs(90)
    );
    assert_eq!(wall_from_due(now, now + Duration::from_secs(5), wall), wall);
}

#[tokio::test(start_paused = true)]
async fn a_dropped_claim_is_released_due_at_once_and_a_released_one_when_asked() {
    let dir = tempfile::tempdir().unwrap();
    let spool = open(dir.path());
    let id = put(&spool).await;
    let claims = spool.claim_due(Instant::now(), 10);
    assert_eq!(ids(&claims), vec![id.as_str()]);
    assert!(spool.claim_due(Instant::now(), 10).is_empty());
    assert_eq!(spool.next_due(), None);
    // A worker panicked or returned early: the entry is not lost.
    drop(claims);
    let again = spool.claim_due(Instant::now(), 10);
    assert_eq!(ids(&again), vec![id.as_str()]);
    let later = Instant::now() + Duration::from_secs(60);
    spool.release(again.into_iter().next().unwrap(), later);
    assert_eq!(spool.next_due(), Some(later));
    assert!(spool.claim_due(Instant::now(), 10).is_empty());
    tokio::time::advance(Duration::from_secs(60)).await;
    assert_eq!(ids(&spool.claim_due(Instant::now(), 10)), vec![id.as_str()]);
}

#[tokio::test(start_paused = true)]
async fn a_rescheduled_entry_is_due_at_its_instant_and_on_disk_at_that_wall_time() {
    let dir = tempfile::tempdir().unwrap();
    let spool = open(dir.path());
    let id = put(&spool).await;
    let claim = spool.claim_due(Instant::now(), 1).pop().unwrap();
    let (mut meta, _) = spool.load(&claim).unwrap();
    meta.attempts = 1;
    let wall_before = SystemTime::now();
    spool
        .reschedule(claim, &meta, Instant::now() + Duration::from_secs(300))
        .unwrap();
    tokio::time::advance(Duration::from_secs(299)).await;
    assert!(spool.claim_due(Instant::now(), 1).is_empty());
    let left = spool.next_due().unwrap() - Instant::now();
    assert_eq!(left, Duration::from_secs(1));
    tokio::time::advance(Duration::from_secs(1)).await;
    let claim = spool.claim_due(Instant::now(), 1).pop().unwrap();
    assert_eq!(claim.id(), id);
    let (meta, _) = spool.load(&claim).unwrap();
    assert_eq!(meta.attempts, 1);
    let on_disk = meta.next_attempt_at.duration_since(wall_before).unwrap();
    assert!(on_disk >= Duration::from_secs(299), "{on_disk:?}");
    // And after a restart it is due at that wall time, not at once.
    drop(claim);
    drop(spool);
    let spool = open(dir.path());
    assert!(spool.next_due().unwrap() > Instant::now() + Duration::from_secs(200));
}

#[tokio::test(start_paused = true)]
async fn changed_wakes_on_a_new_message_and_on_a_release() {
    let dir = tempfile::tempdir().unwrap();
    let spool = open(dir.path());
    let waiter = {
        let spool = spool.clone();
        tokio::spawn(async move { spool.changed().await })
    };
    tokio::task::yield_now().await;
    put(&spool).await;
    tokio::time::timeout(Duration::from_secs(1), waiter)
        .await
        .expect("woken by the commit")
        .unwrap();
    let claim = spool.claim_due(Instant::now(), 1).pop().unwrap();
    let waiter = {
        let spool = spool.clone();
        tokio::spawn(async move { spool.changed().await })
    };
    tokio::task::yield_now().await;
    spool.release(claim, Instant::now());
    tokio::time::timeout(Duration::from_secs(1), waiter)
        .await
        .expect("woken by the release")
        .unwrap();
}

#[tokio::test(start_paused = true)]
async fn a_claim_moves_to_another_task_and_is_handed_back_there() {
    let dir = tempfile::tempdir().unwrap();
    let spool = open(dir.path());
    put(&spool).await;
    let claim = spool.claim_due(Instant::now(), 1).pop().unwrap();
    let worker = spool.clone();
    tokio::task::spawn_blocking(move || worker.complete(claim))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(spool.depth(), (0, None));
    assert_eq!(spool.next_due(), None);
}
