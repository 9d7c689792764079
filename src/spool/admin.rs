//! Operator actions on the spool (behind `postrelay queue ...`): list, retry
//! now, delete, requeue dead letters. Mutations run inside the process that
//! owns the spool (the daemon, or the CLI when no daemon runs) and claim the
//! entry under the schedule's lock first, exactly as a delivery worker does,
//! so the two never act on one entry at once: an entry in flight is refused.

use std::fs;
use std::path::Path;
use std::time::SystemTime;

use super::{Meta, Spool, SpoolError, fsio, read_meta, remove_if_exists, to_json};

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

/// Reads every entry of `area` under the spool at `root`, oldest first.
/// Read-only and lock-free: safe beside a running daemon (entries that
/// vanish while listing are skipped).
pub fn list(root: &Path, area: Area) -> Result<Vec<Meta>, SpoolError> {
    let dir = root.join(area.dir());
    let mut out = Vec::new();
    let entries = match fs::read_dir(&dir) {
        Ok(rd) => rd,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(out),
        Err(e) => return Err(e.into()),
    };
    for entry in entries {
        let path = entry?.path();
        if path.extension().is_some_and(|e| e == "json") {
            match read_meta(&path) {
                Ok(m) => out.push(m),
                Err(SpoolError::Io(e)) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => {
                    tracing::warn!(path = %path.display(), error = %e, "skipping unreadable entry")
                }
            }
        }
    }
    out.sort_by(|a, b| a.received_at.cmp(&b.received_at).then(a.id.cmp(&b.id)));
    Ok(out)
}

/// Reads one entry's envelope and raw message from `area`.
pub fn read(root: &Path, area: Area, id: &str) -> Result<(Meta, Vec<u8>), SpoolError> {
    let dir = root.join(area.dir());
    let json = dir.join(format!("{id}.json"));
    if !valid_id(id) || !json.exists() {
        return Err(SpoolError::NotFound(id.to_string()));
    }
    let meta = read_meta(&json)?;
    let raw = fs::read(dir.join(format!("{id}.eml")))?;
    Ok((meta, raw))
}

/// Spool ids are ULIDs; anything else (a path, `..`) is not an id.
fn valid_id(id: &str) -> bool {
    !id.is_empty() && id.len() <= 64 && id.bytes().all(|b| b.is_ascii_alphanumeric())
}

impl Spool {
    /// Makes a queued message due now (and clears a held state).
    pub fn retry_now(&self, id: &str) -> Result<(), SpoolError> {
        self.claim(id)?;
        let mut meta = match self.load_meta(id) {
            Ok(m) => m,
            Err(e) => {
                self.release(id, SystemTime::now());
                return Err(e);
            }
        };
        meta.next_attempt_at = SystemTime::now();
        meta.held = false;
        self.reschedule(&meta)
    }

    /// Removes a queued message for good.
    pub fn delete(&self, id: &str) -> Result<(), SpoolError> {
        self.claim(id)?;
        self.complete(id)
    }

    /// Moves a dead letter back into the queue, due now, with a fresh
    /// attempt count and `max_age` measured from now. Crash-safe: the
    /// message is linked into `queue/` and committed there before the
    /// dead letter is removed.
    pub fn requeue(&self, id: &str) -> Result<(), SpoolError> {
        if !valid_id(id) {
            return Err(SpoolError::NotFound(id.to_string()));
        }
        if self.is_scheduled(id) {
            // Still queued, or being dead-lettered right now.
            return Err(SpoolError::AlreadyQueued(id.to_string()));
        }
        let failed_json = self.failed.join(format!("{id}.json"));
        if !failed_json.exists() {
            return Err(SpoolError::NotFound(id.to_string()));
        }
        let mut meta = read_meta(&failed_json)?;
        let now = SystemTime::now();
        meta.failure = None;
        // Refused recipients get another chance; accepted ones are not resent.
        meta.refused.clear();
        meta.refusal = None;
        meta.attempts = 0;
        meta.held = false;
        meta.last_error = None;
        meta.received_at = now;
        meta.next_attempt_at = now;
        // Message first (a second link to it), envelope (the commit marker)
        // last, as on receipt; the dead letter goes only once the queue entry
        // is durable. A crash before the envelope leaves an orphan link that
        // recovery removes, and the dead letter intact.
        let queued_eml = self.queue.join(format!("{id}.eml"));
        let queued_json = self.queue.join(format!("{id}.json"));
        let commit = || -> std::io::Result<()> {
            remove_if_exists(&queued_eml)?;
            fs::hard_link(self.failed.join(format!("{id}.eml")), &queued_eml)?;
            fsio::write_atomic(&queued_json, &to_json(&meta))
        };
        if let Err(e) = commit() {
            let _ = remove_if_exists(&queued_json);
            let _ = remove_if_exists(&queued_eml);
            return Err(e.into());
        }
        remove_if_exists(&failed_json)?;
        remove_if_exists(&self.failed.join(format!("{id}.eml")))?;
        fsio::sync_dir(&self.failed)?;
        self.insert(&meta);
        Ok(())
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
