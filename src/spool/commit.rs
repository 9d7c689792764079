//! The receiving path: a message streams into `tmp/<id>.eml`, then
//! [`Incoming::commit`] makes it durable in `queue/`. Each message fsyncs
//! its own two files; the directory fsync that makes the renames durable is
//! shared by every message committed at the same time (see [`group`](super::group)).
//! A message up to [`HOLD`] bytes stays in memory until `commit`, which
//! writes, syncs and renames it in one blocking call; a larger one spills
//! to its temp file as it arrives, so memory stays flat.
//!
//! Invariant: `commit` returns `Ok` only once the message, then its record,
//! are fsynced and renamed into `queue/` and a directory fsync that started
//! after those renames has succeeded; on any error nothing that could be
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
        let file = fsio::create_new(&path).map_err(SpoolError::from_io)?;
        Ok(Incoming {
            id,
            path: Some(path),
            file: Some(file),
            pending: Vec::new(),
            spilled: 0,
        })
    }
}

/// Bytes of a message held in memory before it spills to its temp file.
pub const HOLD: usize = 64 * 1024;

/// A message being received. Dropped without [`commit`](Incoming::commit),
/// its temp file is removed.
pub struct Incoming {
    id: String,
    path: Option<PathBuf>,
    /// `None` once `commit` has taken it (or while a spill writes to it).
    file: Option<fs::File>,
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
        if self.pending.len() > HOLD {
            self.spill().await?;
        }
        Ok(())
    }

    /// Writes the held bytes to the file (off the async threads).
    async fn spill(&mut self) -> Result<(), SpoolError> {
        let mut file = self.file.take().expect("incoming file");
        let pending = std::mem::take(&mut self.pending);
        let (file, mut pending, written) = tokio::task::spawn_blocking(move || {
            let written = io::Write::write_all(&mut file, &pending);
            (file, pending, written)
        })
        .await
        .map_err(|e| SpoolError::Io(io::Error::other(e)))?;
        self.file = Some(file);
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
        let file = self.file.take().expect("incoming file");
        let pending = std::mem::take(&mut self.pending);
        let tmp_eml = self.path.take().expect("incoming path");
        let meta = Meta::with_credential(
            self.id.clone(),
            envelope,
            self.size(),
            SystemTime::now(),
            credential,
        );
        let spool2 = spool.clone();
        let meta2 = meta.clone();
        tokio::task::spawn_blocking(move || {
            spool2.link_into_queue(&file, &pending, &tmp_eml, &meta2)
        })
        .await
        .map_err(|e| SpoolError::Io(io::Error::other(e)))??;
        spool
            .sched()
            .insert(&meta.id, Instant::now(), meta.received_at);
        spool.wake.notify_one();
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
