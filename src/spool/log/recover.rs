//! Reading segments back: at start-up ([`Log::recover`] rebuilds the index
//! and reports what is queued), and read-only beside a running daemon
//! ([`list`] and [`read`], for `postrelay queue list` and `show`).
//!
//! Invariant: a segment is trusted only after it is opened without
//! following a symlink and checked as ours; every read is bounded; a frame
//! counts only when its checksum matches, its id has no tombstone, and no
//! file entry in `queue/` or `failed/` has the same id (files win: an entry
//! is written there before its tombstone).

use std::collections::HashSet;
use std::fs::File;
use std::io::{self, Read};
use std::path::Path;
use std::sync::Arc;

use super::frame::{self, Found};
use super::{Log, SEGMENT_MAX, Segment, key, seq_of};
use crate::spool::entry::{self, Decoded};
use crate::spool::trust;
use crate::spool::{Meta, fsio, valid_id};

/// Most bytes read from one segment: its cap plus one frame of slack.
const READ_MAX: u64 = SEGMENT_MAX + (frame::MAX_RECORD + frame::MAX_MESSAGE) as u64;

/// What start-up recovery found in the log.
#[derive(Debug, Default)]
pub struct Recovered {
    /// Records of the messages it holds, to schedule.
    pub queued: Vec<Meta>,
    /// Damaged regions and unreadable records (kept for the operator).
    pub broken: usize,
    /// Records a newer postrelay wrote: kept, not delivered.
    pub parked: usize,
}

/// One segment's bytes and tombstones.
struct SegmentBytes {
    bytes: Vec<u8>,
    done: HashSet<String>,
}

fn bounded(file: &File, max: u64) -> io::Result<Vec<u8>> {
    let mut out = Vec::new();
    file.take(max).read_to_end(&mut out)?;
    Ok(out)
}

/// Opens and checks `<seq>.log` and reads it with its tombstones.
fn read_segment(dir: &Path, seq: u64) -> Result<(File, SegmentBytes), String> {
    let path = dir.join(format!("{seq:016x}.log"));
    let file = fsio::open_read(&path).map_err(|e| e.to_string())?;
    trust::check_open(&path, &file).map_err(|e| e.to_string())?;
    let bytes = bounded(&file, READ_MAX).map_err(|e| e.to_string())?;
    let done_max = (bytes.len() / frame::HEADER + 1) as u64 * 27;
    let done = match fsio::open_read(&dir.join(format!("{seq:016x}.done"))) {
        Ok(f) => bounded(&f, done_max).map_err(|e| e.to_string())?,
        Err(e) if e.kind() == io::ErrorKind::NotFound => Vec::new(),
        Err(e) => return Err(e.to_string()),
    };
    let done = done
        .split(|&b| b == b'\n')
        .filter_map(|l| std::str::from_utf8(l).ok())
        .filter(|id| valid_id(id))
        .map(str::to_string)
        .collect();
    Ok((file, SegmentBytes { bytes, done }))
}

/// Sequence numbers of `<seq>.log` files in `dir`, oldest first, and every
/// other name found (`None` when `dir` does not exist).
fn names(dir: &Path) -> io::Result<(Vec<u64>, Vec<String>)> {
    let mut segs = Vec::new();
    let mut other = Vec::new();
    let rd = match std::fs::read_dir(dir) {
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok((segs, other)),
        rd => rd?,
    };
    for e in rd {
        let e = e?;
        let name = e.file_name().to_string_lossy().into_owned();
        match seq_of(&name, "log") {
            Some(seq) if !e.file_type()?.is_dir() => segs.push(seq),
            _ => other.push(name),
        }
    }
    segs.sort_unstable();
    Ok((segs, other))
}

/// Frames of `found` (one segment's scan) that still hold a message, each
/// with its record.
fn live(
    r: &SegmentBytes,
    found: Vec<Found>,
    shadowed: &dyn Fn(&str) -> bool,
) -> Vec<(frame::Frame, Result<Decoded, String>)> {
    found
        .into_iter()
        .filter_map(|f| match f {
            Found::Frame(f) if !r.done.contains(&f.id) && !shadowed(&f.id) => {
                let record = entry::decode(&f.id, &r.bytes[f.record.clone()]);
                Some((f, record))
            }
            _ => None,
        })
        .collect()
}

/// Read-only: the records of every message the log under `dir` holds and
/// `shadowed` does not claim. Unreadable segments are skipped.
pub fn list(dir: &Path, shadowed: &dyn Fn(&str) -> bool) -> io::Result<Vec<Meta>> {
    let mut out = Vec::new();
    for seq in names(dir)?.0 {
        let Ok((_, r)) = read_segment(dir, seq) else {
            continue;
        };
        out.extend(
            live(&r, frame::scan(&r.bytes), shadowed)
                .into_iter()
                .filter_map(|(_, d)| match d {
                    Ok(Decoded::Current(m)) => Some(*m),
                    _ => None,
                }),
        );
    }
    Ok(out)
}

/// Read-only: the record and message of `id`, when the log holds it.
pub fn read(dir: &Path, id: &str) -> io::Result<Option<(Meta, Vec<u8>)>> {
    for seq in names(dir)?.0 {
        let Ok((_, r)) = read_segment(dir, seq) else {
            continue;
        };
        for (f, d) in live(&r, frame::scan(&r.bytes), &|_| false) {
            if f.id == id
                && let Ok(Decoded::Current(m)) = d
            {
                return Ok(Some((*m, r.bytes[f.message].to_vec())));
            }
        }
    }
    Ok(None)
}

impl Log {
    /// Blocking, at open, before anything is appended: rebuilds the index
    /// from the segments on disk, removes finished ones and tombstone files
    /// without a segment, and returns what is queued.
    pub fn recover(&self, shadowed: &dyn Fn(&str) -> bool) -> io::Result<Recovered> {
        let mut out = Recovered::default();
        let (segs, other) = names(&self.dir)?;
        let mut t = self.lock();
        let mut max = segs.last().copied().unwrap_or(0);
        for name in &other {
            if let Some(seq) = seq_of(name, "done") {
                max = max.max(seq);
                if segs.binary_search(&seq).is_err() {
                    std::fs::remove_file(self.dir.join(name))?;
                }
            } else if let Some(seq) = name.strip_suffix(".broken").and_then(|n| seq_of(n, "log")) {
                max = max.max(seq);
            } else {
                tracing::warn!(name = %name, dir = %self.dir.display(), "not a log segment name; left alone");
            }
        }
        t.next_seq = max + 1;
        let mut seen = HashSet::new();
        for seq in segs {
            let path = self.path(seq, "log");
            let (file, r) = match read_segment(&self.dir, seq) {
                Ok(read) => read,
                Err(e) => {
                    tracing::error!(segment = %path.display(), error = %e, "log segment unreadable or not ours; left alone");
                    out.broken += 1;
                    continue;
                }
            };
            let done = self.open_done(seq)?;
            let done_len = done.metadata()?.len();
            let (file, done) = (Arc::new(file), Arc::new(done));
            let mut s = Segment::new(file, done, r.bytes.len() as u64, done_len);
            s.sealed = true;
            let found = frame::scan(&r.bytes);
            for f in &found {
                if let Found::Gap {
                    offset,
                    len,
                    tail: false,
                } = *f
                    && r.bytes[offset as usize..][..len].iter().any(|&b| b != 0)
                {
                    tracing::error!(segment = %path.display(), offset, len, "damaged region in a log segment; the segment is kept as .broken once emptied");
                    s.damaged = true;
                    out.broken += 1;
                }
            }
            for (f, record) in live(&r, found, shadowed) {
                if !seen.insert(f.id.clone()) {
                    continue;
                }
                match record {
                    Ok(Decoded::Current(meta)) => {
                        let loc = super::Loc {
                            seq,
                            offset: f.offset,
                            len: f.len(),
                        };
                        t.index
                            .insert(key(&f.id).expect("a frame id is a ULID"), loc);
                        s.live += 1;
                        out.queued.push(*meta);
                    }
                    Ok(Decoded::Newer(version)) => {
                        tracing::error!(id = %f.id, version, "log entry {} was written by a newer postrelay (record version {version}); it is left untouched and not delivered: run that version to deliver it", f.id);
                        s.live += 1;
                        out.parked += 1;
                    }
                    Err(reason) => {
                        tracing::error!(id = %f.id, reason = %reason, "log entry unreadable; its segment is kept as .broken once emptied");
                        s.damaged = true;
                        out.broken += 1;
                    }
                }
            }
            t.segments.insert(seq, s);
            self.remove_if_finished(&mut t, seq);
        }
        Ok(out)
    }

    /// The tombstone file of a recovered segment, opened for appending
    /// (created when a crash left the segment without one).
    fn open_done(&self, seq: u64) -> io::Result<File> {
        let path = self.path(seq, "done");
        match fsio::open_write(&path) {
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                let f = fsio::create_new(&path)?;
                fsio::sync_dir(&self.dir)?;
                Ok(f)
            }
            Ok(f) => {
                trust::check_open(&path, &f).map_err(io::Error::other)?;
                Ok(f)
            }
            Err(e) => Err(e),
        }
    }
}
