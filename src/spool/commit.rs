//! The receiving path: a message streams into `tmp/<id>.eml`, then
//! [`Incoming::commit`] makes it durable in `queue/`. Each message fsyncs
//! its own two files; the directory fsync that makes the renames durable is
//! shared by every message committed at the same time (see [`group`](super::group)).
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

use tokio::io::AsyncWriteExt;
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
            file: Some(tokio::io::BufWriter::with_capacity(
                64 * 1024,
                tokio::fs::File::from_std(file),
            )),
            size: 0,
        })
    }
}

/// A message being received. Dropped without [`commit`](Incoming::commit),
/// its temp file is removed.
pub struct Incoming {
    id: String,
    path: Option<PathBuf>,
    /// `None` once `commit` has taken it.
    file: Option<tokio::io::BufWriter<tokio::fs::File>>,
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

    fn file(&mut self) -> &mut tokio::io::BufWriter<tokio::fs::File> {
        self.file.as_mut().expect("incoming file")
    }

    pub async fn write(&mut self, bytes: &[u8]) -> Result<(), SpoolError> {
        self.file()
            .write_all(bytes)
            .await
            .map_err(SpoolError::from_io)?;
        self.size += bytes.len() as u64;
        Ok(())
    }

    /// Flushes the received bytes to the file, so they can be read back
    /// (to check limits); [`commit`](Incoming::commit) makes them durable.
    pub async fn finish(&mut self) -> Result<(), SpoolError> {
        self.file().flush().await.map_err(SpoolError::from_io)
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
        self.finish().await?;
        let file = self.file.take().expect("incoming file").into_inner();
        let file = file.into_std().await;
        let tmp_eml = self.path.take().expect("incoming path");
        let meta = Meta::with_credential(
            self.id.clone(),
            envelope,
            self.size,
            SystemTime::now(),
            credential,
        );
        let spool2 = spool.clone();
        let meta2 = meta.clone();
        tokio::task::spawn_blocking(move || spool2.link_into_queue(&file, &tmp_eml, &meta2))
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
    /// Message first, record (the commit marker) last, then the directory,
    /// whose sync is shared with every message renamed meanwhile.
    fn link_into_queue(
        &self,
        eml: &fs::File,
        tmp_eml: &Path,
        meta: &Meta,
    ) -> Result<(), SpoolError> {
        let id = &meta.id;
        let tmp_json = fsio::temp_name(&self.tmp, id);
        let queued_json = self.queue.join(format!("{id}.json"));
        let queued_eml = self.queue.join(format!("{id}.eml"));
        let write = || -> io::Result<()> {
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
