//! Group commit at the spool level, for both homes of a message: concurrent
//! commits are all durable and share syncs (of the log segment for a
//! message held in memory, of `queue/` for a larger one); a failed shared
//! sync fails every commit it covered and leaves none of them deliverable.

use std::collections::HashSet;
use std::fs;
use std::sync::{Arc, Mutex, mpsc};
use std::time::Duration;

use super::*;
use crate::message::Envelope;

/// What the directory held when each successful sync started.
type Seen = Arc<Mutex<Vec<HashSet<String>>>>;

/// A spool whose first `queue/` sync waits for the returned sender; later
/// syncs are real when `later_fails` is false and fail with EIO otherwise.
/// `started` hears when the first sync begins.
fn gated_spool(
    dir: &Path,
    later_fails: bool,
) -> (Arc<Spool>, mpsc::Sender<()>, mpsc::Receiver<()>, Seen) {
    let (mut spool, _) = Spool::open(dir, 0).expect("open spool");
    let (release, gate) = mpsc::channel::<()>();
    let (tell_started, started) = mpsc::channel::<()>();
    let gate = Mutex::new(Some((gate, tell_started)));
    let seen: Seen = Arc::default();
    let seen2 = seen.clone();
    spool.queue_sync = group::GroupSync::new(Box::new(move |queue| {
        let first = gate.lock().unwrap().take();
        if later_fails && first.is_none() {
            return Err(io::Error::from_raw_os_error(5));
        }
        let names: HashSet<String> = fs::read_dir(queue)?
            .map(|e| e.map(|e| e.file_name().to_string_lossy().into_owned()))
            .collect::<io::Result<_>>()?;
        if let Some((gate, tell_started)) = first {
            tell_started.send(()).unwrap();
            gate.recv().unwrap();
        }
        fsio::sync_dir(queue)?;
        seen2.lock().unwrap().push(names);
        Ok(())
    }));
    (Arc::new(spool), release, started, seen)
}

/// A message too large to hold in memory: committed as files.
const LARGE: usize = commit::HOLD + 1;

fn commit(
    spool: &Arc<Spool>,
    n: usize,
    size: usize,
) -> tokio::task::JoinHandle<Result<String, SpoolError>> {
    let spool = spool.clone();
    tokio::spawn(async move {
        let mut inc = spool.receive().await?;
        let mut body = format!("Subject: {n}\r\n\r\nbody {n}\r\n").into_bytes();
        body.resize(size.max(body.len()), b'x');
        inc.write(&body).await?;
        let env = Envelope {
            mail_from: "a@example.com".into(),
            rcpt_to: vec!["b@example.org".into()],
        };
        inc.commit(&spool, env).await
    })
}

type Handle = tokio::task::JoinHandle<Result<String, SpoolError>>;

/// Commits a first message of `size` bytes, whose sync `gated` holds, then
/// `followers` more, which gather (as `gathering` counts them) behind it;
/// then releases the gate. Returns the first commit and the followers.
async fn first_and_followers(
    (spool, release, started): (&Arc<Spool>, &mpsc::Sender<()>, &mpsc::Receiver<()>),
    followers: usize,
    size: usize,
    gathering: fn(&Spool) -> usize,
) -> (Handle, Vec<Handle>) {
    let first = commit(spool, 0, size);
    tokio::task::block_in_place(|| {
        started
            .recv_timeout(Duration::from_secs(10))
            .expect("first sync started")
    });
    let rest: Vec<_> = (1..=followers).map(|n| commit(spool, n, size)).collect();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while gathering(spool) < followers {
        assert!(
            tokio::time::Instant::now() < deadline,
            "followers never gathered"
        );
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    release.send(()).unwrap();
    (first, rest)
}

fn queue_gathering(spool: &Spool) -> usize {
    spool.queue_sync.gathering()
}

fn log_gathering(spool: &Spool) -> usize {
    spool.log.syncs().1
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_large_commits_are_all_durable_and_share_directory_syncs() {
    let dir = tempfile::tempdir().unwrap();
    let (spool, release, started, seen) = gated_spool(dir.path(), false);
    let gate = (&spool, &release, &started);
    let (first, rest) = first_and_followers(gate, 19, LARGE, queue_gathering).await;
    let mut ids = vec![first.await.unwrap().expect("first commit")];
    for h in rest {
        ids.push(h.await.unwrap().expect("follower commit"));
    }
    let seen = seen.lock().unwrap();
    for id in &ids {
        assert!(
            fsio::is_file(&spool.queue.join(format!("{id}.eml"))),
            "{id}"
        );
        assert!(
            fsio::is_file(&spool.queue.join(format!("{id}.json"))),
            "{id}"
        );
        let json = format!("{id}.json");
        assert!(
            seen.iter().any(|names| names.contains(&json)),
            "{id} acknowledged without a directory sync after its rename"
        );
    }
    assert_eq!(spool.depth().0, 20);
    assert_eq!(spool.queue_sync.syncs(), 2, "20 commits, 2 directory syncs");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_shared_directory_sync_fails_every_large_commit_it_covered_and_keeps_none() {
    let dir = tempfile::tempdir().unwrap();
    let (spool, release, started, _) = gated_spool(dir.path(), true);
    let gate = (&spool, &release, &started);
    let (first, rest) = first_and_followers(gate, 5, LARGE, queue_gathering).await;
    let kept = first.await.unwrap().expect("the first sync succeeded");
    for h in rest {
        match h.await.unwrap() {
            Err(SpoolError::Io(e)) => assert_eq!(e.raw_os_error(), Some(5)),
            other => panic!("a commit covered by a failed sync answered {other:?}"),
        }
    }
    let mut left: Vec<_> = fs::read_dir(&spool.queue)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    left.sort();
    assert_eq!(left, vec![format!("{kept}.eml"), format!("{kept}.json")]);
    assert_eq!(spool.depth().0, 1, "only the durable message is scheduled");
    assert_eq!(
        fs::read_dir(&spool.tmp).unwrap().count(),
        0,
        "no temp file left"
    );
}

/// The spool, the release of its first sync, the news that it started,
/// and what each successful sync saw.
type Gated<T> = (Arc<Spool>, mpsc::Sender<()>, mpsc::Receiver<()>, T);

/// A spool whose first log segment sync waits for the returned sender;
/// later syncs are real, or fail with EIO when `later_fails`. `seen` holds
/// the segment's length when each successful sync started.
fn gated_log(dir: &Path, later_fails: bool) -> Gated<Arc<Mutex<Vec<u64>>>> {
    let (mut spool, _) = Spool::open(dir, 0).expect("open spool");
    let (release, gate) = mpsc::channel::<()>();
    let (tell_started, started) = mpsc::channel::<()>();
    let gate = Mutex::new(Some((gate, tell_started)));
    let seen: Arc<Mutex<Vec<u64>>> = Arc::default();
    let seen2 = seen.clone();
    let sync: log::DataSync = Arc::new(move |file: &fs::File| {
        let first = gate.lock().unwrap().take();
        if later_fails && first.is_none() {
            return Err(io::Error::from_raw_os_error(5));
        }
        let len = file.metadata()?.len();
        if let Some((gate, tell_started)) = first {
            tell_started.send(()).unwrap();
            gate.recv().unwrap();
        }
        file.sync_data()?;
        seen2.lock().unwrap().push(len);
        Ok(())
    });
    spool.log = log::Log::with_sync(dir.join("log"), sync);
    (Arc::new(spool), release, started, seen)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_small_commits_share_one_log_sync_and_none_creates_a_file() {
    let dir = tempfile::tempdir().unwrap();
    let (spool, release, started, seen) = gated_log(dir.path(), false);
    let gate = (&spool, &release, &started);
    let (first, rest) = first_and_followers(gate, 19, 0, log_gathering).await;
    let mut ids = vec![first.await.unwrap().expect("first commit")];
    for h in rest {
        ids.push(h.await.unwrap().expect("follower commit"));
    }
    assert_eq!(spool.log.syncs().0, 2, "20 commits, 2 segment syncs");
    let seg = fs::read(dir.path().join("log").join(format!("{:016x}.log", 1))).unwrap();
    assert!(
        seen.lock().unwrap().contains(&(seg.len() as u64)),
        "a sync started after the last frame was written"
    );
    assert_eq!(fs::read_dir(&spool.queue).unwrap().count(), 0);
    assert_eq!(fs::read_dir(&spool.tmp).unwrap().count(), 0);
    assert_eq!(spool.depth().0, 20);
    drop(spool);
    let (again, recovery) = Spool::open(dir.path(), 0).unwrap();
    assert_eq!(recovery.queued, 20);
    let again = Arc::new(again);
    let claims = again.claim_due(tokio::time::Instant::now() + Duration::from_secs(1), 50);
    let mut subjects = Vec::new();
    for c in claims {
        let (meta, raw) = again.load(&c).unwrap();
        assert!(ids.contains(&meta.id));
        subjects.push(
            String::from_utf8(raw)
                .unwrap()
                .lines()
                .next()
                .unwrap()
                .to_string(),
        );
        again.complete(c).unwrap();
    }
    subjects.sort();
    subjects.dedup();
    assert_eq!(subjects.len(), 20);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_log_sync_fails_every_commit_it_covered_and_none_is_recovered() {
    let dir = tempfile::tempdir().unwrap();
    let (spool, release, started, _) = gated_log(dir.path(), true);
    let gate = (&spool, &release, &started);
    let (first, rest) = first_and_followers(gate, 5, 0, log_gathering).await;
    let kept = first.await.unwrap().expect("the first sync succeeded");
    for h in rest {
        match h.await.unwrap() {
            Err(SpoolError::Io(e)) => assert_eq!(e.raw_os_error(), Some(5)),
            other => panic!("a commit covered by a failed sync answered {other:?}"),
        }
    }
    assert_eq!(spool.depth().0, 1, "only the durable message is scheduled");
    // The next commit goes to a fresh segment and is durable.
    let after = commit(&spool, 9, 0).await.unwrap();
    assert!(after.is_err(), "the stand-in sync still fails: {after:?}");
    drop(spool);
    let (again, recovery) = Spool::open(dir.path(), 0).unwrap();
    assert_eq!(
        recovery.queued, 1,
        "only the acknowledged message comes back"
    );
    assert_eq!(again.queued_ids().unwrap(), vec![kept]);
}
