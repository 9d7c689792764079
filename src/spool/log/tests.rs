use std::sync::Arc;
use std::thread;

use super::*;
use crate::message::Envelope;
use crate::spool::entry::{self, Meta};

fn ulid() -> String {
    ulid::Ulid::generate().to_string()
}

fn record(id: &str) -> Vec<u8> {
    let env = Envelope {
        mail_from: "a@example.com".into(),
        rcpt_to: vec!["b@example.org".into()],
    };
    entry::encode(&Meta::new(id.into(), env, 4, std::time::SystemTime::now()))
}

fn fresh() -> (tempfile::TempDir, Log) {
    let dir = tempfile::tempdir().unwrap();
    let log_dir = dir.path().join("log");
    fsio::create_dir(&log_dir).unwrap();
    (dir, Log::new(log_dir))
}

fn reopen(log: &Log) -> (Log, recover::Recovered) {
    let again = Log::new(log.dir.clone());
    let found = again.recover(&|_| false).unwrap();
    (again, found)
}

/// Where a segment's frames end: its zero-filled rest begins.
fn data_end(bytes: &[u8]) -> usize {
    bytes.len() - bytes.iter().rev().take_while(|&&b| b == 0).count()
}

fn files(log: &Log) -> Vec<String> {
    let mut names: Vec<_> = std::fs::read_dir(&log.dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    names
}

#[test]
fn an_appended_message_reads_back_and_survives_a_restart() {
    let (_d, log) = fresh();
    let id = ulid();
    let rec = record(&id);
    log.append_blocking(&id, &rec, b"Subject: x\r\n\r\nhi\r\n")
        .unwrap();
    let (got, msg) = log.read(&id).unwrap().unwrap();
    assert_eq!(
        (got, msg.as_slice()),
        (rec, &b"Subject: x\r\n\r\nhi\r\n"[..])
    );
    let (again, found) = reopen(&log);
    assert_eq!(found.queued.len(), 1);
    assert_eq!(found.queued[0].id, id);
    assert!(again.contains(&id));
    assert_eq!(
        again.read(&id).unwrap().unwrap().1,
        b"Subject: x\r\n\r\nhi\r\n"
    );
}

#[test]
fn a_tombstoned_message_is_gone_now_and_after_a_restart() {
    let (_d, log) = fresh();
    let (a, b) = (ulid(), ulid());
    for id in [&a, &b] {
        log.append_blocking(id, &record(id), b"m").unwrap();
    }
    assert!(log.tombstone(&a).unwrap());
    assert!(
        !log.tombstone(&a).unwrap(),
        "a second tombstone finds nothing"
    );
    assert!(log.read(&a).unwrap().is_none());
    let (again, found) = reopen(&log);
    let ids: Vec<_> = found.queued.iter().map(|m| m.id.clone()).collect();
    assert_eq!(ids, std::slice::from_ref(&b));
    assert!(!again.contains(&a));
    // The recovered segment is sealed: once its last message goes, so does it.
    assert!(again.tombstone(&b).unwrap());
    assert!(files(&again).is_empty(), "{:?}", files(&again));
}

#[test]
fn many_tombstones_at_once_answer_each_id_across_segments() {
    let (_d, log) = fresh();
    let (a, b) = (ulid(), ulid());
    for id in [&a, &b] {
        log.append_blocking(id, &record(id), b"m").unwrap();
    }
    // The restart seals a and b's segment; c and d go to a new one.
    let (again, _) = reopen(&log);
    let (c, d) = (ulid(), ulid());
    for id in [&c, &d] {
        again.append_blocking(id, &record(id), b"m").unwrap();
    }
    let unknown = ulid();
    let answers: Vec<bool> = again
        .tombstone_all(&[&a, &unknown, &c, &b, "not an id"])
        .into_iter()
        .map(Result::unwrap)
        .collect();
    assert_eq!(answers, [true, false, true, true, false]);
    assert!(again.contains(&d) && !again.contains(&c));
    assert_eq!(
        files(&again).len(),
        2,
        "the sealed segment went with its last frame: {:?}",
        files(&again)
    );
    let (_, found) = reopen(&again);
    let ids: Vec<_> = found.queued.iter().map(|m| m.id.clone()).collect();
    assert_eq!(ids, [d]);
}

#[test]
fn a_segment_is_removed_only_once_sealed_and_empty() {
    let (_d, log) = fresh();
    let id = ulid();
    log.append_blocking(&id, &record(&id), b"m").unwrap();
    log.tombstone(&id).unwrap();
    assert_eq!(files(&log).len(), 2, "the current segment stays open");
    let (again, found) = reopen(&log);
    assert!(found.queued.is_empty());
    assert!(
        files(&again).is_empty(),
        "an empty sealed segment goes at once"
    );
}

#[test]
fn files_win_over_a_frame_with_the_same_id() {
    let (_d, log) = fresh();
    let (a, b) = (ulid(), ulid());
    for id in [&a, &b] {
        log.append_blocking(id, &record(id), b"m").unwrap();
    }
    let again = Log::new(log.dir.clone());
    let found = again.recover(&|id| id == a).unwrap();
    assert_eq!(found.queued.len(), 1);
    assert!(!again.contains(&a) && again.contains(&b));
}

#[test]
fn concurrent_appends_share_syncs_and_all_read_back() {
    let (_d, log) = fresh();
    let log = Arc::new(log);
    let ids: Vec<String> = (0..64).map(|_| ulid()).collect();
    let handles: Vec<_> = ids
        .chunks(8)
        .map(|chunk| {
            let (log, chunk) = (log.clone(), chunk.to_vec());
            thread::spawn(move || {
                for id in chunk {
                    log.append_blocking(&id, &record(&id), id.as_bytes())
                        .unwrap();
                }
            })
        })
        .collect();
    for h in handles {
        h.join().unwrap();
    }
    for id in &ids {
        assert_eq!(log.read(id).unwrap().unwrap().1, id.as_bytes());
    }
    let (syncs, waiting) = log.syncs();
    assert!(syncs <= 64, "one sync at most per append: {syncs}");
    assert_eq!(waiting, 0);
    let (_again, found) = reopen(&log);
    assert_eq!(found.queued.len(), 64);
}

#[test]
fn a_damaged_frame_is_reported_and_its_segment_kept_as_broken() {
    let (_d, log) = fresh();
    let (a, b) = (ulid(), ulid());
    log.append_blocking(&a, &record(&a), b"first").unwrap();
    log.append_blocking(&b, &record(&b), b"second").unwrap();
    let seg = log.dir.join(format!("{:016x}.log", 1));
    let mut bytes = std::fs::read(&seg).unwrap();
    // Inside the first frame (the file runs on in zeros past the frames).
    let at = data_end(&bytes) / 4;
    bytes[at] ^= 0xff;
    std::fs::write(&seg, &bytes).unwrap();
    let (again, found) = reopen(&log);
    assert_eq!(found.broken, 1);
    let ids: Vec<_> = found.queued.iter().map(|m| m.id.clone()).collect();
    assert_eq!(
        ids,
        std::slice::from_ref(&b),
        "the whole frame after the damage is kept"
    );
    again.tombstone(&b).unwrap();
    assert_eq!(files(&again), [format!("{:016x}.log.broken", 1)]);
}

#[test]
fn a_torn_tail_is_not_damage_and_a_frame_without_its_tombstone_file_recovers() {
    let (_d, log) = fresh();
    let a = ulid();
    log.append_blocking(&a, &record(&a), b"whole").unwrap();
    let seg = log.dir.join(format!("{:016x}.log", 1));
    let mut bytes = std::fs::read(&seg).unwrap();
    // A crash cut the next write short: part of a frame, then zeros.
    let end = data_end(&bytes);
    let torn = bytes[..30].to_vec();
    bytes[end..end + 30].copy_from_slice(&torn);
    std::fs::write(&seg, &bytes).unwrap();
    std::fs::remove_file(log.dir.join(format!("{:016x}.done", 1))).unwrap();
    let (again, found) = reopen(&log);
    assert_eq!((found.queued.len(), found.broken), (1, 0));
    // New appends go to a new segment.
    let b = ulid();
    again.append_blocking(&b, &record(&b), b"next").unwrap();
    assert!(files(&again).contains(&format!("{:016x}.log", 2)));
}

#[test]
fn a_symlinked_segment_is_left_alone() {
    let (d, log) = fresh();
    let outside = d.path().join("precious");
    std::fs::write(&outside, b"not ours to read").unwrap();
    std::os::unix::fs::symlink(&outside, log.dir.join(format!("{:016x}.log", 7))).unwrap();
    let (again, found) = reopen(&log);
    assert_eq!((found.queued.len(), found.broken), (0, 1));
    assert_eq!(std::fs::read(&outside).unwrap(), b"not ours to read");
    let id = ulid();
    again.append_blocking(&id, &record(&id), b"m").unwrap();
    assert!(
        files(&again).contains(&format!("{:016x}.log", 8)),
        "a new sequence past it"
    );
}

#[test]
fn the_writer_zero_fills_ahead_of_its_frames_and_recovery_reads_the_zeros_as_the_end() {
    let (_d, log) = fresh();
    let seg = log.dir.join(format!("{:016x}.log", 1));
    let ids: Vec<String> = (0..3).map(|_| ulid()).collect();
    let (mut first, mut last) = (0, 0);
    for id in &ids {
        log.append_blocking(id, &record(id), b"Subject: z\r\n\r\n")
            .unwrap();
        let bytes = std::fs::read(&seg).unwrap();
        let end = data_end(&bytes);
        assert!(end > last, "each frame after the one before");
        (first, last) = (if first == 0 { end } else { first }, end);
        assert_eq!(
            bytes.len(),
            first + ZERO_AHEAD as usize,
            "zeros written ahead once, by the first write"
        );
    }
    let (again, found) = reopen(&log);
    assert_eq!((found.queued.len(), found.broken), (3, 0));
    for id in &ids {
        assert!(again.contains(id));
    }
}

#[test]
fn zero_filling_starts_near_the_written_end_and_stops_at_the_segment_cap() {
    let mb = ZERO_AHEAD;
    let cases = [
        // (written so far, frames end) -> fill to
        (0, 100, 100 + mb),
        (100 + mb, 200, 100 + mb),
        (100 + mb, 100 + mb - mb / 4, 100 + mb),
        (100 + mb, 101 + mb - mb / 4, 101 + mb - mb / 4 + mb),
        (mb, 3 * mb, 4 * mb),
        (SEGMENT_MAX - 10, SEGMENT_MAX - 5, SEGMENT_MAX),
        (SEGMENT_MAX, SEGMENT_MAX + 7, SEGMENT_MAX),
    ];
    for (zeroed, end, want) in cases {
        assert_eq!(writer::zero_target(zeroed, end), want, "{zeroed} {end}");
    }
}
