//! The message log: accepted messages small enough to be held in memory
//! are appended to a shared segment file (`log/<seq>.log`, see [`frame`])
//! instead of getting two files each. One thread, the [`writer`], appends
//! every frame waiting for it with one write and one `fdatasync` (group
//! commit); no file is created, renamed or unlinked per message.
//!
//! An entry leaves the log by a tombstone, its id appended to the
//! segment's `log/<seq>.done` under an `fdatasync` shared by concurrent
//! tombstones ([`GroupSync`]): when delivered, dead-lettered, or
//! *materialised* into `queue/<id>.eml` + `<id>.json` the first time its
//! record changes (a retry, a hold). A segment whose every frame is
//! tombstoned and that takes no more appends is removed.
//!
//! Invariants: an append is answered `Ok` only once its frame is on disk
//! (the segment's sync, started after the write, succeeded); the frames of
//! a failed write are cut off the segment, which takes no more appends,
//! before the error is answered. A segment with a frame neither tombstoned
//! nor failed is never removed. Every path is `log/` plus a name built
//! here from a sequence number.

mod frame;
mod recover;
mod writer;

use std::collections::{BTreeMap, HashMap};
use std::fs::File;
use std::io;
use std::ops::Deref;
use std::os::unix::fs::FileExt;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, AtomicUsize};
use std::sync::{Arc, Mutex, MutexGuard};

use super::fsio;
use super::group::GroupSync;

pub use recover::{list, read};

/// A segment takes no more appends once it is this long.
const SEGMENT_MAX: u64 = 32 << 20;

/// How far past its frames the writer zero-fills the current segment. An
/// append into bytes already written and synced changes no file metadata,
/// so its `fdatasync` flushes the data alone; on ext4 that halves the
/// sync's latency and CPU. Recovery reads zeros after the last frame as
/// the end of the segment.
const ZERO_AHEAD: u64 = 1 << 20;

/// An id as the index holds it: log ids are always 26-byte ULIDs.
type Key = [u8; 26];

fn key(id: &str) -> Option<Key> {
    id.as_bytes().try_into().ok()
}

/// Where a frame is.
#[derive(Debug, Clone, Copy)]
struct Loc {
    seq: u64,
    offset: u64,
    len: usize,
}

/// A segment file with its tombstone file.
struct Segment {
    file: Arc<File>,
    done: Arc<File>,
    /// Covers tombstones appended to `done`.
    done_sync: Arc<GroupSync>,
    /// Bytes reserved so far (the next frame's offset).
    len: u64,
    /// Bytes from the start already written (frames or zeros) by a write
    /// that succeeded; appends below this mark change no metadata.
    zeroed: u64,
    /// Bytes reserved in `done` so far.
    done_len: u64,
    /// Frames appended or being appended and not yet tombstoned.
    live: usize,
    /// Takes no more appends.
    sealed: bool,
    /// Recovery found damage in it: kept as `.broken` instead of removed.
    damaged: bool,
}

#[derive(Default)]
struct Table {
    index: HashMap<Key, Loc>,
    segments: BTreeMap<u64, Segment>,
    /// The segment taking appends.
    current: Option<u64>,
    next_seq: u64,
}

/// Makes a segment's appends durable: `fdatasync`, or a test's stand-in.
pub(in crate::spool) type DataSync = Arc<dyn Fn(&File) -> io::Result<()> + Send + Sync>;

/// The log of one spool; see the module docs.
pub struct Log {
    shared: Arc<Shared>,
    /// Hands frames to the writer thread (started by the first append).
    writer: Mutex<Option<std::sync::mpsc::Sender<writer::Job>>>,
}

/// What the writer thread shares with the rest of the spool.
pub struct Shared {
    dir: PathBuf,
    table: Mutex<Table>,
    data_sync: DataSync,
    /// Frames handed to the writer and not yet taken by it.
    waiting: AtomicUsize,
    /// Segment syncs done.
    syncs: AtomicU64,
}

impl Deref for Log {
    type Target = Shared;
    fn deref(&self) -> &Shared {
        &self.shared
    }
}

impl std::fmt::Debug for Log {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Log")
            .field("dir", &self.dir)
            .finish_non_exhaustive()
    }
}

fn group_sync(file: &Arc<File>) -> Arc<GroupSync> {
    let file = file.clone();
    Arc::new(GroupSync::new(Box::new(move |_| file.sync_data())))
}

impl Log {
    pub fn new(dir: PathBuf) -> Log {
        Log::with_sync(dir, Arc::new(File::sync_data))
    }

    /// A log whose segment syncs are `data_sync` (tombstone files still `fdatasync`).
    pub(in crate::spool) fn with_sync(dir: PathBuf, data_sync: DataSync) -> Log {
        let shared = Shared {
            dir,
            table: Mutex::new(Table {
                next_seq: 1,
                ..Table::default()
            }),
            data_sync,
            waiting: AtomicUsize::new(0),
            syncs: AtomicU64::new(0),
        };
        Log {
            shared: Arc::new(shared),
            writer: Mutex::new(None),
        }
    }

    /// Segment syncs so far, and appends waiting for the writer.
    #[cfg(test)]
    pub(in crate::spool) fn syncs(&self) -> (u64, usize) {
        use std::sync::atomic::Ordering::Relaxed;
        (self.syncs.load(Relaxed), self.waiting.load(Relaxed))
    }
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, Table> {
        // Consistent between statements: a panic elsewhere does not poison it.
        self.table.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn path(&self, seq: u64, ext: &str) -> PathBuf {
        self.dir.join(format!("{seq:016x}.{ext}"))
    }

    /// Whether `id` is a message in the log (not tombstoned).
    pub fn contains(&self, id: &str) -> bool {
        key(id).is_some_and(|k| self.lock().index.contains_key(&k))
    }

    /// A new, empty segment whose names are durable in `log/`.
    fn create(&self, seq: u64) -> io::Result<Segment> {
        let file = Arc::new(fsio::create_new(&self.path(seq, "log"))?);
        let done = match fsio::create_new(&self.path(seq, "done")) {
            Ok(f) => Arc::new(f),
            Err(e) => {
                let _ = std::fs::remove_file(self.path(seq, "log"));
                return Err(e);
            }
        };
        fsio::sync_dir(&self.dir)?;
        Ok(Segment::new(file, done, 0, 0))
    }

    /// Blocking. The record and message of `id`, read back and checked;
    /// `None` when `id` is not in the log.
    pub fn read(&self, id: &str) -> io::Result<Option<(Vec<u8>, Vec<u8>)>> {
        let Some(k) = key(id) else { return Ok(None) };
        let (loc, file) = {
            let t = self.lock();
            let Some(loc) = t.index.get(&k).copied() else {
                return Ok(None);
            };
            (loc, t.segments[&loc.seq].file.clone())
        };
        let mut bytes = vec![0; loc.len];
        file.read_exact_at(&mut bytes, loc.offset)?;
        match frame::scan(&bytes).into_iter().next() {
            Some(frame::Found::Frame(f)) if f.id == id && f.len() == loc.len => {
                let message = bytes.split_off(f.message.start);
                bytes.truncate(f.record.end);
                Ok(Some((bytes.split_off(f.record.start), message)))
            }
            _ => Err(io::Error::new(
                io::ErrorKind::InvalidData,
                format!("the log frame of {id} no longer matches its checksum"),
            )),
        }
    }

    /// Blocking. Takes `id` out of the log for good: returns once its
    /// tombstone is durable. `Ok(false)` when `id` was not in the log. On
    /// `Err` the message is out of the index but still on disk: the next
    /// start finds it again.
    pub fn tombstone(&self, id: &str) -> io::Result<bool> {
        self.tombstone_all(&[id]).pop().expect("one answer per id")
    }

    /// Blocking. [`tombstone`](Self::tombstone) for many ids at once, one
    /// answer per id in order: each segment's tombstones go in one write
    /// under one shared sync.
    pub fn tombstone_all(&self, ids: &[&str]) -> Vec<io::Result<bool>> {
        // Per segment: where its tombstones go, their bytes, which ids.
        let mut writes: BTreeMap<u64, (u64, Vec<u8>, Vec<usize>)> = BTreeMap::new();
        let mut answers: Vec<io::Result<bool>> = Vec::with_capacity(ids.len());
        let mut files = Vec::new();
        {
            let mut t = self.lock();
            for (i, id) in ids.iter().enumerate() {
                answers.push(Ok(false));
                let Some(loc) = key(id).and_then(|k| t.index.remove(&k)) else {
                    continue;
                };
                let (_, lines, members) = writes.entry(loc.seq).or_default();
                lines.extend_from_slice(id.as_bytes());
                lines.push(b'\n');
                members.push(i);
            }
            for (seq, (at, lines, _)) in writes.iter_mut() {
                let s = t
                    .segments
                    .get_mut(seq)
                    .expect("segment of an indexed frame");
                *at = s.done_len;
                s.done_len += lines.len() as u64;
                files.push((s.done.clone(), s.done_sync.clone()));
            }
        }
        for ((seq, (at, lines, members)), (done, sync)) in writes.iter().zip(files) {
            let written = done
                .write_all_at(lines, *at)
                .and_then(|()| sync.covered(&self.dir));
            let mut t = self.lock();
            if let Some(s) = t.segments.get_mut(seq) {
                s.live -= members.len();
            }
            self.remove_if_finished(&mut t, *seq);
            drop(t);
            for &i in members {
                answers[i] = match &written {
                    Ok(()) => Ok(true),
                    Err(e) => Err(fsio::copy_error(e)),
                };
            }
        }
        answers
    }

    /// Removes a sealed segment no frame lives in any more (a damaged one
    /// is kept as `.broken` for the operator).
    fn remove_if_finished(&self, t: &mut Table, seq: u64) {
        let finished = t
            .segments
            .get(&seq)
            .is_some_and(|s| s.sealed && s.live == 0);
        if !finished {
            return;
        }
        let s = t.segments.remove(&seq).expect("segment");
        let log = self.path(seq, "log");
        let removed = if s.damaged {
            std::fs::rename(&log, self.path(seq, "log.broken"))
        } else {
            std::fs::remove_file(&log)
        };
        // The tombstones go only once their segment has: a crash in
        // between leaves a tombstone file recovery removes.
        match removed.and_then(|()| std::fs::remove_file(self.path(seq, "done"))) {
            Ok(()) => {}
            Err(e) => {
                tracing::warn!(segment = %log.display(), error = %e, "cannot remove a finished log segment; the next start removes it")
            }
        }
    }
}

impl Segment {
    fn new(file: Arc<File>, done: Arc<File>, len: u64, done_len: u64) -> Segment {
        Segment {
            done_len,
            done_sync: group_sync(&done),
            file,
            done,
            len,
            zeroed: len,
            live: 0,
            sealed: false,
            damaged: false,
        }
    }
}

/// `<seq>.<ext>` names in `log/`.
fn seq_of(name: &str, ext: &str) -> Option<u64> {
    let stem = name.strip_suffix(ext)?.strip_suffix('.')?;
    (stem.len() == 16
        && stem
            .bytes()
            .all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase()))
    .then(|| u64::from_str_radix(stem, 16).ok())
    .flatten()
}

#[cfg(test)]
#[path = "tests.rs"]
mod tests;
