//! The receiving path. A message up to [`HOLD`] bytes stays in memory
//! until [`Incoming::commit`] appends it with its record to the log (see
//! [`log`](super::log)): one write, and a segment sync shared by every
//! message committed at the same time. A larger one spills to
//! `tmp/<id>.eml` as it arrives, so memory stays flat, and `commit` fsyncs
//! it and its record and renames both into `queue/`, under a directory
//! fsync shared the same way (see [`group`](super::group)).
//!
//! Invariant: `commit` returns `Ok` only once the message and its record
//! are durable (the log's or the directory's sync started after the write
//! or the renames and succeeded); on any error nothing that could be
//! delivered is left behind.

use std::fs;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::SystemTime;

use tokio::time::Instant;

use super::{Credential, Meta, Spool, SpoolError, entry, fsio};
use crate::message::Envelope;

impl Spool {
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
        Ok(Incoming {
            id,
            path: Some(path),
            file: None,
            created: false,
            pending: Vec::new(),
            spilled: 0,
        })
    }
}

/// Bytes of a message held in memory before it spills to its temp file.
pub const HOLD: usize = 64 * 1024;

/// A message being received. Dropped without [`commit`](Incoming::commit),
/// its temp file (if it spilled) is removed.
pub struct Incoming {
    id: String,
    path: Option<PathBuf>,
    /// Created by the first spill; `None` before it, once `commit` has
    /// taken it, or while a spill writes to it.
    file: Option<fs::File>,
    /// The temp file exists (to remove it on drop).
    created: bool,
    /// Received bytes not written to the file yet (at most [`HOLD`] once
    /// `write` returns).
    pending: Vec<u8>,
    /// Bytes already written to the file.
    spilled: u64,
}

impl Incoming {
    pub fn id(&self) -> &str {
        &self.id
    }

    pub fn size(&self) -> u64 {
        self.spilled + self.pending.len() as u64
    }

    pub fn path(&self) -> &Path {
        self.path.as_deref().expect("incoming path")
    }

    /// The whole message, when it is still held in memory (it never
    /// spilled): no need to read it back from the file.
    pub fn held(&self) -> Option<&[u8]> {
        (self.spilled == 0).then_some(self.pending.as_slice())
    }

    pub async fn write(&mut self, bytes: &[u8]) -> Result<(), SpoolError> {
        self.pending.extend_from_slice(bytes);
        self.written().await
    }

    /// Where received bytes may be appended in place, sparing a copy;
    /// call [`written`](Incoming::written) after each append.
    pub fn buffer(&mut self) -> &mut Vec<u8> {
        &mut self.pending
    }

    /// Spills what [`buffer`](Incoming::buffer) holds once it is over
    /// [`HOLD`], so at most `HOLD` bytes stay in memory.
    pub async fn written(&mut self) -> Result<(), SpoolError> {
        if self.pending.len() > HOLD {
            self.spill().await?;
        }
        Ok(())
    }

    /// Writes the held bytes to the file, creating it the first time (off
    /// the async threads).
    async fn spill(&mut self) -> Result<(), SpoolError> {
        let file = self.file.take();
        let path = self.path().to_path_buf();
        let pending = std::mem::take(&mut self.pending);
        let (file, mut pending, written) = tokio::task::spawn_blocking(move || {
            let mut file = match file {
                Some(f) => f,
                None => match fsio::create_new(&path) {
                    Ok(f) => f,
                    Err(e) => return (None, pending, Err(e)),
                },
            };
            let written = io::Write::write_all(&mut file, &pending);
            (Some(file), pending, written)
        })
        .await
        .map_err(|e| SpoolError::Io(io::Error::other(e)))?;
        self.created |= file.is_some();
        self.file = file;
        written.map_err(SpoolError::from_io)?;
        self.spilled += pending.len() as u64;
        pending.clear();
        self.pending = pending;
        Ok(())
    }

    /// Writes every received byte to the file, so the message can be read
    /// back from [`path`](Incoming::path); [`commit`](Incoming::commit)
    /// makes them durable.
    pub async fn finish(&mut self) -> Result<(), SpoolError> {
        if self.pending.is_empty() {
            return Ok(());
        }
        self.spill().await
    }

    /// Makes the message durable in `queue/`. Returns its id.
    pub async fn commit(
        self,
        spool: &Arc<Spool>,
        envelope: Envelope,
    ) -> Result<String, SpoolError> {
        self.commit_with(spool, envelope, Credential::Global).await
    }

    /// Like [`commit`](Self::commit), recording which credential delivers it.
    pub async fn commit_with(
        mut self,
        spool: &Arc<Spool>,
        envelope: Envelope,
        credential: Credential,
    ) -> Result<String, SpoolError> {
        let meta = Meta::with_credential(
            self.id.clone(),
            envelope,
            self.size(),
            SystemTime::now(),
            credential,
        );
        let pending = std::mem::take(&mut self.pending);
        let tmp_eml = self.path.take().expect("incoming path");
        match self.file.take() {
            // Never spilled: the whole message is held.
            None => {
                let record = entry::encode(&meta);
                spool
                    .log
                    .append(&meta.id, &record, pending)
                    .await
                    .map_err(SpoolError::from_io)?;
            }
            Some(file) => {
                self.created = false;
                let spool2 = spool.clone();
                let meta2 = meta.clone();
                tokio::task::spawn_blocking(move || {
                    spool2.link_into_queue(&file, &pending, &tmp_eml, &meta2)
                })
                .await
                .map_err(|e| SpoolError::Io(io::Error::other(e)))??;
            }
        }
        spool
            .sched()
            .insert(&meta.id, Instant::now(), meta.received_at);
        spool.wake.notify_one();
        Ok(meta.id)
    }
}

impl Drop for Incoming {
    fn drop(&mut self) {
        if let Some(path) = self.path.take().filter(|_| self.created) {
            let _ = fs::remove_file(path);
        }
    }
}

impl Spool {
    /// Blocking. The held bytes, then the message's fsync, then the record
    /// (the commit marker), then the directory,
    /// whose sync is shared with every message renamed meanwhile.
    fn link_into_queue(
        &self,
        eml: &fs::File,
        pending: &[u8],
        tmp_eml: &Path,
        meta: &Meta,
    ) -> Result<(), SpoolError> {
        let id = &meta.id;
        let tmp_json = fsio::temp_name(&self.tmp, id);
        let queued_json = self.queue.join(format!("{id}.json"));
        let queued_eml = self.queue.join(format!("{id}.eml"));
        let write = || -> io::Result<()> {
            io::Write::write_all(&mut { eml }, pending)?;
            eml.sync_all()?;
            let mut f = fsio::create_new(&tmp_json)?;
            io::Write::write_all(&mut f, &entry::encode(meta))?;
            f.sync_all()?;
            fs::rename(tmp_eml, &queued_eml)?;
            fs::rename(&tmp_json, &queued_json)?;
            self.queue_sync.covered(&self.queue)
        };
        write().map_err(|e| {
            // The client hears 4xx and will send again: leave nothing
            // behind that could be delivered as well (record first).
            let _ = fs::remove_file(&queued_json);
            let _ = fs::remove_file(&tmp_json);
            let _ = fs::remove_file(tmp_eml);
            let _ = fs::remove_file(&queued_eml);
            SpoolError::from_io(e)
        })
    }
}
