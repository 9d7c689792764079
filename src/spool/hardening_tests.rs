//! Records of other versions, leftovers of a killed save, a record that
//! names a path outside the spool, and operator actions racing each other.

use std::fs;
use std::sync::Arc;

use tokio::time::Instant;

use super::*;

const V1_RECORD: &str = r#"{
  "version": 1,
  "id": "01ARZ3NDEKTSV4RRFFQ69G5FAV",
  "envelope": {"mail_from": "a@example.com", "rcpt_to": ["a@x.org", "b@x.org"]},
  "size": 14,
  "received_at": "2026-01-01T00:00:00.000Z",
  "attempts": 1,
  "next_attempt_at": "2026-01-01T00:00:00.000Z",
  "delivered": ["a@x.org"]
}"#;

const V3_RECORD: &str = r#"{"version": 3, "id": "01BX5ZZKBKACTAV9WEVGEMMVRZ", "future": true}"#;

#[tokio::test]
async fn a_v1_record_loads_converted_and_a_v3_record_is_parked_untouched() {
    let dir = tempfile::tempdir().unwrap();
    drop(open(dir.path()));
    let queue = dir.path().join("queue");
    let (old, new) = ("01ARZ3NDEKTSV4RRFFQ69G5FAV", "01BX5ZZKBKACTAV9WEVGEMMVRZ");
    for (id, record) in [(old, V1_RECORD), (new, V3_RECORD)] {
        fs::write(queue.join(format!("{id}.json")), record).unwrap();
        fs::write(queue.join(format!("{id}.eml")), "Subject: x\r\n\r\n").unwrap();
    }
    for _ in 0..2 {
        // Twice: the parked entry is neither rewritten, nor moved aside, nor scheduled.
        let (spool, r) = open(dir.path());
        assert_eq!((r.queued, r.parked, r.broken), (1, 1, 0));
        let claims = spool.claim_due(Instant::now(), 10);
        assert_eq!(claims.iter().map(Claim::id).collect::<Vec<_>>(), vec![old]);
        let (meta, _) = spool.load(&claims[0]).unwrap();
        assert_eq!(meta.pending_recipients(), vec!["b@x.org".to_string()]);
        assert_eq!(meta.accepted_count(), 1);
        assert!(matches!(spool.retry_now(new), Err(SpoolError::NotFound(_))));
        assert!(matches!(spool.delete(new), Err(SpoolError::NotFound(_))));
        assert_eq!(
            fs::read_to_string(queue.join(format!("{new}.json"))).unwrap(),
            V3_RECORD
        );
        assert!(queue.join(format!("{new}.eml")).exists());
    }
}

#[tokio::test]
async fn leftover_temp_files_of_a_killed_save_are_removed_at_recovery() {
    let dir = tempfile::tempdir().unwrap();
    let id = {
        let (spool, _) = open(dir.path());
        put(&spool, "Subject: x\r\n\r\n").await
    };
    let leftovers = [
        dir.path().join("queue").join(format!(".{id}.json.tmp")),
        dir.path()
            .join("tmp")
            .join(format!(".{id}.json.0123456789abcdef.tmp")),
        dir.path()
            .join("failed")
            .join(format!(".{id}.json.0123456789abcdef.tmp")),
        dir.path()
            .join("dry-run")
            .join(format!(".{id}.json.0123456789abcdef.tmp")),
    ];
    for path in &leftovers {
        fs::write(path, "{half").unwrap();
    }
    let (_spool, r) = open(dir.path());
    assert_eq!((r.temp_removed, r.queued, r.broken), (4, 1, 0));
    for path in &leftovers {
        assert!(!path.exists(), "{}", path.display());
    }
}

#[tokio::test]
async fn a_records_id_field_is_ignored_for_its_file_name() {
    let dir = tempfile::tempdir().unwrap();
    let outside = tempfile::tempdir().unwrap();
    let precious = outside.path().join("precious");
    for ext in ["json", "eml"] {
        fs::write(precious.with_extension(ext), "precious").unwrap();
    }
    let id = {
        let (spool, _) = open(dir.path());
        super::put_files(&spool, "Subject: x\r\n\r\n").await
    };
    let json = dir.path().join("queue").join(format!("{id}.json"));
    let record = fs::read_to_string(&json).unwrap().replace(
        &format!("\"id\": \"{id}\""),
        &format!("\"id\": \"{}\"", precious.display()),
    );
    assert!(record.contains("precious"));
    fs::write(&json, record).unwrap();
    let (spool, _) = open(dir.path());
    assert_eq!(spool.queued_ids().unwrap(), vec![id.clone()]);
    let claim = spool.claim_due(Instant::now(), 1).pop().unwrap();
    let (meta, _) = spool.load(&claim).unwrap();
    assert_eq!(meta.id, id);
    spool.dead_letter(claim, &meta).unwrap();
    spool.requeue(&id).unwrap();
    spool.delete(&id).unwrap();
    for ext in ["json", "eml"] {
        assert_eq!(
            fs::read_to_string(precious.with_extension(ext)).unwrap(),
            "precious"
        );
    }
    assert!(spool.queued_ids().unwrap().is_empty());
}

#[test]
fn concurrent_requeues_of_one_id_lose_nothing() {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let (spool, _) = open(dir.path());
    for round in 0..40 {
        let id = rt.block_on(async {
            let id = put(&spool, "Subject: keep me\r\n\r\n").await;
            dead_letter(&spool).await;
            id
        });
        let start = Arc::new(std::sync::Barrier::new(4));
        let workers: Vec<_> = (0..4)
            .map(|i| {
                let (spool, start, id) = (spool.clone(), start.clone(), id.clone());
                std::thread::spawn(move || {
                    let req = crate::control::Request {
                        op: crate::control::Op::Requeue,
                        id: (i % 2 == 0).then_some(id),
                    };
                    start.wait();
                    // `requeue ID` twice beside `requeue --all` twice.
                    crate::control::execute(&spool, &req, &mut |_, _| {}).map(|r| r.ok)
                })
            })
            .collect();
        let ok: usize = workers
            .into_iter()
            .map(|w| w.join().unwrap().unwrap_or(0))
            .sum();
        assert_eq!(ok, 1, "round {round}: exactly one requeue wins");
        let (meta, raw) = queued(dir.path(), &id).unwrap_or_else(|e| panic!("round {round}: {e}"));
        assert_eq!(raw, b"Subject: keep me\r\n\r\n");
        assert_eq!(meta.failure, None);
        assert!(spool.failed_ids().unwrap().is_empty(), "round {round}");
        assert_eq!(spool.depth().0, 1, "round {round}");
        let claim = spool
            .claim_due(Instant::now(), 1)
            .pop()
            .expect("requeued entry is due");
        spool.complete(claim).unwrap();
    }
}
