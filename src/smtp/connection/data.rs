//! One DATA phase of a connection: the message streams through the
//! [`DataFramer`] into the spool's [`Incoming`], is checked against the
//! backend's limits (the mapping kept for its first attempt), and is
//! committed before the `250`.

use std::time::Duration;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite};
use tokio::time::Instant;

use super::super::auth;
use super::super::codec::{DataFramer, DataStatus, Verdict};
use super::super::reply::{self, Reply};
use super::super::trace::{Trace, received};
use super::{Conn, Stop};
use crate::observability::escape::escape;
use crate::observability::maillog;
use crate::spool::{Incoming, SpoolError};

/// Largest message checked on the connection's own task, in place (a
/// 20 KB message checks in about 35 µs of CPU, a hand-off to the blocking
/// pool and a copy cost more; see `accept`).
const CHECK_INLINE: usize = 32 * 1024;
/// Bytes per second a DATA transfer must average beyond its first
/// `data_timeout` (Postfix's `smtpd_min_data_rate` is 500).
const MIN_DATA_RATE: u64 = 512;

impl<S> Conn<S>
where
    S: AsyncRead + AsyncWrite + Unpin + Send,
{
    /// Runs one DATA phase. `rest` holds bytes received after the DATA line.
    /// Returns the bytes received after the end-of-data marker.
    pub(super) async fn data(&mut self, rest: &[u8]) -> Result<Vec<u8>, Stop> {
        let mut incoming = match self.shared.spool.receive().await {
            Ok(i) => Some(i),
            Err(e) => {
                let r = self.spool_reply(&e);
                r.write_to(&mut self.out);
                self.session.reset();
                return Ok(rest.to_vec());
            }
        };
        reply::start_data().write_to(&mut self.out);
        self.flush().await.map_err(|_| Stop::Gone)?;
        let mut write_error: Option<SpoolError> = None;
        if self.shared.received_header
            && let Some(inc) = incoming.as_mut()
        {
            let trace = Trace {
                helo: self.session.helo(),
                client: self.peer.ip(),
                hostname: self.session.hostname(),
                tls: self.session.client().tls,
                user: self.session.user().map(|u| u.name.as_str()),
                id: inc.id(),
                at: std::time::SystemTime::now(),
            };
            let header = received(&trace);
            if let Err(e) = inc.write(header.as_bytes()).await {
                write_error = Some(e);
            }
        }

        let limits = &self.shared.limits;
        let mut framer = DataFramer::new(limits.max_message_size, limits.max_header_size);
        // Decoded bytes go straight into the message's buffer; once it
        // is refused or cannot be written, into a scratch one.
        let mut scratch = Vec::new();
        let started = Instant::now();
        let mut received = rest.len() as u64;
        let out = match (incoming.as_mut(), &write_error) {
            (Some(inc), None) => inc.buffer(),
            _ => &mut scratch,
        };
        let mut ended = leftover(framer.push(rest, out), rest);
        let leftover = loop {
            if framer.verdict() != Verdict::Ok {
                incoming = None; // drop: the temp file goes away
            } else if let (Some(inc), None) = (incoming.as_mut(), &write_error)
                && let Err(e) = inc.written().await
            {
                write_error = Some(e);
            }
            scratch.clear();
            if let Some(leftover) = ended {
                break leftover;
            }
            // Silence may last `data_timeout`; beyond that first stretch the
            // transfer must also keep up MIN_DATA_RATE on average, so a
            // client trickling bytes cannot hold the slot for ever.
            let earned = Duration::from_millis(received.saturating_mul(1000) / MIN_DATA_RATE);
            let budget = started + self.shared.data_timeout + earned;
            let deadline = (Instant::now() + self.shared.data_timeout)
                .min(budget)
                .min(self.ends);
            self.readbuf.clear();
            let read =
                tokio::time::timeout_at(deadline, self.stream.read_buf(&mut self.readbuf)).await;
            let n = match read {
                Err(_) => return Err(self.expired()),
                Ok(Ok(0)) | Ok(Err(_)) => return Err(Stop::Gone),
                Ok(Ok(n)) => n,
            };
            received += n as u64;
            let input = &self.readbuf[..n];
            let out = match (incoming.as_mut(), &write_error) {
                (Some(inc), None) => inc.buffer(),
                _ => &mut scratch,
            };
            ended = leftover(framer.push(input, out), input);
        };

        let max = self.shared.limits.max_message_size;
        let size = framer.size();
        let r = match framer.verdict() {
            Verdict::TooLarge => {
                metrics::counter!("postrelay_smtp_messages_total", "result" => "too_large")
                    .increment(1);
                tracing::info!(peer = %self.peer, size, max, "message refused: too large");
                reply::too_large(max)
            }
            Verdict::HeaderTooLarge => {
                let max_header = self.shared.limits.max_header_size;
                metrics::counter!("postrelay_smtp_messages_total", "result" => "header_too_large")
                    .increment(1);
                tracing::info!(peer = %self.peer, size, max_header, "message refused: header block too large");
                reply::header_too_large(max_header)
            }
            Verdict::Ok => match write_error {
                Some(e) => self.spool_reply(&e),
                None => {
                    let incoming = incoming.expect("kept while the verdict is Ok");
                    self.accept(incoming, framer.structure_lines()).await
                }
            },
        };
        r.write_to(&mut self.out);
        self.session.reset();
        Ok(leftover)
    }

    /// Checks the message against the backend's limits, then makes it durable.
    /// A small message is checked on the connection's own task (the check
    /// costs less than a hand-off to the blocking pool); a larger one on
    /// the blocking pool, so no worker thread is held long.
    async fn accept(&mut self, mut incoming: Incoming, structure_lines: usize) -> Reply {
        // Checking costs a multiple of the message's size: wait for room
        // in the shared budget first.
        let shared = self.shared.clone();
        let permit = shared
            .check_budget
            .acquire(incoming.size() as usize, structure_lines)
            .await;
        // A message still held in memory is checked in place on this task
        // when small, else from a copy of it on the blocking pool; a larger
        // one is read back from its temp file there, in the same hand-off.
        if incoming.held().is_none()
            && let Err(e) = incoming.finish().await
        {
            return self.spool_reply(&e);
        }
        let path = incoming.path().to_path_buf();
        let envelope = self.session.envelope();
        let mapper = self.shared.mapper.clone();
        let warm = self.shared.warm.clone();
        let id = incoming.id().to_string();
        let env = envelope.clone();
        let allowed = self.session.user().map(|u| u.allowed_from.clone());
        let stream = self.session.user().and_then(|u| u.message_stream.clone());
        let check = move |raw: &[u8]| {
            let from_ok = allowed.as_ref().is_none_or(|a| from_allowed(a, raw));
            // Mapped as delivery will map it, and kept for the first attempt.
            let checked = mapper
                .map_for(&id, &env, raw, stream.as_deref())
                .map(|mapped| {
                    let warnings = mapped.warnings.clone();
                    warm.keep(&id, &env, stream.as_deref(), mapped, raw.len() + 1);
                    warnings
                });
            (from_ok, checked)
        };
        let checked = match incoming.held() {
            Some(raw) if raw.len() <= CHECK_INLINE => {
                std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| Ok(check(raw))))
                    .map_err(|_| "the check panicked".to_string())
            }
            held => {
                let held = held.map(<[u8]>::to_vec);
                tokio::task::spawn_blocking(move || {
                    let raw = match held {
                        Some(raw) => raw,
                        None => std::fs::read(&path)?,
                    };
                    Ok::<_, std::io::Error>(check(&raw))
                })
                .await
                .map_err(|e| e.to_string())
            }
        };
        drop(permit);
        let checked = match checked {
            Ok(Err(e)) => return self.spool_reply(&SpoolError::Io(e)),
            Ok(Ok((false, _))) => {
                let user = self
                    .session
                    .user()
                    .map(|u| u.name.clone())
                    .unwrap_or_default();
                metrics::counter!("postrelay_smtp_messages_total", "result" => "from_not_allowed")
                    .increment(1);
                tracing::info!(peer = %self.peer, user = %escape(&user), "message refused: From: outside allowed_from");
                return reply::from_not_allowed(&user);
            }
            Ok(Ok((true, checked))) => Ok(checked),
            Err(e) => Err(e),
        };
        match checked {
            Ok(Ok(warnings)) => {
                for w in &warnings {
                    tracing::warn!(id = incoming.id(), warning = %w, "mapping note");
                }
            }
            Ok(Err(e)) => {
                let (code, status, text) = e.smtp_reply();
                metrics::counter!("postrelay_smtp_messages_total", "result" => "refused")
                    .increment(1);
                tracing::info!(peer = %self.peer, from = %envelope.mail_from, reason = %e, "message refused at DATA");
                return Reply::new(code, status, text);
            }
            Err(e) => {
                // Our fault, not the message's: the client should try again.
                tracing::error!(error = %e, "message check panicked");
                return reply::spool_error();
            }
        }
        let size = incoming.size();
        let credential = self
            .session
            .user()
            .map(|u| u.credential.clone())
            .unwrap_or_default();
        match incoming
            .commit_with(&self.shared.spool, envelope.clone(), credential)
            .await
        {
            Ok(id) => {
                maillog::received(
                    &id,
                    &envelope.mail_from,
                    envelope.rcpt_to.len(),
                    size,
                    self.peer,
                );
                reply::queued(&id)
            }
            Err(e) => self.spool_reply(&e),
        }
    }
}

/// True when every `From:` mailbox is allowed (an empty list allows any).
/// Only the header block is parsed.
fn from_allowed(allowed: &[String], raw: &[u8]) -> bool {
    if allowed.is_empty() {
        return true;
    }
    let end = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .map_or(raw.len(), |p| p + 4);
    let parsed = crate::message::parse::parse(&raw[..end]);
    parsed
        .from
        .iter()
        .all(|m| auth::sender_allowed(allowed, &m.addr))
}

/// The pipelined bytes after the end of DATA, once it has ended.
fn leftover(status: DataStatus, input: &[u8]) -> Option<Vec<u8>> {
    match status {
        DataStatus::More => None,
        DataStatus::End { consumed } => Some(input[consumed..].to_vec()),
    }
}
