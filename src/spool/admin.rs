//! Operator actions on the spool (behind `postrelay queue ...`): list, retry
//! now, delete, requeue dead letters.
//!
//! Invariant: a mutation runs inside the process that owns the spool (the
//! daemon, or the CLI when no daemon runs) and claims the entry under the
//! schedule's lock before touching a file, exactly as a delivery worker
//! does: an entry in flight is refused, and two actions on one id (two
//! requeues, `requeue --all` beside `requeue ID`) never interleave.

use std::fs;
use std::path::Path;
use std::sync::Arc;
use std::time::SystemTime;

use tokio::time::Instant;

use super::store::{id_of, read_record, valid_id};
use super::trust::{self, Kind};
use super::{Meta, Spool, SpoolError, fsio};

/// Which part of the spool.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Area {
    Queue,
    Failed,
}

impl Area {
    fn dir(self) -> &'static str {
        match self {
            Area::Queue => "queue",
            Area::Failed => "failed",
        }
    }
}

/// The area's directory, once the spool root and it are checked; `None`
/// when the spool does not exist yet.
fn checked_dir(root: &Path, area: Area) -> Result<Option<std::path::PathBuf>, SpoolError> {
    let root = trust::resolve_root(root)?;
    let dir = root.join(area.dir());
    for path in [root.as_path(), dir.as_path()] {
        match fs::symlink_metadata(path) {
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            _ => trust::check(path, Kind::Dir)?,
        }
    }
    Ok(Some(dir))
}

/// Reads every entry of `area` under the spool at `root`, oldest first.
/// Read-only and lock-free: safe beside a running daemon (entries that
/// vanish while listing are skipped). Refuses an untrusted spool.
pub fn list(root: &Path, area: Area) -> Result<Vec<Meta>, SpoolError> {
    let Some(dir) = checked_dir(root, area)? else {
        return Ok(Vec::new());
    };
    // The log before the files: an entry moving from the log to files is
    // written to its files before its frame is tombstoned, so one of the two
    // reads sees it whenever the other ran.
    let logged = match area {
        Area::Queue => {
            let failed = dir.with_file_name(Area::Failed.dir());
            let dead = |id: &str| fsio::is_file(&failed.join(format!("{id}.json")));
            super::log::list(&dir.with_file_name("log"), &dead)?
        }
        Area::Failed => Vec::new(),
    };
    let mut out = Vec::new();
    for entry in fs::read_dir(&dir)? {
        let name = entry?.file_name();
        let Some(id) = name.to_str().and_then(|n| id_of(n, "json")) else {
            continue;
        };
        match read_record(&dir, &id) {
            Ok(m) => out.push(m),
            Err(SpoolError::NotFound(_)) => {}
            Err(e) => tracing::warn!(id = %id, error = %e, "skipping entry"),
        }
    }
    // Files win over a frame with the same id (see the log's recovery).
    let on_file: std::collections::HashSet<String> = out.iter().map(|m| m.id.clone()).collect();
    out.extend(logged.into_iter().filter(|m| !on_file.contains(&m.id)));
    out.sort_by(|a, b| a.received_at.cmp(&b.received_at).then(a.id.cmp(&b.id)));
    Ok(out)
}

/// Reads one entry's record and raw message from `area`.
pub fn read(root: &Path, area: Area, id: &str) -> Result<(Meta, Vec<u8>), SpoolError> {
    if !valid_id(id) {
        return Err(SpoolError::NotFound(id.to_string()));
    }
    let Some(dir) = checked_dir(root, area)? else {
        return Err(SpoolError::NotFound(id.to_string()));
    };
    let from_files = || {
        read_record(&dir, id)
            .and_then(|meta| Ok((meta, fsio::read(&dir.join(format!("{id}.eml")))?)))
    };
    match from_files() {
        Err(SpoolError::NotFound(_)) if area == Area::Queue => {
            match super::log::read(&dir.with_file_name("log"), id)? {
                Some(found) => Ok(found),
                // Moved from the log to its files meanwhile: the files were
                // written before the frame was tombstoned.
                None => from_files(),
            }
        }
        other => other,
    }
}

impl Spool {
    /// Makes a queued message due now (and clears a held state).
    pub fn retry_now(self: &Arc<Self>, id: &str) -> Result<(), SpoolError> {
        let claim = self.claim_one(id)?;
        let mut meta = match self.record(id) {
            Ok(m) => m,
            Err(e) => {
                self.release(claim, Instant::now());
                return Err(e);
            }
        };
        meta.held = false;
        self.reschedule(claim, &meta, Instant::now())
    }

    /// Removes a queued message for good.
    pub fn delete(self: &Arc<Self>, id: &str) -> Result<(), SpoolError> {
        let claim = self.claim_one(id)?;
        self.complete(claim)
    }

    /// Moves a dead letter back into the queue, due now, with a fresh
    /// attempt count and `max_age` measured from now; refused recipients
    /// get another chance, accepted ones are not resent. Crash-safe: the
    /// message is linked into `queue/` and committed there before the dead
    /// letter is removed.
    pub fn requeue(self: &Arc<Self>, id: &str) -> Result<(), SpoolError> {
        if !valid_id(id) {
            return Err(SpoolError::NotFound(id.to_string()));
        }
        // Still queued, being dead-lettered, or being requeued right now: refused.
        let claim = self.claim_new(id)?;
        match self.relink_dead_letter(id) {
            Ok(meta) => {
                self.enqueue(claim, Instant::now(), meta.received_at);
                Ok(())
            }
            Err(e) => {
                self.forget(claim);
                Err(e)
            }
        }
    }

    /// The file work of [`requeue`](Spool::requeue), under its claim.
    fn relink_dead_letter(&self, id: &str) -> Result<Meta, SpoolError> {
        let mut meta = read_record(&self.failed, id)?;
        let now = SystemTime::now();
        meta.failure = None;
        meta.reset_refused();
        meta.attempts = 0;
        meta.held = false;
        meta.last_error = None;
        meta.received_at = now;
        meta.next_attempt_at = now;
        // Message first (a second link to it), record (the commit marker)
        // last, as on receipt; the dead letter goes only once the queue entry
        // is durable. A crash before the record leaves an orphan link that
        // recovery removes, and the dead letter intact.
        let failed_eml = self.failed.join(format!("{id}.eml"));
        let queued_eml = self.queue.join(format!("{id}.eml"));
        let queued_json = self.queue.join(format!("{id}.json"));
        if fsio::is_file(&queued_json) {
            return Err(SpoolError::AlreadyQueued(id.to_string()));
        }
        if !fsio::is_file(&failed_eml) {
            return Err(SpoolError::Corrupt {
                id: id.to_string(),
                reason: "the dead letter has no message file".into(),
            });
        }
        let commit = || -> Result<(), SpoolError> {
            fsio::remove_if_exists(&queued_eml)?;
            fs::hard_link(&failed_eml, &queued_eml)?;
            self.write_record(&self.queue, id, &meta)
        };
        if let Err(e) = commit() {
            let _ = fsio::remove_if_exists(&queued_json);
            let _ = fsio::remove_if_exists(&queued_eml);
            return Err(e);
        }
        fsio::remove_if_exists(&self.failed.join(format!("{id}.json")))?;
        fsio::remove_if_exists(&failed_eml)?;
        fsio::sync_dir(&self.failed)?;
        Ok(meta)
    }

    /// Ids currently in the queue (from disk).
    pub fn queued_ids(&self) -> Result<Vec<String>, SpoolError> {
        Ok(list(&self.root, Area::Queue)?
            .into_iter()
            .map(|m| m.id)
            .collect())
    }

    /// Ids currently dead-lettered (from disk).
    pub fn failed_ids(&self) -> Result<Vec<String>, SpoolError> {
        Ok(list(&self.root, Area::Failed)?
            .into_iter()
            .map(|m| m.id)
            .collect())
    }
}
