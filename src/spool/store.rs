//! Entry files on disk for a claimed entry: read, save progress, move to
//! `failed/`, remove. Blocking: call from `spawn_blocking`.
//!
//! Invariant: every path is built from a claim's id or a validated file
//! name (a ULID), never from a record's content; records are written
//! through a fresh temp file in `tmp/` and renamed into place.

use std::path::Path;
use std::time::{Duration, SystemTime};

use tokio::time::Instant;

use super::entry::{self, Decoded};
use super::schedule::wall_from_due;
use super::{Claim, Meta, Spool, SpoolError, fsio};

/// How long an entry whose move to `failed/` failed waits before it is due again.
const FAILED_MOVE_PAUSE: Duration = Duration::from_secs(60);

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
    match entry::decode(id, &bytes) {
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
        let meta = read_record(&self.queue, claim.id())?;
        let raw = fsio::read(&self.queue.join(format!("{}.eml", claim.id())))?;
        Ok((meta, raw))
    }

    /// Blocking. Persists progress (per-recipient state) and keeps the
    /// claim. An `Err` means the attempt must stop.
    pub fn save_progress(&self, claim: &Claim, meta: &Meta) -> Result<(), SpoolError> {
        self.write_record(&self.queue, claim.id(), meta)
    }

    /// Blocking. Writes `meta` with `next_attempt_at` = the wall time of
    /// `due`, and gives the entry back due at `due` (also when the write
    /// fails: the entry keeps its previous record).
    pub fn reschedule(&self, claim: Claim, meta: &Meta, due: Instant) -> Result<(), SpoolError> {
        let mut meta = meta.clone();
        meta.next_attempt_at = wall_from_due(due, Instant::now(), SystemTime::now());
        let written = self.write_record(&self.queue, claim.id(), &meta);
        self.release(claim, due);
        written
    }

    /// Blocking. Delivered: the entry leaves the schedule and the spool
    /// (record first: a crash in between leaves an orphan `.eml` that
    /// recovery removes). On `Err` the entry stays on disk, unscheduled
    /// until the next start.
    pub fn complete(&self, claim: Claim) -> Result<(), SpoolError> {
        let id = claim.id().to_string();
        self.forget(claim);
        fsio::remove_if_exists(&self.queue.join(format!("{id}.json")))?;
        fsio::remove_if_exists(&self.queue.join(format!("{id}.eml")))?;
        fsio::sync_dir(&self.queue)?;
        Ok(())
    }

    /// Blocking. Moves the entry to `failed/` with `meta.failure` recorded.
    /// On `Err` the entry stays queued, due again after a pause.
    pub fn dead_letter(&self, claim: Claim, meta: &Meta) -> Result<(), SpoolError> {
        let id = claim.id().to_string();
        let moved = (|| -> Result<(), SpoolError> {
            self.write_record(&self.failed, &id, meta)?;
            let eml = self.queue.join(format!("{id}.eml"));
            if fsio::is_file(&eml) {
                std::fs::rename(&eml, self.failed.join(format!("{id}.eml")))?;
            }
            fsio::sync_dir(&self.failed)?;
            fsio::remove_if_exists(&self.queue.join(format!("{id}.json")))?;
            fsio::sync_dir(&self.queue)?;
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
    use super::*;

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
