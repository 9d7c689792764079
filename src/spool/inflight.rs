//! In-flight markers: `inflight/<id>.<random>` names the entries one API
//! call carries (one id a line, a batch's ids all in one file) for as long
//! as the call's outcome is not recorded. Neither Postmark nor Postal takes
//! an idempotency key, so an entry whose call was under way when the daemon
//! stopped may already have been sent: it is retried (the record still says
//! pending), and start-up recovery logs it at warn as "may duplicate" so the
//! operator can trace the duplicate.
//!
//! The marker is never fsynced: it drives a log line, not delivery. A
//! `kill -9` keeps it (the page cache survives the process); only a power
//! loss can drop it, and then the cost is a missing warning, never a lost
//! or doubled message. One call costs one create, one write and one unlink.
//!
//! Invariant: recovery treats a marker as hostile input: it reads at most
//! [`MAX_MARKER_BYTES`], never through a symlink, keeps only lines that are
//! valid entry ids, and removes every marker (and only markers) it read.

use std::fs;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};

use super::store::valid_id;
use super::{Spool, SpoolError, fsio};

/// The most a marker is read of at recovery: 500 ids of 27 bytes fit
/// three times over.
pub const MAX_MARKER_BYTES: u64 = 64 * 1024;

/// One API call's marker; removed when finished or dropped.
#[derive(Debug)]
#[must_use = "the marker is removed as soon as the guard is dropped"]
pub struct InFlight {
    path: Option<PathBuf>,
}

impl InFlight {
    /// The call's outcome is recorded: the marker goes.
    pub fn finish(mut self) {
        self.remove();
    }

    fn remove(&mut self) {
        if let Some(path) = self.path.take()
            && let Err(e) = fs::remove_file(&path)
        {
            tracing::warn!(path = %path.display(), error = %e, "cannot remove an in-flight marker; recovery will name its entries as possible duplicates");
        }
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.remove();
    }
}

/// The marker's body: one valid id a line. Invalid ids are refused, so a
/// caller bug cannot write a path or a newline into the spool.
fn body(ids: &[&str]) -> Result<Vec<u8>, SpoolError> {
    let mut out = Vec::with_capacity(ids.len() * 27);
    for id in ids {
        if !valid_id(id) {
            return Err(SpoolError::Corrupt {
                id: (*id).to_string(),
                reason: "not a spool entry id".into(),
            });
        }
        out.extend_from_slice(id.as_bytes());
        out.push(b'\n');
    }
    Ok(out)
}

/// The valid ids in a marker's (possibly hostile) content, deduplicated.
fn parse(bytes: &[u8]) -> Vec<String> {
    let mut ids: Vec<String> = bytes
        .split(|&b| b == b'\n')
        .filter_map(|line| std::str::from_utf8(line).ok())
        .map(|line| line.trim_end_matches('\r'))
        .filter(|line| valid_id(line))
        .map(str::to_string)
        .collect();
    ids.sort();
    ids.dedup();
    ids
}

/// Reads at most [`MAX_MARKER_BYTES`] of a marker, never through a symlink.
fn read_bounded(path: &Path) -> std::io::Result<Vec<u8>> {
    let mut out = Vec::new();
    fsio::open_read(path)?
        .take(MAX_MARKER_BYTES)
        .read_to_end(&mut out)?;
    Ok(out)
}

impl Spool {
    /// Marks the entries `ids` as carried by one API call that starts now;
    /// finish (or drop) the guard after the call's outcome is recorded in
    /// the spool. Blocking (one small file create and write): call from the
    /// blocking pool, or accept one syscall pair on the runtime thread.
    ///
    /// An error (disk full, an invalid id) leaves no marker behind; the
    /// marker is advisory, so the caller logs the error and makes the call
    /// anyway.
    pub fn in_flight(&self, ids: &[&str]) -> Result<InFlight, SpoolError> {
        let body = body(ids)?;
        let first = ids.first().copied().unwrap_or("call");
        let path = self
            .inflight
            .join(format!("{first}.{:016x}", rand::random::<u64>()));
        let mut file = fsio::create_new(&path).map_err(SpoolError::from_io)?;
        let guard = InFlight { path: Some(path) };
        file.write_all(&body).map_err(SpoolError::from_io)?;
        Ok(guard)
    }

    /// Start-up: logs every entry a leftover marker names that is still
    /// queued as a possible duplicate, then removes the markers. Returns how
    /// many entries were named.
    pub(super) fn recover_in_flight(&self) -> Result<usize, SpoolError> {
        let mut named = 0;
        for entry in fs::read_dir(&self.inflight)? {
            let entry = entry?;
            let path = entry.path();
            if entry.file_type()?.is_dir() {
                tracing::warn!(path = %path.display(), "unexpected directory in the spool; left alone");
                continue;
            }
            let ids = match read_bounded(&path) {
                Ok(bytes) => parse(&bytes),
                Err(e) => {
                    tracing::warn!(path = %path.display(), error = %e, "unreadable in-flight marker; removed");
                    Vec::new()
                }
            };
            for id in ids {
                if self.sched().contains(&id) {
                    tracing::warn!(id = %id, "may duplicate: was in flight when the daemon stopped; it is sent again");
                    named += 1;
                }
            }
            fs::remove_file(&path)?;
        }
        Ok(named)
    }
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::symlink;
    use std::sync::Arc;

    use super::*;
    use crate::message::Envelope;

    const A: &str = "01ARZ3NDEKTSV4RRFFQ69G5FAV";
    const B: &str = "01BX5ZZKBKACTAV9WEVGEMMVRZ";

    fn open(dir: &Path) -> (Arc<Spool>, super::super::Recovery) {
        let (s, r) = Spool::open(dir, 0).expect("open spool");
        (Arc::new(s), r)
    }

    async fn put(spool: &Arc<Spool>) -> String {
        let mut inc = spool.receive().await.unwrap();
        inc.write(b"Subject: x\r\n\r\nbody\r\n").await.unwrap();
        let env = Envelope {
            mail_from: "a@example.com".into(),
            rcpt_to: vec!["b@example.org".into()],
        };
        inc.commit(spool, env).await.unwrap()
    }

    fn markers(root: &Path) -> Vec<PathBuf> {
        fs::read_dir(root.join("inflight"))
            .unwrap()
            .map(|e| e.unwrap().path())
            .collect()
    }

    #[test]
    fn marker_content_keeps_valid_ids_only_once() {
        let cases: [(&[u8], Vec<&str>); 6] = [
            (b"", vec![]),
            (b"01ARZ3NDEKTSV4RRFFQ69G5FAV\n", vec![A]),
            (
                b"01ARZ3NDEKTSV4RRFFQ69G5FAV\r\n01ARZ3NDEKTSV4RRFFQ69G5FAV",
                vec![A],
            ),
            (b"../../etc/passwd\n01BX5ZZKBKACTAV9WEVGEMMVRZ\n", vec![B]),
            (
                b"\xff\xfe01ARZ3NDEKTSV4RRFFQ69G5FAV\n01ARZ3NDEKTSV4RRFFQ69G5FAV.json\n",
                vec![],
            ),
            (
                b"01arz3ndektsv4rrffq69g5fav\n 01ARZ3NDEKTSV4RRFFQ69G5FAV\n",
                vec![],
            ),
        ];
        for (bytes, want) in cases {
            assert_eq!(parse(bytes), want, "{:?}", String::from_utf8_lossy(bytes));
        }
    }

    #[tokio::test]
    async fn a_call_leaves_one_marker_naming_its_ids_until_finished_or_dropped() {
        let dir = tempfile::tempdir().unwrap();
        let (spool, _) = open(dir.path());
        let guard = spool.in_flight(&[A, B]).unwrap();
        let files = markers(dir.path());
        assert_eq!(files.len(), 1);
        assert_eq!(
            fs::read(&files[0]).unwrap(),
            format!("{A}\n{B}\n").as_bytes()
        );
        guard.finish();
        assert!(markers(dir.path()).is_empty());
        drop(spool.in_flight(&[A]).unwrap());
        assert!(
            markers(dir.path()).is_empty(),
            "a dropped guard removes its marker"
        );
    }

    #[tokio::test]
    async fn an_invalid_id_is_refused_and_leaves_no_marker() {
        let dir = tempfile::tempdir().unwrap();
        let (spool, _) = open(dir.path());
        let err = spool.in_flight(&[A, "../queue/x"]).unwrap_err();
        assert!(matches!(err, SpoolError::Corrupt { .. }), "{err}");
        assert!(markers(dir.path()).is_empty());
    }

    #[tokio::test]
    async fn recovery_names_the_queued_entries_of_a_leftover_marker_and_removes_it() {
        let dir = tempfile::tempdir().unwrap();
        let (kept, gone) = {
            let (spool, _) = open(dir.path());
            let (kept, gone) = (put(&spool).await, put(&spool).await);
            // The daemon stops during the call: the guard never runs.
            std::mem::forget(spool.in_flight(&[&kept, &gone]).unwrap());
            // `gone` was delivered and removed before the stop.
            for claim in spool.claim_due(tokio::time::Instant::now(), 10) {
                if claim.id() == gone {
                    spool.complete(claim).unwrap();
                } else {
                    spool.release(claim, tokio::time::Instant::now());
                }
            }
            (kept, gone)
        };
        assert_ne!(kept, gone);
        let (spool, r) = open(dir.path());
        assert_eq!(r.may_duplicate, 1);
        assert_eq!(r.queued, 1);
        assert!(markers(dir.path()).is_empty());
        let claims = spool.claim_due(tokio::time::Instant::now(), 10);
        assert_eq!(
            claims.iter().map(|c| c.id()).collect::<Vec<_>>(),
            [kept.as_str()]
        );
    }

    #[tokio::test]
    async fn hostile_markers_are_bounded_not_followed_and_removed() {
        let dir = tempfile::tempdir().unwrap();
        {
            let (spool, _) = open(dir.path());
            put(&spool).await
        };
        let inflight = dir.path().join("inflight");
        let queued = dir.path().join("log").join(format!("{:016x}.log", 1));
        // Past the bound: the id after 1 MiB of junk is never read.
        let mut huge = vec![b'x'; 1 << 20];
        huge.extend_from_slice(format!("\n{A}\n").as_bytes());
        fs::write(inflight.join("huge"), huge).unwrap();
        // Paths and binary junk are not ids.
        fs::write(inflight.join("junk"), b"../queue/x\n\0\xff/etc/passwd\n").unwrap();
        // A symlink to the entry's log segment is not followed (and it stays).
        symlink(&queued, inflight.join("link")).unwrap();
        fs::create_dir(inflight.join("sub")).unwrap();
        let (_spool, r) = open(dir.path());
        assert_eq!(r.may_duplicate, 0);
        assert_eq!(r.queued, 1);
        assert!(queued.exists(), "the symlink's target is untouched");
        assert_eq!(
            markers(dir.path()),
            [inflight.join("sub")],
            "only the directory is left"
        );
    }
}
