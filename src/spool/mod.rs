//! The durable queue. Owns the spool directory:
//!
//! ```text
//! postrelay.lock  flock'd by the one process that owns the spool
//! control.sock    the owner's queue-admin socket (see crate::control)
//! tmp/            messages being received, record temp files (emptied at start-up)
//! log/            <seq>.log + <seq>.done: accepted messages held in memory
//!                 when received, appended to a shared segment (see [`log`])
//! queue/          <id>.eml + <id>.json: accepted, waiting for delivery
//! failed/         dead letters, with the reason in <id>.json
//! dry-run/        what the dry-run backend would have sent
//! inflight/       markers of API calls under way (see [`InFlight`])
//! ```
//!
//! Invariants: [`Incoming::commit`] returns only after the message and its
//! record are durable: appended to a log segment and covered by a sync of
//! it that started after the write, or (a message too large to hold)
//! fsynced and renamed into `queue/` and covered by a directory fsync that
//! started after the renames. Either sync is shared by all the messages
//! committed meanwhile (group commit); only then may SMTP answer `250`. A
//! crash leaves a complete entry or none (a frame's checksum; the record
//! renamed last). An entry lives in the log until its record first changes,
//! then as files in `queue/`; the files win when both exist. Every component is created 0700/0600,
//! checked at open (not a symlink, ours, not group/other-writable), and
//! never opened through a symlink; an entry's id is its validated file name.
//!
//! By role: [`commit`] receives (with [`group`] sharing syncs and [`log`]
//! holding the segments),
//! [`recovery`] rebuilds the schedule at open, [`schedule`] decides who is
//! due (with [`Claim`]), [`store`] reads and moves entry files, [`admin`]
//! holds the operator actions.

mod admin;
mod commit;
mod entry;
mod finish;
pub mod fsio;
mod group;
mod inflight;
mod log;
mod recovery;
mod schedule;
mod store;
mod trust;

pub use admin::{Area, list, read};
pub use commit::Incoming;
pub use entry::{Credential, Failure, META_VERSION, Meta, RecipientState};
pub use inflight::InFlight;
pub use schedule::Claim;
pub use store::valid_id;

use std::fs;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::SystemTime;

use tokio::sync::Notify;

use schedule::Schedule;
use trust::Kind;

#[derive(Debug, thiserror::Error)]
pub enum SpoolError {
    /// Not enough free disk space: the client should try again later.
    #[error("spool is full: {0}")]
    Full(String),
    #[error("spool I/O error: {0}")]
    Io(#[from] io::Error),
    #[error("spool entry {id} is unreadable: {reason}")]
    Corrupt { id: String, reason: String },
    /// Written by a newer postrelay: left untouched.
    #[error("spool entry {id} was written by a newer postrelay (record version {version})")]
    Newer { id: String, version: u32 },
    #[error("no spool entry {0}")]
    NotFound(String),
    #[error("message {0} is being delivered right now; try again in a moment")]
    InFlight(String),
    #[error("message {0} is in the queue, not a dead letter")]
    AlreadyQueued(String),
    /// Another process (a running daemon) holds the spool.
    #[error("the spool is in use by a running postrelay")]
    Locked,
    /// A spool component someone else could tamper with.
    #[error("refusing to use the spool: {path} is not safe: {fix}")]
    Untrusted { path: PathBuf, fix: String },
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

/// The spool a process owns; always used as `Arc<Spool>`.
#[derive(Debug)]
pub struct Spool {
    root: PathBuf,
    tmp: PathBuf,
    queue: PathBuf,
    failed: PathBuf,
    dry_run: PathBuf,
    /// In-flight markers of API calls under way (see [`InFlight`]).
    inflight: PathBuf,
    /// Segments of messages appended together (see [`log`]).
    log: log::Log,
    min_free: u64,
    schedule: Mutex<Schedule>,
    wake: Notify,
    /// Group commit of `queue/`'s directory entries.
    queue_sync: group::GroupSync,
    /// Group commit of `failed/`'s directory entries.
    failed_sync: group::GroupSync,
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
    /// Records of a newer version: left untouched and not scheduled.
    pub parked: usize,
    /// Queued entries an API call carried when the daemon stopped: sent
    /// again, so they may arrive twice.
    pub may_duplicate: usize,
}

impl Spool {
    /// Opens (creating if needed) the spool at `root` and recovers the queue.
    /// Blocking: call before the runtime serves traffic. Fails with
    /// [`SpoolError::Locked`] when another process owns the spool, and with
    /// [`SpoolError::Untrusted`] when a component is not safe to use.
    pub fn open(root: &Path, min_free: u64) -> Result<(Spool, Recovery), SpoolError> {
        if let Some(parent) = root.parent().filter(|p| !p.as_os_str().is_empty()) {
            fs::create_dir_all(parent)?;
        }
        let root = &trust::resolve_root(root)?;
        fsio::create_dir(root)?;
        trust::check(root, Kind::Dir)?;
        let lock_path = root.join("postrelay.lock");
        let lock = match fsio::create_new(&lock_path) {
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {
                trust::check(&lock_path, Kind::File)?;
                fsio::open_write(&lock_path)?
            }
            other => other?,
        };
        trust::check_open(&lock_path, &lock)?;
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
            dry_run: root.join("dry-run"),
            inflight: root.join("inflight"),
            log: log::Log::new(root.join("log")),
            min_free,
            schedule: Mutex::new(Schedule::default()),
            wake: Notify::new(),
            queue_sync: group::GroupSync::new(Box::new(fsio::sync_dir)),
            failed_sync: group::GroupSync::new(Box::new(fsio::sync_dir)),
            _lock: lock,
        };
        for dir in [
            &spool.tmp,
            &spool.queue,
            &spool.failed,
            &spool.dry_run,
            &spool.inflight,
            &spool.root.join("log"),
        ] {
            fsio::create_dir(dir)?;
            trust::check(dir, Kind::Dir)?;
        }
        let recovery = spool.recover()?;
        Ok((spool, recovery))
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    /// `dry-run/`: created 0700 and checked at open, for the dry-run backend's output.
    pub fn dry_run_dir(&self) -> &Path {
        &self.dry_run
    }

    /// Number of queued messages (in flight included) and the receive time of the oldest.
    pub fn depth(&self) -> (usize, Option<SystemTime>) {
        self.sched().depth()
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
        let probe = fsio::temp_name(&self.tmp, ".ready-probe");
        let write = || -> io::Result<()> {
            let f = fsio::create_new(&probe)?;
            io::Write::write_all(&mut &f, b"ok")?;
            f.sync_all()
        };
        let written = write();
        let _ = fs::remove_file(&probe);
        written.map_err(|e| format!("spool not writable: {e}"))?;
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

    fn sched(&self) -> std::sync::MutexGuard<'_, Schedule> {
        // The schedule is consistent between statements: a panic elsewhere
        // while it was held does not make it unusable.
        self.schedule.lock().unwrap_or_else(|e| e.into_inner())
    }
}

#[cfg(test)]
mod commit_tests;
#[cfg(test)]
mod tests;
