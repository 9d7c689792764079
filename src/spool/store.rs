//! A claimed entry on disk, in the log or as files: read, save progress,
//! reschedule (leaving: [`finish`](super::finish)). An entry in the log
//! becomes files the first time its record changes (materialised: files
//! first, then its tombstone). Blocking: call from `spawn_blocking`.
//!
//! Invariant: every path is built from a claim's id or a validated file
//! name (a ULID), never from a record's content; records are written
//! through a fresh temp file in `tmp/` and renamed into place. A removal or
//! move returns `Ok` only after a sync of each directory (or tombstone
//! file) it changed that started after the change (shared with concurrent
//! commits, completions and moves: [`group`](super::group)).

use std::path::Path;
use std::time::SystemTime;

use tokio::time::Instant;

use super::entry::{self, Decoded};
use super::schedule::wall_from_due;
use super::{Claim, Meta, Spool, SpoolError, fsio};

/// Spool ids are ULIDs: 26 characters of Crockford base 32, upper case.
/// Anything else (a path, `..`, a hand-made name) is not an entry.
pub fn valid_id(id: &str) -> bool {
    id.len() == 26
        && id
            .bytes()
            .all(|b| b.is_ascii_digit() || (b.is_ascii_uppercase() && !b"ILOU".contains(&b)))
}

/// The id of an entry file `<id>.<ext>`, when the name is exactly that.
pub(super) fn id_of(name: &str, ext: &str) -> Option<String> {
    let stem = name.strip_suffix(ext)?.strip_suffix('.')?;
    valid_id(stem).then(|| stem.to_string())
}

/// Reads and decodes `<dir>/<id>.json` without following a symlink; the
/// record's id is `id`. A newer record is [`SpoolError::Newer`].
pub(super) fn read_record(dir: &Path, id: &str) -> Result<Meta, SpoolError> {
    let path = dir.join(format!("{id}.json"));
    let bytes = match fsio::read(&path) {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return Err(SpoolError::NotFound(id.to_string()));
        }
        other => other?,
    };
    decode_record(id, &bytes)
}

/// Decodes the record of entry `id`.
pub(super) fn decode_record(id: &str, bytes: &[u8]) -> Result<Meta, SpoolError> {
    match entry::decode(id, bytes) {
        Ok(Decoded::Current(meta)) => Ok(*meta),
        Ok(Decoded::Newer(version)) => Err(SpoolError::Newer {
            id: id.to_string(),
            version,
        }),
        Err(reason) => Err(SpoolError::Corrupt {
            id: id.to_string(),
            reason,
        }),
    }
}

impl Spool {
    /// Blocking. The entry's record and message bytes.
    pub fn load(&self, claim: &Claim) -> Result<(Meta, Vec<u8>), SpoolError> {
        let id = claim.id();
        if let Some((record, raw)) = self.log.read(id)? {
            return Ok((decode_record(id, &record)?, raw));
        }
        let meta = read_record(&self.queue, id)?;
        let raw = fsio::read(&self.queue.join(format!("{id}.eml")))?;
        Ok((meta, raw))
    }

    /// Blocking. The record of queued entry `id`, wherever it lives.
    pub(super) fn record(&self, id: &str) -> Result<Meta, SpoolError> {
        match self.log.read(id)? {
            Some((record, _)) => decode_record(id, &record),
            None => read_record(&self.queue, id),
        }
    }

    /// Blocking. Persists progress (per-recipient state) and keeps the
    /// claim. An `Err` means the attempt must stop.
    pub fn save_progress(&self, claim: &Claim, meta: &Meta) -> Result<(), SpoolError> {
        self.save(claim.id(), meta)
    }

    /// Writes entry `id`'s record: as `queue/<id>.json`, materialising an
    /// entry that is still in the log.
    fn save(&self, id: &str, meta: &Meta) -> Result<(), SpoolError> {
        let Some((_, raw)) = self.log.read(id)? else {
            return self.write_record(&self.queue, id, meta);
        };
        // Message, then record (its directory sync covers both renames);
        // without its record the .eml would be an orphan: taken back.
        let eml = self.queue.join(format!("{id}.eml"));
        let files = fsio::write_renamed_via(&self.tmp, &eml, &raw)
            .map_err(SpoolError::from_io)
            .and_then(|()| self.write_record(&self.queue, id, meta));
        if let Err(e) = files {
            let _ = fsio::remove_if_exists(&eml);
            return Err(e);
        }
        // The files are durable and win over the frame from here on.
        self.log.tombstone(id).map_err(SpoolError::from_io)?;
        Ok(())
    }

    /// Blocking. Writes `meta` with `next_attempt_at` = the wall time of
    /// `due`, and gives the entry back due at `due` (also when the write
    /// fails: the entry keeps its previous record).
    pub fn reschedule(&self, claim: Claim, meta: &Meta, due: Instant) -> Result<(), SpoolError> {
        let mut meta = meta.clone();
        meta.next_attempt_at = wall_from_due(due, Instant::now(), SystemTime::now());
        let written = self.save(claim.id(), &meta);
        self.release(claim, due);
        written
    }

    /// Writes `<dir>/<id>.json` atomically (temp file in `tmp/`).
    pub(super) fn write_record(&self, dir: &Path, id: &str, meta: &Meta) -> Result<(), SpoolError> {
        let mut meta = meta.clone();
        meta.id = id.to_string();
        meta.version = entry::META_VERSION;
        fsio::write_atomic_via(
            &self.tmp,
            &dir.join(format!("{id}.json")),
            &entry::encode(&meta),
        )
        .map_err(SpoolError::from_io)
    }
}

#[cfg(test)]
mod tests {
    use std::sync::{Arc, Mutex, mpsc};
    use std::thread;
    use std::time::Duration;

    use super::super::group::GroupSync;
    use super::*;
    use crate::message::Envelope;

    /// Once armed, the next `queue/` sync tells `started` and waits for
    /// `release`; syncs after it fail with EIO when `then_fail`.
    type Gate = Arc<Mutex<Option<(mpsc::Receiver<()>, mpsc::Sender<()>)>>>;

    /// A spool holding `n` committed messages (as files), all claimed,
    /// whose `queue/` syncs pass `gate` once it is armed.
    async fn claimed(dir: &Path, n: usize, then_fail: bool) -> (Arc<Spool>, Vec<Claim>, Gate) {
        let (mut spool, _) = Spool::open(dir, 0).unwrap();
        let gate: Gate = Arc::default();
        let armed = Arc::new(Mutex::new(false));
        let (gate2, armed2) = (gate.clone(), armed.clone());
        spool.queue_sync = GroupSync::new(Box::new(move |queue| {
            if let Some((release, started)) = gate2.lock().unwrap().take() {
                *armed2.lock().unwrap() = true;
                started.send(()).unwrap();
                release.recv().unwrap();
            } else if then_fail && *armed2.lock().unwrap() {
                return Err(std::io::Error::from_raw_os_error(5));
            }
            fsio::sync_dir(queue)
        }));
        let spool = Arc::new(spool);
        for i in 0..n {
            // Too large to hold: each entry is files in `queue/`.
            let mut body = format!("Subject: {i}\r\n\r\nbody\r\n").into_bytes();
            body.resize(super::super::commit::HOLD + 1, b'x');
            let mut inc = spool.receive().await.unwrap();
            inc.write(&body).await.unwrap();
            let env = Envelope {
                mail_from: "a@example.com".into(),
                rcpt_to: vec!["b@example.org".into()],
            };
            inc.commit(&spool, env).await.unwrap();
        }
        let claims = spool.claim_due(Instant::now(), n);
        assert_eq!(claims.len(), n);
        (spool, claims, gate)
    }

    /// Completes the first claim (its sync held at the gate), then the
    /// others while that sync runs; returns every result, first one first.
    fn complete_all(
        spool: &Arc<Spool>,
        mut claims: Vec<Claim>,
        gate: &Gate,
    ) -> Vec<Result<(), SpoolError>> {
        let (release, wait) = mpsc::channel();
        let (tell, started) = mpsc::channel();
        *gate.lock().unwrap() = Some((wait, tell));
        let rest = claims.split_off(1);
        let s = spool.clone();
        let first_claim = claims.pop().unwrap();
        let first = thread::spawn(move || s.complete(first_claim));
        started.recv_timeout(Duration::from_secs(10)).unwrap();
        let n = rest.len();
        let followers: Vec<_> = rest
            .into_iter()
            .map(|c| {
                let s = spool.clone();
                thread::spawn(move || s.complete(c))
            })
            .collect();
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while spool.queue_sync.gathering() < n {
            assert!(
                std::time::Instant::now() < deadline,
                "followers never gathered"
            );
            thread::sleep(Duration::from_millis(1));
        }
        release.send(()).unwrap();
        std::iter::once(first)
            .chain(followers)
            .map(|h| h.join().unwrap())
            .collect()
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn concurrent_completions_share_directory_syncs() {
        let dir = tempfile::tempdir().unwrap();
        let (spool, claims, gate) = claimed(dir.path(), 8, false).await;
        let before = spool.queue_sync.syncs();
        let results = tokio::task::block_in_place(|| complete_all(&spool, claims, &gate));
        assert!(results.iter().all(Result::is_ok), "{results:?}");
        assert_eq!(
            spool.queue_sync.syncs() - before,
            2,
            "8 completions, 2 directory syncs"
        );
        assert_eq!(std::fs::read_dir(&spool.queue).unwrap().count(), 0);
        assert_eq!(spool.depth().0, 0);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_failed_shared_sync_fails_every_completion_it_covered() {
        let dir = tempfile::tempdir().unwrap();
        let (spool, claims, gate) = claimed(dir.path(), 6, true).await;
        let results = tokio::task::block_in_place(|| complete_all(&spool, claims, &gate));
        assert!(results[0].is_ok(), "the first sync succeeded");
        assert_eq!(results.len(), 6);
        for r in &results[1..] {
            match r {
                Err(SpoolError::Io(e)) => assert_eq!(e.raw_os_error(), Some(5)),
                other => panic!("a completion covered by a failed sync answered {other:?}"),
            }
        }
    }

    #[test]
    fn only_a_ulid_is_an_entry_id() {
        let cases = [
            ("01ARZ3NDEKTSV4RRFFQ69G5FAV", true),
            ("01arz3ndektsv4rrffq69g5fav", false),
            ("01ARZ3NDEKTSV4RRFFQ69G5FA", false),
            ("01ARZ3NDEKTSV4RRFFQ69G5FAVX", false),
            ("01ORPHAN000000000000000000", false),
            ("../../outside/precious", false),
            ("", false),
        ];
        for (id, want) in cases {
            assert_eq!(valid_id(id), want, "{id}");
        }
    }

    #[test]
    fn an_entry_file_name_gives_its_id_only_when_exact() {
        let id = "01ARZ3NDEKTSV4RRFFQ69G5FAV";
        let cases = [
            (format!("{id}.json"), "json", Some(id)),
            (format!("{id}.eml"), "eml", Some(id)),
            (format!("{id}.json"), "eml", None),
            (format!("{id}.json.broken"), "json", None),
            (format!(".{id}.json.tmp"), "json", None),
            ("x.json".to_string(), "json", None),
        ];
        for (name, ext, want) in cases {
            assert_eq!(id_of(&name, ext).as_deref(), want, "{name} {ext}");
        }
    }
}
