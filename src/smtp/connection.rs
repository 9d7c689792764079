//! One SMTP connection over any byte stream (TCP, or TLS from the first
//! byte or after STARTTLS): reads bytes, frames them with the
//! [`codec`](super::codec), feeds commands to the [`Session`], answers
//! pipelined commands in order (flushing when the input runs dry), and
//! streams DATA into the spool's temp file so memory stays flat whatever the
//! message size. The `250` after DATA is sent only once
//! [`Incoming::commit`] has returned. The AUTH exchange lives in `sasl`.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use smtp_proto::Error as ProtoError;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::time::Instant;
use tokio_rustls::server::TlsStream;
use tokio_util::sync::CancellationToken;

use super::Shared;
use super::auth;
use super::capabilities::Capabilities;
use super::codec::{self, DataFramer, DataStatus, Frame, LineFramer, Verdict};
use super::reply::{self, Reply};
use super::session::{Action, Client, Session};
use super::trace::{Trace, received};
use crate::observability::escape::escape;
use crate::observability::maillog;
use crate::spool::{Incoming, SpoolError};

/// Bytes one socket read takes at most. Kept under glibc's 64 KB
/// consolidation threshold: freeing a connection's buffers then does not
/// make malloc sweep its free lists (2.5% of CPU per message before).
const READ_BUF: usize = 16 * 1024;

/// Largest message checked on the connection's own task, in place (a
/// 20 KB message checks in about 35 µs of CPU, a hand-off to the blocking
/// pool and a copy cost more; see `accept`).
const CHECK_INLINE: usize = 32 * 1024;
/// Bytes per second a DATA transfer must average beyond its first
/// `data_timeout` (Postfix's `smtpd_min_data_rate` is 500).
const MIN_DATA_RATE: u64 = 512;
/// Longest command line accepted, line end included (RFC 5321 asks for 512;
/// extensions make lines longer).
pub const MAX_LINE: usize = 4096;

mod sasl;

/// Why the connection ends early.
enum Stop {
    /// Peer closed or the socket failed: nothing more to say.
    Gone,
    /// Say this, then close.
    Say(Reply),
    /// `220` was sent for STARTTLS: the handshake comes next.
    StartTls,
}

/// Serves one client, admitted as `client`, over `stream`; upgrades to TLS
/// when the client asks with STARTTLS.
pub async fn run<S>(
    stream: S,
    peer: SocketAddr,
    shared: Arc<Shared>,
    shutdown: CancellationToken,
    client: Client,
) where
    S: AsyncRead + AsyncWrite + Unpin + Send,
{
    let capabilities = capabilities(&shared, client);
    let mut conn = Conn {
        stream,
        peer,
        shared: shared.clone(),
        session: Session::new(
            shared.hostname.clone(),
            shared.limits.clone(),
            capabilities,
            client,
        ),
        framer: LineFramer::new(MAX_LINE),
        out: Vec::with_capacity(1024),
        readbuf: Vec::with_capacity(READ_BUF),
        ends: Instant::now() + shared.max_session_time,
    };
    tracing::debug!(peer = %peer, tls = client.tls, "smtp session opened");
    reply::greeting(conn.session.hostname()).write_to(&mut conn.out);
    match conn.serve(&shutdown).await {
        Stop::StartTls => match conn.upgrade().await {
            Some(mut tls) => {
                let stop = tls.serve(&shutdown).await;
                tls.finish(stop).await;
            }
            None => tracing::debug!(peer = %peer, "smtp session closed"),
        },
        stop => conn.finish(stop).await,
    }
}

/// What EHLO offers this client now.
fn capabilities(shared: &Shared, client: Client) -> Capabilities {
    let mut c = Capabilities::standard(shared.limits.max_message_size);
    c.starttls = shared.tls.is_some() && !client.tls;
    if client.offers_auth() {
        c.auth = auth::MECHANISMS.iter().map(|m| m.to_string()).collect();
    }
    c
}

struct Conn<S> {
    stream: S,
    peer: SocketAddr,
    shared: Arc<Shared>,
    session: Session,
    framer: LineFramer,
    out: Vec<u8>,
    /// Read into with `read_buf` after `clear`: its capacity is never zeroed.
    readbuf: Vec<u8>,
    /// `smtp.max_session_time` after the connection began: no read waits past it.
    ends: Instant,
}

impl<S> Conn<S>
where
    S: AsyncRead + AsyncWrite + Unpin + Send,
{
    /// Says the last word, if any, and closes.
    async fn finish(mut self, stop: Stop) {
        if let Stop::Say(r) = stop {
            r.write_to(&mut self.out);
        }
        let _ = self.flush().await;
        let _ = self.stream.shutdown().await;
        tracing::debug!(peer = %self.peer, "smtp session closed");
    }

    /// The TLS handshake after `220` (RFC 3207): whatever the client
    /// pipelined after STARTTLS is dropped unread, and the session starts
    /// over. `None` when the handshake fails or times out.
    async fn upgrade(self) -> Option<Conn<TlsStream<S>>> {
        let Conn {
            stream,
            peer,
            shared,
            mut session,
            mut framer,
            readbuf,
            ends,
            ..
        } = self;
        if framer.reset() {
            metrics::counter!("postrelay_smtp_starttls_injection_total").increment(1);
            tracing::warn!(peer = %peer, "bytes pipelined after STARTTLS discarded unread");
        }
        let tls = shared.tls.clone()?;
        let stream = match tls.accept(stream).await {
            Ok(s) => s,
            Err(e) => {
                metrics::counter!("postrelay_smtp_tls_failures_total").increment(1);
                tracing::info!(peer = %peer, error = %e, "TLS handshake failed");
                return None;
            }
        };
        let client = Client {
            tls: true,
            ..session.client()
        };
        session.restart_with_tls(capabilities(&shared, client));
        Some(Conn {
            stream,
            peer,
            shared,
            session,
            framer,
            out: Vec::with_capacity(1024),
            readbuf,
            ends,
        })
    }

    /// Why a read deadline passed: the session's lifetime, or silence.
    fn expired(&self) -> Stop {
        if Instant::now() >= self.ends {
            metrics::counter!("postrelay_smtp_limits_total", "limit" => "session_time")
                .increment(1);
            tracing::info!(peer = %self.peer, "session closed: smtp.max_session_time reached");
            Stop::Say(reply::session_too_long(self.session.hostname()))
        } else {
            Stop::Say(reply::timeout(self.session.hostname()))
        }
    }

    async fn serve(&mut self, shutdown: &CancellationToken) -> Stop {
        // Each command must arrive whole within `command_timeout`: a client
        // trickling one byte at a time cannot hold a slot forever.
        let command_timeout = self.shared.command_timeout;
        let mut deadline = Instant::now() + command_timeout;
        loop {
            // Answer every complete command already received, in order.
            while let Some(frame) = self.framer.next_frame() {
                let action = match &frame {
                    Frame::Command(line) => self.session.command(codec::parse_command(line)),
                    Frame::TooLong => self.session.command(Err(ProtoError::ResponseTooLong)),
                    // Raw mode is only entered by an exchange that consumes its lines.
                    Frame::Raw(_) => self.session.command(Err(ProtoError::UnknownCommand)),
                };
                deadline = Instant::now() + command_timeout;
                match action {
                    Action::Reply(r) => r.write_to(&mut self.out),
                    Action::Close(r) => return Stop::Say(r),
                    Action::Discard { reply, bytes } => {
                        reply.write_to(&mut self.out);
                        self.framer.discard(bytes);
                    }
                    Action::Auth { mechanism, initial } => {
                        if let Err(stop) = self.auth(mechanism, initial).await {
                            return stop;
                        }
                        deadline = Instant::now() + command_timeout;
                    }
                    Action::StartTls => {
                        reply::ready_for_tls().write_to(&mut self.out);
                        if self.flush().await.is_err() {
                            return Stop::Gone;
                        }
                        return Stop::StartTls;
                    }
                    Action::StartData => {
                        let rest = self.framer.take_rest();
                        match self.data(&rest).await {
                            Ok(leftover) => self.framer.push(&leftover),
                            Err(stop) => return stop,
                        }
                        deadline = Instant::now() + command_timeout;
                    }
                }
            }
            if self.flush().await.is_err() {
                return Stop::Gone;
            }
            // Idle between transactions: a stopping daemon says goodbye here.
            let idle = !self.session.in_transaction();
            self.readbuf.clear();
            let read = tokio::select! {
                _ = shutdown.cancelled(), if idle => return Stop::Say(reply::shutting_down(self.session.hostname())),
                r = tokio::time::timeout_at(deadline.min(self.ends), self.stream.read_buf(&mut self.readbuf)) => r,
            };
            match read {
                Err(_) => return self.expired(),
                Ok(Ok(0)) | Ok(Err(_)) => return Stop::Gone,
                Ok(Ok(n)) => self.framer.push(&self.readbuf[..n]),
            }
        }
    }

    /// Runs one DATA phase. `rest` holds bytes received after the DATA line.
    /// Returns the bytes received after the end-of-data marker.
    async fn data(&mut self, rest: &[u8]) -> Result<Vec<u8>, Stop> {
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

    fn spool_reply(&self, e: &SpoolError) -> Reply {
        metrics::counter!("postrelay_smtp_messages_total", "result" => "spool_error").increment(1);
        tracing::error!(peer = %self.peer, error = %e, "cannot spool message");
        match e {
            SpoolError::Full(_) => reply::spool_full(),
            _ => reply::spool_error(),
        }
    }

    async fn flush(&mut self) -> std::io::Result<()> {
        if self.out.is_empty() {
            return Ok(());
        }
        let res =
            tokio::time::timeout(Duration::from_secs(60), self.stream.write_all(&self.out)).await;
        self.out.clear();
        match res {
            Ok(r) => r,
            Err(_) => Err(std::io::ErrorKind::TimedOut.into()),
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
