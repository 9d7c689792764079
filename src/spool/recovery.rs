//! Start-up recovery: empties `tmp/`, removes leftover temp files and
//! messages that were never acknowledged, finishes moves a crash
//! interrupted, sets aside unreadable entries, parks records a newer
//! postrelay wrote, names the entries an API call carried when the daemon
//! stopped (they may duplicate), and rebuilds the schedule from `queue/`
//! and the log.
//!
//! Invariant: recovery only unlinks or renames names inside the spool's own
//! (already checked) directories, never follows a symlink, and takes an
//! entry's id from its validated file name. A parked record is never
//! rewritten.

use std::collections::HashSet;
use std::fs;
use std::path::Path;
use std::time::SystemTime;

use tokio::time::Instant;

use super::schedule::due_from_wall;
use super::store::{id_of, read_record};
use super::{Recovery, Spool, SpoolError, fsio};

/// A temp file: ours in `tmp/`, or a record temp (`.<name>.tmp`) an older
/// version or a killed write left beside its target.
fn is_temp(name: &str) -> bool {
    name.starts_with('.') && name.ends_with(".tmp")
}

/// Names in `dir` (files and symlinks only; sub-directories are not ours to touch).
fn names(dir: &Path) -> Result<Vec<String>, SpoolError> {
    let mut out = Vec::new();
    for e in fs::read_dir(dir)? {
        let e = e?;
        if e.file_type()?.is_dir() {
            tracing::warn!(path = %e.path().display(), "unexpected directory in the spool; left alone");
            continue;
        }
        match e.file_name().into_string() {
            Ok(n) => out.push(n),
            Err(n) => {
                tracing::warn!(name = ?n, dir = %dir.display(), "unexpected file name in the spool; left alone")
            }
        }
    }
    Ok(out)
}

impl Spool {
    pub(super) fn recover(&self) -> Result<Recovery, SpoolError> {
        let mut r = Recovery::default();
        for name in names(&self.tmp)? {
            fs::remove_file(self.tmp.join(name))?;
            r.temp_removed += 1;
        }
        for dir in [&self.queue, &self.failed, &self.dry_run] {
            for name in names(dir)?.into_iter().filter(|n| is_temp(n)) {
                fs::remove_file(dir.join(name))?;
                r.temp_removed += 1;
            }
        }
        let names = names(&self.queue)?;
        // An .eml without its .json was never acknowledged. Checked first,
        // before the record pass below renames anything.
        for name in &names {
            if let Some(id) = id_of(name, "eml")
                && !fsio::is_file(&self.queue.join(format!("{id}.json")))
            {
                fs::remove_file(self.queue.join(name))?;
                r.orphans_removed += 1;
            }
        }
        let (wall_now, now) = (SystemTime::now(), Instant::now());
        for name in &names {
            let Some(id) = id_of(name, "json") else {
                if id_of(name, "eml").is_none() && !name.ends_with(".broken") {
                    tracing::warn!(name = %name, dir = %self.queue.display(), "not a spool entry name; left alone");
                }
                continue;
            };
            let has_eml = fsio::is_file(&self.queue.join(format!("{id}.eml")));
            let dead = fsio::is_file(&self.failed.join(format!("{id}.json")));
            match read_record(&self.queue, &id) {
                Ok(mut meta) if has_eml => {
                    if meta.held {
                        // The operator restarted us, probably to fix the credential.
                        meta.held = false;
                        meta.next_attempt_at = wall_now;
                        self.write_record(&self.queue, &id, &meta)?;
                        r.held_released += 1;
                    }
                    // A complete queue entry wins over a dead letter left by a
                    // crash inside dead_letter or requeue.
                    if dead {
                        fs::remove_file(self.failed.join(format!("{id}.json")))?;
                        fsio::remove_if_exists(&self.failed.join(format!("{id}.eml")))?;
                        r.stale_dead_letters_removed += 1;
                    }
                    let due = due_from_wall(meta.next_attempt_at, wall_now, now);
                    self.sched().insert(&id, due, meta.received_at);
                    r.queued += 1;
                }
                Err(SpoolError::Newer { version, .. }) => {
                    tracing::error!(
                        id = %id, version,
                        "spool entry {id} was written by a newer postrelay (record version {version}); it is left untouched and not delivered: run that version to deliver it"
                    );
                    r.parked += 1;
                }
                Ok(_) if dead => {
                    // A crash while dead-lettering: the entry already is in failed/.
                    fs::remove_file(self.queue.join(name))?;
                    r.dead_letters_completed += 1;
                }
                _ => {
                    // Keep both files for the operator; the .eml must not look orphaned.
                    tracing::error!(id = %id, "spool entry unreadable or incomplete; moved aside as .broken");
                    let json = self.queue.join(name);
                    fs::rename(&json, json.with_extension("json.broken"))?;
                    let eml = self.queue.join(format!("{id}.eml"));
                    if has_eml {
                        fs::rename(&eml, eml.with_extension("eml.broken"))?;
                    }
                    r.broken += 1;
                }
            }
        }
        fsio::sync_dir(&self.queue)?;
        // Files win over a frame with the same id: they were written first.
        // (A record, not a message file: an .eml alone was never committed.)
        let records = |n: &String| {
            id_of(n, "json").or_else(|| n.strip_suffix(".broken").and_then(|n| id_of(n, "json")))
        };
        let on_file: HashSet<String> = names
            .iter()
            .chain(self::names(&self.failed)?.iter())
            .filter_map(records)
            .collect();
        let logged = self.log.recover(&|id| on_file.contains(id))?;
        for meta in logged.queued {
            let due = due_from_wall(meta.next_attempt_at, wall_now, now);
            self.sched().insert(&meta.id, due, meta.received_at);
            r.queued += 1;
        }
        r.broken += logged.broken;
        r.parked += logged.parked;
        r.may_duplicate = self.recover_in_flight()?;
        Ok(r)
    }
}

#[cfg(test)]
mod tests {
    use super::is_temp;

    #[test]
    fn temp_names_are_recognised_and_entries_are_not() {
        let cases = [
            (".01ARZ3NDEKTSV4RRFFQ69G5FAV.json.tmp", true),
            (
                ".01ARZ3NDEKTSV4RRFFQ69G5FAV.json.0123456789abcdef.tmp",
                true,
            ),
            ("01ARZ3NDEKTSV4RRFFQ69G5FAV.json", false),
            ("01ARZ3NDEKTSV4RRFFQ69G5FAV.eml", false),
            ("notes.tmp", false),
        ];
        for (name, want) in cases {
            assert_eq!(is_temp(name), want, "{name}");
        }
    }
}
