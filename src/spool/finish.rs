//! A claimed entry leaves the queue: delivered ([`Spool::complete`], many
//! at once with [`Spool::complete_all`]) or dead-lettered into `failed/`
//! ([`Spool::dead_letter`]). Blocking: call from `spawn_blocking`.
//!
//! Invariant: `Ok` only once the change is durable: a tombstone or a
//! directory sync that started after it (shared with concurrent
//! completions and moves); on `Err` the entry is still on disk, found again
//! at the next start (a completion) or due again after a pause (a move).

use std::time::Duration;

use tokio::time::Instant;

use super::{Claim, Meta, Spool, SpoolError, entry, fsio};

/// How long an entry whose move to `failed/` failed waits before it is due again.
const FAILED_MOVE_PAUSE: Duration = Duration::from_secs(60);

impl Spool {
    /// Blocking. Delivered: the entry leaves the schedule and the spool
    /// (record first: a crash in between leaves an orphan `.eml` that
    /// recovery removes). On `Err` the entry stays on disk, unscheduled
    /// until the next start.
    pub fn complete(&self, claim: Claim) -> Result<(), SpoolError> {
        self.complete_all(vec![claim])
            .pop()
            .expect("one answer per claim")
    }

    /// Blocking. [`complete`](Self::complete) for many entries, one answer
    /// per claim in order: log entries share one tombstone write and sync
    /// per segment, file entries one `queue/` sync.
    pub fn complete_all(&self, claims: Vec<Claim>) -> Vec<Result<(), SpoolError>> {
        let ids: Vec<String> = claims.into_iter().map(|c| self.forget(c)).collect();
        let refs: Vec<&str> = ids.iter().map(String::as_str).collect();
        let mut answers = Vec::with_capacity(ids.len());
        let mut files = Vec::new();
        for (i, tombstoned) in self.log.tombstone_all(&refs).into_iter().enumerate() {
            answers.push(match tombstoned {
                Ok(true) => Ok(()),
                Ok(false) => {
                    files.push(i);
                    let id = &ids[i];
                    fsio::remove_if_exists(&self.queue.join(format!("{id}.json")))
                        .and_then(|()| {
                            fsio::remove_if_exists(&self.queue.join(format!("{id}.eml")))
                        })
                        .map_err(SpoolError::from)
                }
                Err(e) => Err(SpoolError::from_io(e)),
            });
        }
        if files.iter().any(|&i| answers[i].is_ok())
            && let Err(e) = self.queue_sync.covered(&self.queue)
        {
            for &i in &files {
                if answers[i].is_ok() {
                    answers[i] = Err(SpoolError::Io(fsio::copy_error(&e)));
                }
            }
        }
        answers
    }

    /// Blocking. Moves the entry to `failed/` with `meta.failure` recorded.
    /// On `Err` the entry stays queued, due again after a pause.
    pub fn dead_letter(&self, claim: Claim, meta: &Meta) -> Result<(), SpoolError> {
        let id = claim.id().to_string();
        // Each step durable before the next (record, message, queue
        // removal), each directory sync shared with concurrent moves.
        let moved = (|| -> Result<(), SpoolError> {
            let mut failed = meta.clone();
            failed.id = id.clone();
            failed.version = entry::META_VERSION;
            let record = self.failed.join(format!("{id}.json"));
            if let Some((_, raw)) = self.log.read(&id)? {
                // Message, then record, then the frame's tombstone.
                let eml = self.failed.join(format!("{id}.eml"));
                fsio::write_renamed_via(&self.tmp, &eml, &raw).map_err(SpoolError::from_io)?;
                fsio::write_renamed_via(&self.tmp, &record, &entry::encode(&failed))
                    .map_err(SpoolError::from_io)?;
                self.failed_sync.covered(&self.failed)?;
                self.log.tombstone(&id).map_err(SpoolError::from_io)?;
                return Ok(());
            }
            fsio::write_renamed_via(&self.tmp, &record, &entry::encode(&failed))
                .map_err(SpoolError::from_io)?;
            self.failed_sync.covered(&self.failed)?;
            let eml = self.queue.join(format!("{id}.eml"));
            if fsio::is_file(&eml) {
                std::fs::rename(&eml, self.failed.join(format!("{id}.eml")))?;
                self.failed_sync.covered(&self.failed)?;
            }
            fsio::remove_if_exists(&self.queue.join(format!("{id}.json")))?;
            self.queue_sync.covered(&self.queue)?;
            Ok(())
        })();
        match moved {
            Ok(()) => {
                self.forget(claim);
                Ok(())
            }
            Err(e) => {
                self.release(claim, Instant::now() + FAILED_MOVE_PAUSE);
                Err(e)
            }
        }
    }
}
