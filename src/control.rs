//! The queue-admin control socket, `<spool>/control.sock`. The process that
//! owns the spool (the daemon) performs `retry`, `delete` and `requeue` for
//! `postrelay queue ...`, so operator actions never race a delivery worker.
//! When no daemon runs, the CLI owns the spool itself and calls [`execute`]
//! directly: one implementation, two transports.
//!
//! Protocol: one JSON [`Request`] line in (within [`REQUEST_DEADLINE`]);
//! [`Reply`] lines out (progress every [`PROGRESS_EVERY`] items, then one
//! `done`).
//!
//! Invariant: the socket lives in the spool root, a 0700 directory the
//! spool checked is ours, and is bound with a umask that gives it its final
//! mode 0600 at creation: no moment where anyone else can connect. A failing
//! `accept` (EMFILE) backs off instead of spinning.

use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt};
use tokio::net::UnixListener;
use tokio_util::sync::CancellationToken;

use crate::spool::{Spool, SpoolError};

pub const PROGRESS_EVERY: usize = 100;

/// How long a client has to send its request line.
pub const REQUEST_DEADLINE: Duration = Duration::from_secs(10);

/// How long a `retry` or `delete` of one message waits for an attempt under
/// way to settle (its outcome being recorded) before answering "in flight".
pub const IN_FLIGHT_PATIENCE: Duration = Duration::from_secs(5);

/// How often that wait looks again.
const IN_FLIGHT_POLL: Duration = Duration::from_millis(20);

/// First and longest pause after a failed `accept`.
const ACCEPT_BACKOFF: (Duration, Duration) = (Duration::from_millis(10), Duration::from_secs(1));

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Op {
    /// Queue entry due now.
    Retry,
    /// Queue entry removed.
    Delete,
    /// Dead letter back into the queue.
    Requeue,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Request {
    pub op: Op,
    /// One id, or `None` for every entry the op applies to.
    pub id: Option<String>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Report {
    pub total: usize,
    pub ok: usize,
    /// (id, why) for each entry the op could not apply to.
    pub errors: Vec<(String, String)>,
}

#[derive(Debug, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Reply {
    Progress { done: usize, total: usize },
    Done(Report),
    Error(String),
}

pub fn socket_path(spool_root: &Path) -> PathBuf {
    spool_root.join("control.sock")
}

/// Applies `req` to the spool this process owns. Blocking. An op on one
/// named message waits up to [`IN_FLIGHT_PATIENCE`] for an attempt under way
/// on it; an op on every entry skips those in flight at once.
pub fn execute(
    spool: &Arc<Spool>,
    req: &Request,
    progress: &mut dyn FnMut(usize, usize),
) -> Result<Report, SpoolError> {
    execute_with(spool, req, IN_FLIGHT_PATIENCE, progress)
}

fn execute_with(
    spool: &Arc<Spool>,
    req: &Request,
    patience: Duration,
    progress: &mut dyn FnMut(usize, usize),
) -> Result<Report, SpoolError> {
    let patience = if req.id.is_some() {
        patience
    } else {
        Duration::ZERO
    };
    let ids = match (&req.id, req.op) {
        (Some(id), _) => vec![id.clone()],
        (None, Op::Requeue) => spool.failed_ids()?,
        (None, _) => spool.queued_ids()?,
    };
    let mut report = Report {
        total: ids.len(),
        ..Report::default()
    };
    for (i, id) in ids.iter().enumerate() {
        match apply(spool, req.op, id, patience) {
            Ok(()) => report.ok += 1,
            Err(e) => report.errors.push((id.clone(), e.to_string())),
        }
        if (i + 1) % PROGRESS_EVERY == 0 {
            progress(i + 1, ids.len());
        }
    }
    tracing::info!(op = ?req.op, id = req.id.as_deref().unwrap_or("all"), total = report.total, ok = report.ok, "queue admin");
    Ok(report)
}

/// `op` on `id`, asked again every [`IN_FLIGHT_POLL`] while a delivery
/// worker holds the entry, until `patience` runs out.
fn apply(spool: &Arc<Spool>, op: Op, id: &str, patience: Duration) -> Result<(), SpoolError> {
    let deadline = Instant::now() + patience;
    loop {
        let result = match op {
            Op::Retry => spool.retry_now(id),
            Op::Delete => spool.delete(id),
            Op::Requeue => spool.requeue(id),
        };
        match result {
            Err(SpoolError::InFlight(_)) if Instant::now() < deadline => {
                std::thread::sleep(IN_FLIGHT_POLL)
            }
            other => return other,
        }
    }
}

/// Binds the control socket (replacing a stale one: we hold the spool
/// lock) with mode 0600 from its creation. Call before other threads create
/// files: the umask is process-wide for the instant of the bind.
pub fn bind(spool_root: &Path) -> std::io::Result<UnixListener> {
    let path = socket_path(spool_root);
    crate::spool::fsio::remove_if_exists(&path)?;
    let old = rustix::process::umask(rustix::fs::Mode::from_raw_mode(0o177));
    let bound = std::os::unix::net::UnixListener::bind(&path);
    rustix::process::umask(old);
    let listener = bound?;
    // Operator tool only: owner access (already so; stated for clarity).
    std::fs::set_permissions(&path, std::os::unix::fs::PermissionsExt::from_mode(0o600))?;
    listener.set_nonblocking(true)?;
    UnixListener::from_std(listener)
}

/// The pause after the `n`th consecutive failed `accept` (0-based): doubling, capped.
fn accept_backoff(n: u32) -> Duration {
    let (first, max) = ACCEPT_BACKOFF;
    first.saturating_mul(1 << n.min(16)).min(max)
}

/// Serves the control socket until `shutdown`.
pub async fn serve(listener: UnixListener, spool: Arc<Spool>, shutdown: CancellationToken) {
    let path = socket_path(spool.root());
    let mut failures = 0u32;
    loop {
        let accepted = tokio::select! {
            _ = shutdown.cancelled() => break,
            a = listener.accept() => a,
        };
        let stream = match accepted {
            Ok((stream, _)) => {
                failures = 0;
                stream
            }
            Err(e) => {
                // EMFILE and friends: retrying at once would spin a core.
                let pause = accept_backoff(failures);
                failures = failures.saturating_add(1);
                tracing::warn!(error = %e, pause_ms = pause.as_millis() as u64, "control socket accept failed");
                tokio::select! {
                    _ = shutdown.cancelled() => break,
                    _ = tokio::time::sleep(pause) => continue,
                }
            }
        };
        let spool = spool.clone();
        tokio::spawn(async move {
            if let Err(e) = handle(stream, spool).await {
                tracing::warn!(error = %e, "control socket client failed");
            }
        });
    }
    let _ = std::fs::remove_file(&path);
}

async fn handle(stream: tokio::net::UnixStream, spool: Arc<Spool>) -> std::io::Result<()> {
    let (rd, mut wr) = stream.into_split();
    let mut line = String::new();
    let mut reader = tokio::io::BufReader::new(rd.take(64 * 1024));
    let read = reader.read_line(&mut line);
    match tokio::time::timeout(REQUEST_DEADLINE, read).await {
        Ok(read) => read?,
        Err(_) => {
            let msg = format!("no request within {}s", REQUEST_DEADLINE.as_secs());
            return write_reply(&mut wr, &Reply::Error(msg)).await;
        }
    };
    let req = match serde_json::from_str::<Request>(&line) {
        Ok(req) => req,
        Err(e) => return write_reply(&mut wr, &Reply::Error(format!("bad request: {e}"))).await,
    };
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    let job = tokio::task::spawn_blocking(move || {
        let mut progress = |done, total| {
            let _ = tx.send(Reply::Progress { done, total });
        };
        match execute(&spool, &req, &mut progress) {
            Ok(r) => Reply::Done(r),
            Err(e) => Reply::Error(e.to_string()),
        }
    });
    // Progress lines until the job drops its sender, then the result.
    while let Some(r) = rx.recv().await {
        write_reply(&mut wr, &r).await?;
    }
    let last = job
        .await
        .unwrap_or_else(|e| Reply::Error(format!("queue admin failed: {e}")));
    write_reply(&mut wr, &last).await
}

async fn write_reply(wr: &mut tokio::net::unix::OwnedWriteHalf, r: &Reply) -> std::io::Result<()> {
    let mut bytes = serde_json::to_vec(r).map_err(std::io::Error::other)?;
    bytes.push(b'\n');
    wr.write_all(&bytes).await
}

/// Client side: sends `req` to the daemon owning the spool at `root`.
pub fn request(
    root: &Path,
    req: &Request,
    progress: &mut dyn FnMut(usize, usize),
) -> Result<Report, String> {
    let path = socket_path(root);
    let mut stream = UnixStream::connect(&path)
        .map_err(|e| format!("the spool is locked by a running daemon, but its control socket {} does not answer: {e}", path.display()))?;
    let mut line = serde_json::to_vec(req).map_err(|e| e.to_string())?;
    line.push(b'\n');
    stream.write_all(&line).map_err(|e| e.to_string())?;
    for line in BufReader::new(stream).lines() {
        let line = line.map_err(|e| e.to_string())?;
        match serde_json::from_str::<Reply>(&line)
            .map_err(|e| format!("bad reply from daemon: {e}"))?
        {
            Reply::Progress { done, total } => progress(done, total),
            Reply::Done(r) => return Ok(r),
            Reply::Error(e) => return Err(e),
        }
    }
    Err("the daemon closed the control socket without an answer".into())
}

#[cfg(test)]
#[path = "control_tests.rs"]
mod tests;
