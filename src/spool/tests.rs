//! Spool invariants at the file level: recovery, operator actions against
//! entries in flight, crash-safe requeue.

use std::fs;
use std::sync::Arc;
use std::time::SystemTime;

use tokio::time::Instant;

use super::*;
use crate::message::Envelope;

fn open(dir: &Path) -> (Arc<Spool>, Recovery) {
    let (s, r) = Spool::open(dir, 0).expect("open spool");
    (Arc::new(s), r)
}

/// The queue entry `id` as the CLI reads it.
fn queued(root: &Path, id: &str) -> Result<(Meta, Vec<u8>), SpoolError> {
    read(root, Area::Queue, id)
}

/// Claims the one due entry and moves it to failed/.
async fn dead_letter(spool: &Arc<Spool>) {
    let claim = spool
        .claim_due(Instant::now(), 1)
        .pop()
        .expect("a due entry");
    let (mut meta, _) = spool.load(&claim).unwrap();
    meta.failure = Some(Failure {
        code: None,
        reason: "r".into(),
        failed_at: SystemTime::now(),
    });
    spool.dead_letter(claim, &meta).unwrap();
}

async fn put(spool: &Arc<Spool>, body: &str) -> String {
    let mut inc = spool.receive().await.unwrap();
    inc.write(body.as_bytes()).await.unwrap();
    let env = Envelope {
        mail_from: "a@example.com".into(),
        rcpt_to: vec!["b@example.org".into()],
    };
    inc.commit(spool, env).await.unwrap()
}

/// Commits `body` and gives the entry its files in `queue/`, as the first
/// change of its record does.
async fn put_files(spool: &Arc<Spool>, body: &str) -> String {
    let id = put(spool, body).await;
    let claim = spool.claim_one(&id).unwrap();
    let (meta, _) = spool.load(&claim).unwrap();
    spool.save_progress(&claim, &meta).unwrap();
    spool.release(claim, Instant::now());
    assert!(!spool.log.contains(&id));
    id
}

#[tokio::test]
async fn committed_message_survives_reopen_and_is_due() {
    let dir = tempfile::tempdir().unwrap();
    let id = {
        let (spool, _) = open(dir.path());
        put(&spool, "Subject: x\r\n\r\nbody\r\n").await
    };
    let (spool, r) = open(dir.path());
    assert_eq!(r.queued, 1);
    let claims = spool.claim_due(Instant::now(), 10);
    assert_eq!(
        claims.iter().map(Claim::id).collect::<Vec<_>>(),
        vec![id.as_str()]
    );
    let (meta, raw) = spool.load(&claims[0]).unwrap();
    assert_eq!(raw, b"Subject: x\r\n\r\nbody\r\n");
    assert_eq!(meta.envelope.rcpt_to, vec!["b@example.org".to_string()]);
}

#[tokio::test]
async fn a_second_process_cannot_open_a_locked_spool() {
    let dir = tempfile::tempdir().unwrap();
    let _first = open(dir.path());
    assert!(matches!(
        Spool::open(dir.path(), 0),
        Err(SpoolError::Locked)
    ));
}

#[tokio::test]
async fn unreadable_envelope_is_moved_aside_with_its_message() {
    let dir = tempfile::tempdir().unwrap();
    let id = {
        let (spool, _) = open(dir.path());
        put_files(&spool, "Subject: keep me\r\n\r\n").await
    };
    let queue = dir.path().join("queue");
    fs::write(queue.join(format!("{id}.json")), "{broken").unwrap();
    for _ in 0..2 {
        // Twice: a second start must not treat the message as an orphan either.
        let (_spool, _) = open(dir.path());
    }
    assert!(queue.join(format!("{id}.json.broken")).exists());
    assert_eq!(
        fs::read_to_string(queue.join(format!("{id}.eml.broken"))).unwrap(),
        "Subject: keep me\r\n\r\n"
    );
}

#[tokio::test]
async fn operator_actions_refuse_an_entry_a_worker_holds() {
    let dir = tempfile::tempdir().unwrap();
    let (spool, _) = open(dir.path());
    let id = put(&spool, "Subject: x\r\n\r\n").await;
    let claim = spool.claim_due(Instant::now(), 1).pop().unwrap();
    assert!(matches!(spool.retry_now(&id), Err(SpoolError::InFlight(_))));
    assert!(matches!(spool.delete(&id), Err(SpoolError::InFlight(_))));
    // And the other way round: while an operator holds it, the scheduler skips it.
    spool.release(claim, Instant::now());
    let op = spool.claim_one(&id).unwrap();
    assert!(spool.claim_due(Instant::now(), 10).is_empty());
    spool.complete(op).unwrap();
    assert!(queued(dir.path(), &id).is_err());
}

#[tokio::test]
async fn requeue_brings_a_dead_letter_back_and_refuses_a_queued_id() {
    let dir = tempfile::tempdir().unwrap();
    let (spool, _) = open(dir.path());
    let id = put(&spool, "Subject: x\r\n\r\n").await;
    assert!(matches!(
        spool.requeue(&id),
        Err(SpoolError::AlreadyQueued(_))
    ));
    let claim = spool.claim_due(Instant::now(), 1).pop().unwrap();
    let (mut meta, _) = spool.load(&claim).unwrap();
    meta.attempts = 3;
    meta.failure = Some(Failure {
        code: Some("300".into()),
        reason: "Invalid 'To' address".into(),
        failed_at: SystemTime::now(),
    });
    spool.dead_letter(claim, &meta).unwrap();
    assert!(queued(dir.path(), &id).is_err());
    assert_eq!(spool.depth().0, 0);
    spool.requeue(&id).unwrap();
    assert_eq!(spool.depth().0, 1);
    let (meta, raw) = queued(dir.path(), &id).unwrap();
    assert_eq!((meta.attempts, meta.failure), (0, None));
    assert_eq!(raw, b"Subject: x\r\n\r\n");
    assert!(!dir.path().join("failed").join(format!("{id}.eml")).exists());
    assert!(
        !dir.path()
            .join("failed")
            .join(format!("{id}.json"))
            .exists()
    );
}

#[tokio::test]
async fn crash_inside_requeue_keeps_the_dead_letter() {
    let dir = tempfile::tempdir().unwrap();
    let id = {
        let (spool, _) = open(dir.path());
        let id = put(&spool, "Subject: x\r\n\r\n").await;
        dead_letter(&spool).await;
        id
    };
    // The first step of requeue happened, then the process died.
    fs::hard_link(
        dir.path().join("failed").join(format!("{id}.eml")),
        dir.path().join("queue").join(format!("{id}.eml")),
    )
    .unwrap();
    let (spool, r) = open(dir.path());
    assert_eq!(r.orphans_removed, 1);
    assert!(dir.path().join("failed").join(format!("{id}.eml")).exists());
    spool.requeue(&id).unwrap();
    assert!(queued(dir.path(), &id).is_ok());
}

#[tokio::test]
async fn crash_inside_dead_letter_is_completed_at_recovery() {
    let dir = tempfile::tempdir().unwrap();
    let id = {
        let (spool, _) = open(dir.path());
        put_files(&spool, "Subject: x\r\n\r\n").await
    };
    // dead_letter wrote failed/<id>.json and moved the .eml, then died.
    let queue = dir.path().join("queue");
    let failed = dir.path().join("failed");
    fs::copy(
        queue.join(format!("{id}.json")),
        failed.join(format!("{id}.json")),
    )
    .unwrap();
    fs::rename(
        queue.join(format!("{id}.eml")),
        failed.join(format!("{id}.eml")),
    )
    .unwrap();
    let (_spool, r) = open(dir.path());
    assert_eq!((r.dead_letters_completed, r.broken, r.queued), (1, 0, 0));
    assert!(!queue.join(format!("{id}.json")).exists());
}

#[tokio::test]
async fn crash_inside_requeue_after_the_envelope_leaves_one_queued_entry() {
    let dir = tempfile::tempdir().unwrap();
    let id = {
        let (spool, _) = open(dir.path());
        put_files(&spool, "Subject: x\r\n\r\n").await
    };
    // Requeue committed the queue entry, then died before removing the dead letter.
    let failed = dir.path().join("failed");
    fs::copy(
        dir.path().join("queue").join(format!("{id}.json")),
        failed.join(format!("{id}.json")),
    )
    .unwrap();
    fs::hard_link(
        dir.path().join("queue").join(format!("{id}.eml")),
        failed.join(format!("{id}.eml")),
    )
    .unwrap();
    let (spool, r) = open(dir.path());
    assert_eq!((r.queued, r.stale_dead_letters_removed), (1, 1));
    assert!(spool.failed_ids().unwrap().is_empty());
    assert!(queued(dir.path(), &id).is_ok());
}

#[tokio::test]
async fn a_crash_inside_dead_letter_of_a_logged_entry_leaves_only_the_dead_letter() {
    let dir = tempfile::tempdir().unwrap();
    let id = {
        let (spool, _) = open(dir.path());
        put(&spool, "Subject: x\r\n\r\n").await
    };
    // dead_letter wrote failed/<id>.eml and .json, then died before the tombstone.
    let (meta, raw) = queued(dir.path(), &id).unwrap();
    let failed = dir.path().join("failed");
    fs::write(failed.join(format!("{id}.eml")), raw).unwrap();
    fs::write(failed.join(format!("{id}.json")), entry::encode(&meta)).unwrap();
    let (spool, r) = open(dir.path());
    assert_eq!((r.queued, r.broken), (0, 0));
    assert!(queued(dir.path(), &id).is_err());
    assert_eq!(spool.failed_ids().unwrap(), vec![id]);
}

#[tokio::test]
async fn a_crash_inside_materialising_leaves_the_logged_entry_whole() {
    let dir = tempfile::tempdir().unwrap();
    let id = {
        let (spool, _) = open(dir.path());
        put(&spool, "Subject: x\r\n\r\n").await
    };
    // The first record change wrote queue/<id>.eml, then died before the record.
    fs::write(
        dir.path().join("queue").join(format!("{id}.eml")),
        "partial",
    )
    .unwrap();
    let (spool, r) = open(dir.path());
    assert_eq!((r.queued, r.orphans_removed), (1, 1));
    let claim = spool.claim_due(Instant::now(), 1).pop().unwrap();
    assert_eq!(spool.load(&claim).unwrap().1, b"Subject: x\r\n\r\n");
}

#[tokio::test]
async fn a_materialised_entry_wins_over_its_frame_after_a_crash_before_the_tombstone() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().to_path_buf();
    let id = {
        let (spool, _) = open(&root);
        let id = put(&spool, "Subject: x\r\n\r\n").await;
        // Keep a copy of the log as it was before the record changed.
        copy_dir(&root.join("log"), &root.join("log.before"));
        let claim = spool.claim_one(&id).unwrap();
        let (mut meta, _) = spool.load(&claim).unwrap();
        meta.attempts = 4;
        spool.save_progress(&claim, &meta).unwrap();
        spool.release(claim, Instant::now());
        id
    };
    // As if the tombstone never reached the disk.
    fs::remove_dir_all(root.join("log")).unwrap();
    fs::rename(root.join("log.before"), root.join("log")).unwrap();
    let (spool, r) = open(&root);
    assert_eq!(r.queued, 1, "one entry, not two");
    let claim = spool.claim_due(Instant::now(), 5).pop().unwrap();
    assert_eq!(
        spool.load(&claim).unwrap().0.attempts,
        4,
        "the files' record"
    );
    assert_eq!(claim.id(), id);
}

fn copy_dir(from: &Path, to: &Path) {
    fs::create_dir(to).unwrap();
    for e in fs::read_dir(from).unwrap() {
        let e = e.unwrap();
        fs::copy(e.path(), to.join(e.file_name())).unwrap();
    }
}

#[path = "hardening_tests.rs"]
mod hardening;

#[tokio::test]
async fn completing_many_entries_at_once_removes_log_and_file_entries_alike() {
    let dir = tempfile::tempdir().unwrap();
    let (spool, _) = open(dir.path());
    let in_log = put(&spool, "Subject: log\r\n\r\n").await;
    let as_files = put_files(&spool, "Subject: files\r\n\r\n").await;
    let stays = put(&spool, "Subject: stays\r\n\r\n").await;
    let claims: Vec<Claim> = [&in_log, &as_files]
        .into_iter()
        .map(|id| spool.claim_one(id).unwrap())
        .collect();
    let answers = spool.complete_all(claims);
    assert!(answers.iter().all(Result::is_ok), "{answers:?}");
    for id in [&in_log, &as_files] {
        assert!(queued(dir.path(), id).is_err(), "{id} is gone");
    }
    assert!(!dir.path().join(format!("queue/{as_files}.eml")).exists());
    drop(spool);
    let (again, recovery) = open(dir.path());
    assert_eq!(recovery.queued, 1);
    assert_eq!(again.claim_one(&stays).unwrap().id(), stays);
}
