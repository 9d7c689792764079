//! The durable queue. Owns the spool directory:
//!
//! ```text
//! tmp/      messages being received (cleaned at start-up)
//! queue/    <id>.eml + <id>.json: accepted, waiting for delivery
//! failed/   dead letters, with the reason in <id>.json
//! dry-run/  what the dry-run backend would have sent
//! ```
//!
//! Invariant: [`Incoming::commit`] returns only after the message and its
//! envelope are fsynced and renamed into `queue/` and the directory is
//! fsynced; only then may SMTP answer `250`. The JSON is renamed last, so a
//! crash at any moment leaves either a complete entry or none. The schedule
//! (who is due when) is kept in memory and rebuilt from `queue/` at start-up.

mod admin;
pub use admin::{Area, list, read};
mod entry;
pub mod fsio;

use std::collections::HashMap;
use std::fs;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::SystemTime;

use tokio::io::AsyncWriteExt;
use tokio::sync::Notify;

pub use entry::{Failure, Meta};

use crate::message::Envelope;

#[derive(Debug, thiserror::Error)]
pub enum SpoolError {
    /// Not enough free disk space: the client should try again later.
    #[error("spool is full: {0}")]
    Full(String),
    #[error("spool I/O error: {0}")]
    Io(#[from] io::Error),
    #[error("spool entry {id} is unreadable: {reason}")]
    Corrupt { id: String, reason: String },
    #[error("no spool entry {0}")]
    NotFound(String),
    #[error("message {0} is being delivered right now; try again in a moment")]
    InFlight(String),
    #[error("message {0} is in the queue, not a dead letter")]
    AlreadyQueued(String),
    /// Another process (a running daemon) holds the spool.
    #[error("the spool is in use by a running postrelay")]
    Locked,
}

impl SpoolError {
    fn from_io(err: io::Error) -> SpoolError {
        if fsio::is_disk_full(&err) {
            SpoolError::Full(err.to_string())
        } else {
            SpoolError::Io(err)
        }
    }
}

#[derive(Debug, Clone, Copy)]
struct Slot {
    next: SystemTime,
    received: SystemTime,
    in_flight: bool,
}

#[derive(Debug)]
pub struct Spool {
    root: PathBuf,
    tmp: PathBuf,
    queue: PathBuf,
    failed: PathBuf,
    min_free: u64,
    slots: Mutex<HashMap<String, Slot>>,
    wake: Notify,
    /// Exclusive `flock` on `postrelay.lock`, held for the life of the process:
    /// one process owns a spool at a time.
    _lock: fs::File,
}

/// What start-up recovery found.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Recovery {
    pub queued: usize,
    pub held_released: usize,
    pub temp_removed: usize,
    pub orphans_removed: usize,
    pub broken: usize,
    pub dead_letters_completed: usize,
    pub stale_dead_letters_removed: usize,
}

impl Spool {
    /// Opens (creating if needed) the spool at `root` and recovers the queue.
    /// Blocking: call before the runtime serves traffic.
    /// Fails with [`SpoolError::Locked`] when another process owns the spool.
    pub fn open(root: &Path, min_free: u64) -> Result<(Spool, Recovery), SpoolError> {
        fs::create_dir_all(root)?;
        let lock = fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(root.join("postrelay.lock"))?;
        rustix::fs::flock(&lock, rustix::fs::FlockOperation::NonBlockingLockExclusive).map_err(
            |e| {
                if e == rustix::io::Errno::WOULDBLOCK {
                    SpoolError::Locked
                } else {
                    SpoolError::Io(e.into())
                }
            },
        )?;
        let spool = Spool {
            root: root.to_path_buf(),
            tmp: root.join("tmp"),
            queue: root.join("queue"),
            failed: root.join("failed"),
            min_free,
            slots: Mutex::new(HashMap::new()),
            wake: Notify::new(),
            _lock: lock,
        };
        for dir in [&spool.root, &spool.tmp, &spool.queue, &spool.failed] {
            fs::create_dir_all(dir)?;
        }
        let recovery = spool.recover()?;
        Ok((spool, recovery))
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    fn recover(&self) -> Result<Recovery, SpoolError> {
        let mut r = Recovery::default();
        for entry in fs::read_dir(&self.tmp)? {
            fs::remove_file(entry?.path())?;
            r.temp_removed += 1;
        }
        let now = SystemTime::now();
        let mut slots = self.slots.lock().expect("spool lock");
        let paths: Vec<PathBuf> = fs::read_dir(&self.queue)?
            .map(|e| e.map(|e| e.path()))
            .collect::<Result<_, _>>()?;
        // An .eml without its .json was never acknowledged. Checked first,
        // before the envelope pass below renames anything.
        for path in &paths {
            if id_of(path, "eml").is_some_and(|id| !self.queue.join(format!("{id}.json")).exists())
            {
                fs::remove_file(path)?;
                r.orphans_removed += 1;
            }
        }
        for path in &paths {
            let Some(id) = id_of(path, "json") else {
                continue;
            };
            match read_meta(path) {
                Ok(mut meta) if self.queue.join(format!("{id}.eml")).exists() => {
                    if meta.held {
                        // The operator restarted us, probably to fix the credential.
                        meta.held = false;
                        meta.next_attempt_at = now;
                        fsio::write_atomic(path, &to_json(&meta))?;
                        r.held_released += 1;
                    }
                    // A complete queue entry wins over a dead letter left by a
                    // crash inside dead_letter or requeue.
                    let stale = self.failed.join(format!("{id}.json"));
                    if stale.exists() {
                        fs::remove_file(&stale)?;
                        remove_if_exists(&self.failed.join(format!("{id}.eml")))?;
                        r.stale_dead_letters_removed += 1;
                    }
                    slots.insert(
                        id,
                        Slot {
                            next: meta.next_attempt_at,
                            received: meta.received_at,
                            in_flight: false,
                        },
                    );
                    r.queued += 1;
                }
                Ok(_) if self.failed.join(format!("{id}.json")).exists() => {
                    // A crash while dead-lettering: the entry already is in failed/.
                    fs::remove_file(path)?;
                    r.dead_letters_completed += 1;
                }
                _ => {
                    // Keep both files for the operator; the .eml must not look orphaned.
                    tracing::error!(id = %id, "spool entry unreadable or incomplete; moved aside as .broken");
                    fs::rename(path, path.with_extension("json.broken"))?;
                    let eml = self.queue.join(format!("{id}.eml"));
                    if eml.exists() {
                        fs::rename(&eml, eml.with_extension("eml.broken"))?;
                    }
                    r.broken += 1;
                }
            }
        }
        drop(slots);
        fsio::sync_dir(&self.queue)?;
        Ok(r)
    }

    /// Starts receiving a message into `tmp/`. Fails with `Full` when the disk is low.
    pub async fn receive(&self) -> Result<Incoming, SpoolError> {
        let free = fsio::free_space(&self.root)?;
        if free < self.min_free {
            return Err(SpoolError::Full(format!(
                "{free} bytes free, below spool.min_free_space {}",
                self.min_free
            )));
        }
        let id = ulid::Ulid::generate().to_string();
        let path = self.tmp.join(format!("{id}.eml"));
        let file = tokio::fs::File::create(&path)
            .await
            .map_err(SpoolError::from_io)?;
        Ok(Incoming {
            id,
            path: Some(path),
            file: tokio::io::BufWriter::with_capacity(64 * 1024, file),
            size: 0,
        })
    }

    /// Entries due at `now` and not in flight, oldest due first, marked in flight.
    pub fn claim_due(&self, now: SystemTime, max: usize) -> Vec<String> {
        let mut slots = self.slots.lock().expect("spool lock");
        let mut due: Vec<(SystemTime, &String)> = slots
            .iter()
            .filter(|(_, s)| !s.in_flight && s.next <= now)
            .map(|(id, s)| (s.next, id))
            .collect();
        due.sort();
        let ids: Vec<String> = due
            .into_iter()
            .take(max)
            .map(|(_, id)| id.clone())
            .collect();
        for id in &ids {
            if let Some(s) = slots.get_mut(id) {
                s.in_flight = true;
            }
        }
        ids
    }

    /// When the next entry not in flight becomes due.
    pub fn next_due(&self) -> Option<SystemTime> {
        let slots = self.slots.lock().expect("spool lock");
        slots
            .values()
            .filter(|s| !s.in_flight)
            .map(|s| s.next)
            .min()
    }

    /// Resolves when a new message is queued or an entry is released.
    pub async fn changed(&self) {
        self.wake.notified().await
    }

    /// Number of queued messages and the receive time of the oldest.
    pub fn depth(&self) -> (usize, Option<SystemTime>) {
        let slots = self.slots.lock().expect("spool lock");
        (slots.len(), slots.values().map(|s| s.received).min())
    }

    /// Messages in `failed/`.
    pub fn failed_count(&self) -> usize {
        fs::read_dir(&self.failed)
            .map(|rd| {
                rd.filter_map(Result::ok)
                    .filter(|e| e.path().extension().is_some_and(|x| x == "json"))
                    .count()
            })
            .unwrap_or(0)
    }

    /// Readiness: a probe file can be written and fsynced, and the disk has room.
    pub fn check_writable(&self) -> Result<(), String> {
        // A name of its own, so concurrent probes do not trip over each other.
        let probe = self
            .tmp
            .join(format!(".ready-probe-{}", ulid::Ulid::generate()));
        fsio::write_atomic(&probe, b"ok").map_err(|e| format!("spool not writable: {e}"))?;
        let _ = fs::remove_file(&probe);
        let free =
            fsio::free_space(&self.root).map_err(|e| format!("cannot read free space: {e}"))?;
        if free < self.min_free {
            return Err(format!(
                "{free} bytes free, below spool.min_free_space {}",
                self.min_free
            ));
        }
        Ok(())
    }

    pub fn load(&self, id: &str) -> Result<(Meta, Vec<u8>), SpoolError> {
        let meta = self.load_meta(id)?;
        let raw = fs::read(self.queue.join(format!("{id}.eml")))?;
        Ok((meta, raw))
    }

    pub fn load_meta(&self, id: &str) -> Result<Meta, SpoolError> {
        let path = self.queue.join(format!("{id}.json"));
        if !path.exists() {
            return Err(SpoolError::NotFound(id.to_string()));
        }
        read_meta(&path)
    }

    /// Persists progress (e.g. recipients delivered so far) without rescheduling.
    pub fn save(&self, meta: &Meta) -> Result<(), SpoolError> {
        fsio::write_atomic(
            &self.queue.join(format!("{}.json", meta.id)),
            &to_json(meta),
        )?;
        Ok(())
    }

    /// Persists the new state and makes the entry schedulable again at `meta.next_attempt_at`.
    pub fn reschedule(&self, meta: &Meta) -> Result<(), SpoolError> {
        let saved = self.save(meta);
        let mut slots = self.slots.lock().expect("spool lock");
        if let Some(s) = slots.get_mut(&meta.id) {
            s.in_flight = false;
            s.next = meta.next_attempt_at;
        }
        drop(slots);
        self.wake.notify_one();
        saved
    }

    /// Gives an unreadable entry back to the scheduler, due at `next`; an
    /// entry whose files are gone leaves the schedule.
    pub fn release(&self, id: &str, next: SystemTime) {
        let gone = !self.queue.join(format!("{id}.json")).exists();
        let mut slots = self.slots.lock().expect("spool lock");
        if gone {
            slots.remove(id);
        } else if let Some(s) = slots.get_mut(id) {
            s.in_flight = false;
            s.next = next;
        }
    }

    /// Marks a queued entry in flight for an operator action, under the
    /// same lock the scheduler claims with, so a worker cannot take it
    /// meanwhile. Undo with [`reschedule`](Spool::reschedule),
    /// [`release`](Spool::release) or [`complete`](Spool::complete).
    fn claim(&self, id: &str) -> Result<(), SpoolError> {
        let mut slots = self.slots.lock().expect("spool lock");
        match slots.get_mut(id) {
            None => Err(SpoolError::NotFound(id.to_string())),
            Some(s) if s.in_flight => Err(SpoolError::InFlight(id.to_string())),
            Some(s) => {
                s.in_flight = true;
                Ok(())
            }
        }
    }

    /// Whether the entry is in the schedule (queued, in flight, or on its way to `failed/`).
    fn is_scheduled(&self, id: &str) -> bool {
        self.slots.lock().expect("spool lock").contains_key(id)
    }

    /// Delivered: the entry leaves the spool (JSON first, so a crash in
    /// between leaves an orphan `.eml` that recovery removes).
    pub fn complete(&self, id: &str) -> Result<(), SpoolError> {
        self.slots.lock().expect("spool lock").remove(id);
        remove_if_exists(&self.queue.join(format!("{id}.json")))?;
        remove_if_exists(&self.queue.join(format!("{id}.eml")))?;
        fsio::sync_dir(&self.queue)?;
        Ok(())
    }

    /// Moves the entry to `failed/` with `meta.failure` recorded beside it.
    pub fn dead_letter(&self, meta: &Meta) -> Result<(), SpoolError> {
        let id = &meta.id;
        fsio::write_atomic(&self.failed.join(format!("{id}.json")), &to_json(meta))?;
        let eml = self.queue.join(format!("{id}.eml"));
        if eml.exists() {
            fs::rename(&eml, self.failed.join(format!("{id}.eml")))?;
        }
        fsio::sync_dir(&self.failed)?;
        remove_if_exists(&self.queue.join(format!("{id}.json")))?;
        fsio::sync_dir(&self.queue)?;
        self.slots.lock().expect("spool lock").remove(id);
        Ok(())
    }

    fn insert(&self, meta: &Meta) {
        self.slots.lock().expect("spool lock").insert(
            meta.id.clone(),
            Slot {
                next: meta.next_attempt_at,
                received: meta.received_at,
                in_flight: false,
            },
        );
        self.wake.notify_one();
    }
}

/// A message being received. Dropped without [`commit`](Incoming::commit),
/// its temp file is removed.
pub struct Incoming {
    id: String,
    path: Option<PathBuf>,
    file: tokio::io::BufWriter<tokio::fs::File>,
    size: u64,
}

impl Incoming {
    pub fn id(&self) -> &str {
        &self.id
    }

    pub fn size(&self) -> u64 {
        self.size
    }

    pub fn path(&self) -> &Path {
        self.path.as_deref().expect("incoming path")
    }

    pub async fn write(&mut self, bytes: &[u8]) -> Result<(), SpoolError> {
        self.file
            .write_all(bytes)
            .await
            .map_err(SpoolError::from_io)?;
        self.size += bytes.len() as u64;
        Ok(())
    }

    /// Flushes and fsyncs the received bytes (before reading them back to check limits).
    pub async fn finish(&mut self) -> Result<(), SpoolError> {
        self.file.flush().await.map_err(SpoolError::from_io)?;
        self.file
            .get_ref()
            .sync_all()
            .await
            .map_err(SpoolError::from_io)
    }

    /// Makes the message durable in `queue/`. Returns its id. Call [`finish`](Incoming::finish) first.
    pub async fn commit(
        mut self,
        spool: &std::sync::Arc<Spool>,
        envelope: Envelope,
    ) -> Result<String, SpoolError> {
        self.finish().await?;
        let tmp_eml = self.path.take().expect("incoming path");
        let meta = Meta::new(self.id.clone(), envelope, self.size, SystemTime::now());
        let spool2 = spool.clone();
        let meta2 = meta.clone();
        let result = tokio::task::spawn_blocking(move || -> Result<(), SpoolError> {
            let id = &meta2.id;
            let tmp_json = spool2.tmp.join(format!("{id}.json"));
            let write = || -> io::Result<()> {
                let mut f = fs::File::create(&tmp_json)?;
                io::Write::write_all(&mut f, &to_json(&meta2))?;
                f.sync_all()?;
                fs::rename(&tmp_eml, spool2.queue.join(format!("{id}.eml")))?;
                fs::rename(&tmp_json, spool2.queue.join(format!("{id}.json")))?;
                fsio::sync_dir(&spool2.queue)
            };
            write().map_err(|e| {
                // The client hears 4xx and will send again: leave nothing
                // behind that could be delivered as well (JSON first).
                let _ = fs::remove_file(spool2.queue.join(format!("{id}.json")));
                let _ = fs::remove_file(&tmp_json);
                let _ = fs::remove_file(&tmp_eml);
                let _ = fs::remove_file(spool2.queue.join(format!("{id}.eml")));
                SpoolError::from_io(e)
            })
        })
        .await
        .map_err(|e| SpoolError::Io(io::Error::other(e)))?;
        result?;
        spool.insert(&meta);
        Ok(meta.id)
    }
}

impl Drop for Incoming {
    fn drop(&mut self) {
        if let Some(path) = self.path.take() {
            let _ = fs::remove_file(path);
        }
    }
}

fn id_of(path: &Path, ext: &str) -> Option<String> {
    (path.extension()? == ext).then(|| path.file_stem()?.to_str().map(str::to_string))?
}

fn read_meta(path: &Path) -> Result<Meta, SpoolError> {
    let bytes = fs::read(path)?;
    serde_json::from_slice(&bytes).map_err(|e| SpoolError::Corrupt {
        id: path
            .file_stem()
            .map(|s| s.to_string_lossy().into_owned())
            .unwrap_or_default(),
        reason: e.to_string(),
    })
}

fn to_json(meta: &Meta) -> Vec<u8> {
    let mut v = serde_json::to_vec_pretty(meta).expect("meta serializes");
    v.push(b'\n');
    v
}

#[cfg(test)]
mod tests;

fn remove_if_exists(path: &Path) -> io::Result<()> {
    match fs::remove_file(path) {
        Err(e) if e.kind() != io::ErrorKind::NotFound => Err(e),
        _ => Ok(()),
    }
}
