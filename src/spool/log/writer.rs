//! The log's writer thread: it takes every frame waiting for it, writes
//! them with one `pwritev` at the current segment's end (no copy into one
//! buffer first), keeps the segment zero-filled ahead of them (see
//! [`ZERO_AHEAD`](super::ZERO_AHEAD)), makes them durable
//! with one `fdatasync`, indexes them, then answers each committer. Only
//! this thread appends, so frames never interleave and a failed write can
//! be cut off the segment's end.
//!
//! Invariant: a committer hears `Ok` only after the sync that followed its
//! frame's write succeeded; on any failure every frame of that write is cut
//! off (the segment truncated to where the write began, and sealed).

use std::fs::File;
use std::io::{self, IoSlice};
use std::os::unix::fs::FileExt;
use std::sync::Arc;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::mpsc::{self, Receiver};

use tokio::sync::oneshot;

use super::{Key, Loc, Log, SEGMENT_MAX, Shared, ZERO_AHEAD, frame, key};

/// Most frames, and bytes, one write carries.
const MAX_FRAMES: usize = 512;
// Two slices per frame: within Linux's IOV_MAX (1024) for one `pwritev`.
const _: () = assert!(MAX_FRAMES * 2 <= 1024);
const MAX_BYTES: usize = 8 << 20;

/// One frame to append (its header and record, then the message bytes it
/// took over, never copied), and who waits for it.
pub struct Job {
    key: Key,
    head: Vec<u8>,
    message: Vec<u8>,
    done: oneshot::Sender<io::Result<()>>,
}

impl Job {
    fn len(&self) -> usize {
        self.head.len() + self.message.len()
    }
}

impl Log {
    /// Hands `id`'s frame to the writer; the receiver hears once it is
    /// durable (or why it is not, with nothing readable left behind).
    pub fn submit(
        &self,
        id: &str,
        record: &[u8],
        message: Vec<u8>,
    ) -> io::Result<oneshot::Receiver<io::Result<()>>> {
        let invalid = |what| io::Error::new(io::ErrorKind::InvalidInput, what);
        let key = key(id)
            .filter(|_| crate::spool::valid_id(id))
            .ok_or_else(|| invalid("not a spool id"))?;
        if record.len() > frame::MAX_RECORD || message.len() > frame::MAX_MESSAGE {
            return Err(invalid("too large for the log"));
        }
        let head = frame::head(id, record, &message);
        let (done, heard) = oneshot::channel();
        let mut writer = self.writer.lock().unwrap_or_else(|e| e.into_inner());
        if writer.is_none() {
            let (tx, rx) = mpsc::channel();
            let shared = self.shared.clone();
            std::thread::Builder::new()
                .name("postrelay-log".into())
                .spawn(move || run(&shared, &rx))?;
            *writer = Some(tx);
        }
        self.waiting.fetch_add(1, Relaxed);
        let job = Job {
            key,
            head,
            message,
            done,
        };
        if writer.as_ref().expect("writer").send(job).is_err() {
            self.waiting.fetch_sub(1, Relaxed);
            return Err(io::Error::other("the log writer has stopped"));
        }
        Ok(heard)
    }

    /// Appends `id`'s record and message; resolves once they are durable.
    pub async fn append(&self, id: &str, record: &[u8], message: Vec<u8>) -> io::Result<()> {
        let heard = self.submit(id, record, message)?;
        heard
            .await
            .unwrap_or_else(|_| Err(io::Error::other("the log writer has stopped")))
    }

    /// [`append`](Log::append) for a thread outside the async runtime.
    #[cfg(test)]
    pub fn append_blocking(&self, id: &str, record: &[u8], message: &[u8]) -> io::Result<()> {
        let heard = self.submit(id, record, message.to_vec())?;
        heard
            .blocking_recv()
            .unwrap_or_else(|_| Err(io::Error::other("the log writer has stopped")))
    }
}

/// The writer thread: until every sender is gone.
fn run(shared: &Shared, jobs: &Receiver<Job>) {
    while let Ok(first) = jobs.recv() {
        let mut batch = vec![first];
        let mut bytes = batch[0].len();
        while batch.len() < MAX_FRAMES && bytes < MAX_BYTES {
            let Ok(job) = jobs.try_recv() else { break };
            bytes += job.len();
            batch.push(job);
        }
        shared.waiting.fetch_sub(batch.len(), Relaxed);
        let written = shared.write(&batch);
        for job in batch {
            let _ = job.done.send(written.as_ref().map(|_| ()).map_err(copy));
        }
    }
}

/// An `io::Error` for one more committer (the OS code kept: a full disk stays one).
fn copy(e: &io::Error) -> io::Error {
    match e.raw_os_error() {
        Some(code) => io::Error::from_raw_os_error(code),
        None => io::Error::new(e.kind(), e.to_string()),
    }
}

impl Shared {
    /// Writes and syncs `batch` as one; indexes its frames once durable.
    fn write(&self, batch: &[Job]) -> io::Result<()> {
        let len: usize = batch.iter().map(Job::len).sum();
        let (seq, start, file, zeroed) = self.reserve(len as u64, batch.len())?;
        let end = start + len as u64;
        let mut zero_to = zero_target(zeroed, end);
        let mut frames: Vec<IoSlice<'_>> = batch
            .iter()
            .flat_map(|j| [IoSlice::new(&j.head), IoSlice::new(&j.message)])
            .collect();
        let written = write_all_at(&file, &mut frames, start).and_then(|()| {
            // Best effort: a disk too full for the zeros may still hold the
            // frames, which need nothing after them.
            if write_zeros(&file, end.max(zeroed), zero_to).is_err() {
                zero_to = end;
            }
            (self.data_sync)(&file)
        });
        self.syncs.fetch_add(1, Relaxed);
        let mut t = self.lock();
        match written {
            Ok(()) => {
                if let Some(s) = t.segments.get_mut(&seq) {
                    s.zeroed = s.zeroed.max(zero_to).max(end);
                }
                let mut offset = start;
                for job in batch {
                    let len = job.len();
                    t.index.insert(job.key, Loc { seq, offset, len });
                    offset += len as u64;
                }
                Ok(())
            }
            Err(e) => {
                // Never acknowledged: cut off, so they can never be delivered.
                if file.set_len(start).is_err() {
                    let mut offset = start;
                    for job in batch {
                        let _ = file.write_all_at(&[0; 8], offset);
                        offset += job.len() as u64;
                    }
                }
                if let Some(s) = t.segments.get_mut(&seq) {
                    s.sealed = true;
                    s.live -= batch.len();
                }
                t.current = None;
                self.remove_if_finished(&mut t, seq);
                Err(e)
            }
        }
    }

    /// Room for `len` bytes of `frames` frames at the current segment's end
    /// (a new segment when there is none or it is full): the segment, the
    /// offset, its file and how far it is written already.
    fn reserve(&self, len: u64, frames: usize) -> io::Result<(u64, u64, Arc<File>, u64)> {
        let mut t = self.lock();
        if let Some(seq) = t.current
            && t.segments[&seq].len >= SEGMENT_MAX
        {
            t.segments.get_mut(&seq).expect("current segment").sealed = true;
            t.current = None;
            self.remove_if_finished(&mut t, seq);
        }
        let seq = match t.current {
            Some(seq) => seq,
            None => {
                let seq = t.next_seq;
                let segment = self.create(seq)?;
                t.next_seq += 1;
                t.segments.insert(seq, segment);
                t.current = Some(seq);
                seq
            }
        };
        let s = t.segments.get_mut(&seq).expect("current segment");
        let offset = s.len;
        s.len += len;
        s.live += frames;
        Ok((seq, offset, s.file.clone(), s.zeroed))
    }
}

/// Where zero-filling should reach once frames end at `end` and the file is
/// written up to `zeroed`: [`ZERO_AHEAD`] past `end` when `end` has reached
/// the written part's end, never past [`SEGMENT_MAX`]; else `zeroed` (no
/// filling).
pub(super) fn zero_target(zeroed: u64, end: u64) -> u64 {
    if end + ZERO_AHEAD / 4 <= zeroed || end >= SEGMENT_MAX {
        return zeroed;
    }
    (end + ZERO_AHEAD).min(SEGMENT_MAX).max(zeroed)
}

/// Writes zeros over `from..to` of `file` (nothing when empty).
fn write_zeros(file: &File, from: u64, to: u64) -> io::Result<()> {
    static ZEROS: [u8; 64 * 1024] = [0; 64 * 1024];
    let mut left = to.saturating_sub(from) as usize;
    let mut parts = Vec::new();
    while left > 0 {
        let n = left.min(ZEROS.len());
        parts.push(IoSlice::new(&ZEROS[..n]));
        left -= n;
    }
    write_all_at(file, &mut parts, from)
}

/// Writes `parts` back to back at `offset` with `pwritev`, without first
/// copying them into one buffer; a short write goes on where it stopped.
fn write_all_at(file: &File, mut parts: &mut [IoSlice<'_>], mut offset: u64) -> io::Result<()> {
    IoSlice::advance_slices(&mut parts, 0);
    while !parts.is_empty() {
        match rustix::io::pwritev(file, parts, offset) {
            Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
            Ok(n) => {
                offset += n as u64;
                IoSlice::advance_slices(&mut parts, n);
            }
            Err(rustix::io::Errno::INTR) => {}
            Err(e) => return Err(e.into()),
        }
    }
    Ok(())
}
