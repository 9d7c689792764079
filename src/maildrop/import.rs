//! The daemon side: at start and then every [`POLL`], every complete drop
//! file is validated and committed to the spool through the receiving path
//! (`Spool::receive` -> `Incoming::{write, commit}`), then removed.
//!
//! Invariant: the drop file is removed only after `commit` returned `Ok`;
//! a spool that cannot take mail now (full disk, I/O error) leaves the file
//! for the next round. A file that can never be imported (not a regular
//! file, hard-linked, unreadable, malformed, too large) is moved to `bad/`
//! with a `.reason` file and a warning. Files are opened `O_NOFOLLOW |
//! O_NONBLOCK` and checked with `fstat`, so a symlink or a FIFO planted by a
//! user is moved aside, never followed or waited on.

use std::fs::{self, File, OpenOptions};
use std::io;
use std::os::unix::fs::{DirBuilderExt, MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use tokio::io::AsyncReadExt;
use tokio_util::sync::CancellationToken;

use super::{DIR_MODE, format};
use crate::config::Config;
use crate::message::Envelope;
use crate::spool::{Spool, SpoolError, fsio};

/// How often the maildrop is scanned while the daemon runs.
pub const POLL: Duration = Duration::from_secs(1);
/// A temp file this old belongs to a `sendmail` that died before finishing
/// (it did not exit 0): it is removed.
pub const STALE_TEMP: Duration = Duration::from_secs(24 * 3600);

/// Why a drop file was not imported now.
#[derive(Debug, thiserror::Error)]
pub enum ImportError {
    /// Never importable: moved to `bad/`.
    #[error("{0}")]
    Refused(String),
    /// The spool cannot take it now: left for the next round.
    #[error(transparent)]
    Spool(#[from] SpoolError),
    #[error("maildrop I/O error: {0}")]
    Io(#[from] io::Error),
}

/// What one scan did.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Scan {
    pub imported: usize,
    pub refused: usize,
    pub deferred: usize,
}

pub struct Importer {
    dir: PathBuf,
    bad: PathBuf,
    spool: Arc<Spool>,
    max_message_size: u64,
    max_recipients: usize,
    hostname: String,
    /// Cancelled at shutdown: a scan stops between files.
    stop: CancellationToken,
}

impl Importer {
    pub fn new(cfg: &Config, spool: Arc<Spool>) -> Importer {
        let dir = cfg.sendmail.maildrop.clone();
        Importer {
            bad: dir.join("bad"),
            dir,
            spool,
            max_message_size: cfg.smtp.max_message_size as u64,
            max_recipients: cfg.smtp.max_recipients,
            hostname: cfg.smtp.hostname.clone(),
            stop: CancellationToken::new(),
        }
    }

    /// Imports at once, then every [`POLL`] until `shutdown`. A maildrop
    /// that cannot be created or is not safe is reported (once per change)
    /// and tried again each round; the daemon keeps serving SMTP.
    pub async fn run(mut self, shutdown: CancellationToken) {
        self.stop = shutdown.clone();
        let mut last_problem: Option<String> = None;
        loop {
            match self.prepare() {
                Ok(()) => {
                    if last_problem.take().is_some() {
                        tracing::info!(dir = %self.dir.display(), "maildrop usable again");
                    }
                    self.scan().await;
                }
                Err(problem) => {
                    if last_problem.as_ref() != Some(&problem) {
                        tracing::error!(dir = %self.dir.display(), "maildrop not imported: {problem}");
                        last_problem = Some(problem);
                    }
                }
            }
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = tokio::time::sleep(POLL) => {}
            }
        }
    }

    /// Creates the maildrop (mode [`DIR_MODE`]) and `bad/` when missing and
    /// checks both are ours and safe; the text says what to fix.
    pub fn prepare(&self) -> Result<(), String> {
        if fs::symlink_metadata(&self.dir).is_err() {
            // Missing parents are made 0755 whatever the umask: every local
            // user must be able to reach the maildrop.
            let mut missing: Vec<&Path> = self
                .dir
                .ancestors()
                .skip(1)
                .take_while(|p| !p.as_os_str().is_empty() && fs::symlink_metadata(p).is_err())
                .collect();
            missing.reverse();
            for parent in missing {
                fs::DirBuilder::new()
                    .mode(0o755)
                    .create(parent)
                    .and_then(|_| fs::set_permissions(parent, fs::Permissions::from_mode(0o755)))
                    .map_err(|e| format!("cannot create {}: {e}", parent.display()))?;
            }
            match fs::DirBuilder::new().mode(0o700).create(&self.dir) {
                Err(e) if e.kind() != io::ErrorKind::AlreadyExists => {
                    return Err(format!("cannot create it: {e}"));
                }
                _ => {}
            }
            // Without the setgid bit (a sandbox may forbid it), files get
            // their owner's group: only a root daemon could read them.
            fs::set_permissions(&self.dir, fs::Permissions::from_mode(DIR_MODE))
                .or_else(|_| fs::set_permissions(&self.dir, fs::Permissions::from_mode(0o1733)))
                .map_err(|e| format!("cannot set its mode: {e}"))?;
        }
        check_dir(&self.dir, true)?;
        fsio::create_dir(&self.bad).map_err(|e| format!("cannot create bad/: {e}"))?;
        check_dir(&self.bad, false)
    }

    /// One pass over the maildrop, oldest name first.
    pub async fn scan(&self) -> Scan {
        let mut scan = Scan::default();
        let mut names: Vec<String> = match fs::read_dir(&self.dir) {
            Ok(rd) => rd
                .filter_map(Result::ok)
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .filter(|n| n != "bad")
                .collect(),
            Err(e) => {
                tracing::warn!(dir = %self.dir.display(), error = %e, "cannot list the maildrop");
                return scan;
            }
        };
        names.sort();
        for name in names {
            if self.stop.is_cancelled() {
                break;
            }
            let path = self.dir.join(&name);
            if name.starts_with('.') {
                self.remove_if_stale(&path);
                continue;
            }
            match self.import(&path).await {
                Ok(()) => scan.imported += 1,
                Err(ImportError::Refused(reason)) => {
                    self.move_aside(&name, &reason);
                    scan.refused += 1;
                }
                Err(e) => {
                    tracing::warn!(file = %name, error = %e, "maildrop file left for the next round");
                    scan.deferred += 1;
                }
            }
        }
        scan
    }

    async fn import(&self, path: &Path) -> Result<(), ImportError> {
        let (file, uid) = open_checked(path, self.limit())?;
        let mut file = tokio::fs::File::from_std(file);
        let block = format::max_block(self.max_recipients);
        let mut head = Vec::with_capacity(4096);
        let (envelope, offset) = loop {
            let mut chunk = vec![0; 8192];
            let n = file.read(&mut chunk).await?;
            head.extend_from_slice(&chunk[..n]);
            match format::decode(&head, self.max_recipients) {
                Err(format::FormatError::Unterminated) if n > 0 && head.len() <= block => {}
                other => break other.map_err(|e| ImportError::Refused(e.to_string()))?,
            }
        };
        let mut incoming = self.spool.receive().await?;
        incoming.write(self.trace(uid).as_bytes()).await?;
        let mut size = (head.len() - offset) as u64;
        incoming.write(&head[offset..]).await?;
        let mut chunk = vec![0; 64 * 1024];
        loop {
            let n = file.read(&mut chunk).await?;
            if n == 0 {
                break;
            }
            size += n as u64;
            if size > self.max_message_size {
                return Err(too_large(self.max_message_size));
            }
            incoming.write(&chunk[..n]).await?;
        }
        if size > self.max_message_size {
            return Err(too_large(self.max_message_size));
        }
        let log_env = envelope.clone();
        let id = incoming.commit(&self.spool, envelope).await?;
        // Durable in the spool: only now may the drop file go.
        fs::remove_file(path)?;
        let _ = fsio::sync_dir(&self.dir);
        log_imported(&id, uid, &log_env, path);
        Ok(())
    }

    /// The drop file's size limit: the envelope block plus the message.
    fn limit(&self) -> u64 {
        self.max_message_size + format::max_block(self.max_recipients) as u64
    }

    /// A trace field naming the submitting uid, as Postfix's pickup writes it.
    fn trace(&self, uid: u32) -> String {
        format!(
            "Received: by {} (postrelay maildrop, from userid {uid});\r\n\t{}\r\n",
            self.hostname,
            httpdate::fmt_http_date(SystemTime::now())
        )
    }

    fn move_aside(&self, name: &str, reason: &str) {
        tracing::warn!(file = %name, reason, "maildrop file refused, moved to bad/");
        let moved = fs::rename(self.dir.join(name), self.bad.join(name));
        let noted = fsio::write_atomic(
            &self.bad.join(format!("{name}.reason")),
            format!("{reason}\n").as_bytes(),
        );
        if let Err(e) = moved.and(noted) {
            tracing::error!(file = %name, error = %e, "cannot move the refused maildrop file aside");
        }
    }

    fn remove_if_stale(&self, path: &Path) {
        let stale = fs::symlink_metadata(path)
            .and_then(|m| m.modified())
            .ok()
            .and_then(|t| t.elapsed().ok())
            .is_some_and(|age| age > STALE_TEMP);
        if stale && fs::remove_file(path).is_ok() {
            tracing::info!(file = %path.display(), "removed an abandoned maildrop temp file");
        }
    }
}

fn too_large(max: u64) -> ImportError {
    ImportError::Refused(format!(
        "message larger than smtp.max_message_size ({max} bytes)"
    ))
}

fn log_imported(id: &str, uid: u32, env: &Envelope, path: &Path) {
    tracing::info!(
        id,
        uid,
        from = %env.mail_from,
        rcpts = env.rcpt_to.len(),
        file = %path.display(),
        outcome = "received",
        "maildrop message imported"
    );
}

/// Opens a drop file without following a symlink or blocking on a FIFO,
/// and checks it: a regular file with one link, within `limit` bytes.
/// Returns it and its owner's uid.
fn open_checked(path: &Path, limit: u64) -> Result<(File, u32), ImportError> {
    let flags = rustix::fs::OFlags::NOFOLLOW | rustix::fs::OFlags::NONBLOCK;
    let file = OpenOptions::new()
        .read(true)
        .custom_flags((flags | rustix::fs::OFlags::CLOEXEC).bits() as i32)
        .open(path)
        .map_err(|e| match e.raw_os_error() {
            Some(c) if c == rustix::io::Errno::LOOP.raw_os_error() => {
                ImportError::Refused("a symbolic link".into())
            }
            Some(c) if c == rustix::io::Errno::ACCESS.raw_os_error() => ImportError::Refused(
                "not readable by the daemon (a drop file must be mode 0640, group of the maildrop)"
                    .into(),
            ),
            _ => ImportError::Io(e),
        })?;
    let meta = file.metadata()?;
    if !meta.file_type().is_file() {
        return Err(ImportError::Refused("not a regular file".into()));
    }
    if meta.nlink() != 1 {
        return Err(ImportError::Refused(format!(
            "has {} links (a drop file has exactly one)",
            meta.nlink()
        )));
    }
    if meta.size() > limit {
        return Err(ImportError::Refused(format!(
            "{} bytes: larger than smtp.max_message_size allows",
            meta.size()
        )));
    }
    Ok((file, meta.uid()))
}

/// A directory of ours that others cannot list (the maildrop must also be
/// sticky, `bad/` must be private).
fn check_dir(dir: &Path, maildrop: bool) -> Result<(), String> {
    let meta = fs::symlink_metadata(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    let shown = dir.display();
    if !meta.file_type().is_dir() {
        return Err(format!(
            "{shown} is not a directory (a symlink?); remove it"
        ));
    }
    let euid = rustix::process::geteuid().as_raw();
    if meta.uid() != euid {
        return Err(format!(
            "{shown} is owned by uid {}, not by the daemon's uid {euid}; chown it",
            meta.uid()
        ));
    }
    let mode = meta.mode() & 0o7777;
    if maildrop && (mode & 0o1000 == 0 || mode & 0o044 != 0) {
        return Err(format!(
            "{shown} has mode {mode:04o}: it must be sticky and not listable by others; chmod 3733 it"
        ));
    }
    if !maildrop && mode & 0o077 != 0 {
        return Err(format!("{shown} has mode {mode:04o}; chmod 0700 it"));
    }
    Ok(())
}

#[cfg(test)]
mod tests;
