//! One SMTP connection over any byte stream (TCP, or TLS from the first
//! byte or after STARTTLS): reads bytes, frames them with the
//! [`codec`](super::codec), feeds commands to the [`Session`], answers
//! pipelined commands in order (flushing when the input runs dry), and
//! streams DATA into the spool's temp file so memory stays flat whatever the
//! message size. The `250` after DATA is sent only once
//! [`Incoming::commit`](crate::spool::Incoming::commit) has returned. The
//! AUTH exchange lives in `sasl`, DATA and the message's check and commit
//! in `data`.

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
use super::codec::{self, Frame, LineFramer};
use super::reply::{self, Reply};
use super::session::{Action, Client, Session};
use crate::spool::SpoolError;

/// Bytes one socket read takes at most. Kept under glibc's 64 KB
/// consolidation threshold: freeing a connection's buffers then does not
/// make malloc sweep its free lists (2.5% of CPU per message before).
const READ_BUF: usize = 16 * 1024;

/// Longest command line accepted, line end included (RFC 5321 asks for 512;
/// extensions make lines longer).
pub const MAX_LINE: usize = 4096;

mod data;
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
