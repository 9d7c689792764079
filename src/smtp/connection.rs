//! One SMTP connection: reads bytes, feeds complete command lines to the
//! [`Session`], answers pipelined commands in order (flushing when the input
//! runs dry), and streams DATA into the spool's temp file so memory stays
//! flat whatever the message size. The `250` after DATA is sent only once
//! [`Incoming::commit`] has returned.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use smtp_proto::Error as ProtoError;
use smtp_proto::request::receiver::{DataReceiver, RequestReceiver};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::Shared;
use super::reply::{self, Reply};
use super::session::{Action, Session};
use crate::message::crlf::CrlfNormalizer;
use crate::observability::maillog;
use crate::spool::{Incoming, SpoolError};

const READ_BUF: usize = 64 * 1024;
/// Bytes per second a DATA transfer must average beyond its first
/// `data_timeout` (Postfix's `smtpd_min_data_rate` is 500).
const MIN_DATA_RATE: u64 = 512;
/// Longest command line accepted (RFC 5321 asks for 512; extensions make lines longer).
const MAX_LINE: usize = smtp_proto::request::receiver::MAX_LINE_LENGTH;

/// Why the connection ends early.
enum Stop {
    /// Peer closed or the socket failed: nothing more to say.
    Gone,
    /// Say this, then close.
    Say(Reply),
}

pub async fn run(
    stream: TcpStream,
    peer: SocketAddr,
    shared: Arc<Shared>,
    shutdown: CancellationToken,
) {
    let mut conn = Conn {
        stream,
        peer,
        shared: shared.clone(),
        session: Session::new(shared.hostname.clone(), shared.limits.clone()),
        out: Vec::with_capacity(1024),
        readbuf: vec![0; READ_BUF],
    };
    tracing::debug!(peer = %peer, "smtp session opened");
    let stop = conn.serve(&shutdown).await;
    if let Stop::Say(r) = stop {
        r.write_to(&mut conn.out);
    }
    let _ = conn.flush().await;
    let _ = conn.stream.shutdown().await;
    tracing::debug!(peer = %peer, "smtp session closed");
}

struct Conn {
    stream: TcpStream,
    peer: SocketAddr,
    shared: Arc<Shared>,
    session: Session,
    out: Vec<u8>,
    readbuf: Vec<u8>,
}

impl Conn {
    async fn serve(&mut self, shutdown: &CancellationToken) -> Stop {
        reply::greeting(self.session.hostname()).write_to(&mut self.out);
        let mut receiver = RequestReceiver::default();
        // Bytes of the current, unfinished command line already handed to `receiver`.
        let mut partial = 0usize;
        let mut skipping_long_line = false;
        let mut input: Vec<u8> = Vec::new();
        // Each command must arrive whole within `command_timeout`: a client
        // trickling one byte at a time cannot hold a slot forever.
        let command_timeout = self.shared.command_timeout;
        let mut deadline = Instant::now() + command_timeout;
        loop {
            // Answer every complete command already received, in order.
            let mut it = input.iter();
            let mut start_data = None;
            loop {
                let rest = it.as_slice();
                if skipping_long_line {
                    match rest.iter().position(|&b| b == b'\n') {
                        Some(pos) => {
                            it = rest[pos + 1..].iter();
                            skipping_long_line = false;
                        }
                        None => break,
                    }
                    continue;
                }
                if rest.is_empty() {
                    break;
                }
                let parsed = match rest.iter().position(|&b| b == b'\n') {
                    Some(pos) if partial + pos + 1 > MAX_LINE => {
                        it = rest[pos + 1..].iter();
                        Err(ProtoError::ResponseTooLong)
                    }
                    None if partial + rest.len() > MAX_LINE => {
                        skipping_long_line = true;
                        it = [].iter();
                        Err(ProtoError::ResponseTooLong)
                    }
                    found => {
                        partial = if found.is_some() {
                            0
                        } else {
                            partial + rest.len()
                        };
                        let parsed = receiver.ingest(&mut it);
                        if matches!(parsed, Err(ProtoError::NeedsMoreData { .. })) {
                            break;
                        }
                        parsed
                    }
                };
                let too_long = matches!(parsed, Err(ProtoError::ResponseTooLong));
                let action = self.session.command(parsed);
                deadline = Instant::now() + command_timeout;
                if too_long {
                    receiver = RequestReceiver::default();
                    partial = 0;
                }
                match action {
                    Action::Reply(r) => r.write_to(&mut self.out),
                    Action::Close(r) => return Stop::Say(r),
                    Action::StartData => {
                        start_data = Some(it.as_slice().to_vec());
                        break;
                    }
                }
            }
            if let Some(rest) = start_data {
                input = match self.data(rest).await {
                    Ok(rest) => rest,
                    Err(stop) => return stop,
                };
                deadline = Instant::now() + command_timeout;
                continue;
            }
            input.clear();
            if self.flush().await.is_err() {
                return Stop::Gone;
            }
            // Idle between transactions: a stopping daemon says goodbye here.
            let idle = !self.session.in_transaction();
            let read = tokio::select! {
                _ = shutdown.cancelled(), if idle => return Stop::Say(reply::shutting_down(self.session.hostname())),
                r = tokio::time::timeout_at(deadline, self.stream.read(&mut self.readbuf)) => r,
            };
            match read {
                Err(_) => return Stop::Say(reply::timeout(self.session.hostname())),
                Ok(Ok(0)) | Ok(Err(_)) => return Stop::Gone,
                Ok(Ok(n)) => input.extend_from_slice(&self.readbuf[..n]),
            }
        }
    }

    /// Runs one DATA phase. `rest` holds bytes received after the DATA line.
    /// Returns the bytes received after the end-of-data marker.
    async fn data(&mut self, rest: Vec<u8>) -> Result<Vec<u8>, Stop> {
        let mut incoming = match self.shared.spool.receive().await {
            Ok(i) => Some(i),
            Err(e) => {
                self.refuse_spool(&e);
                self.session.reset();
                return Ok(rest);
            }
        };
        reply::start_data().write_to(&mut self.out);
        self.flush().await.map_err(|_| Stop::Gone)?;

        let max = self.shared.limits.max_message_size;
        let mut receiver = DataReceiver::new();
        // The DATA line's CRLF starts the first line: without it, an empty
        // message (".") or a dot-stuffed first line would not be recognised.
        receiver.ingest(&mut b"\r\n".iter(), &mut Vec::new());
        let mut norm = CrlfNormalizer::default();
        let mut decoded = Vec::with_capacity(READ_BUF);
        let mut normalized = Vec::with_capacity(READ_BUF + READ_BUF / 32);
        let mut size: usize = 0;
        let mut write_error: Option<SpoolError> = None;
        let mut input = rest;
        let started = Instant::now();
        let mut received: u64 = 0;
        let leftover = loop {
            received += input.len() as u64;
            let mut it = input.iter();
            let done = receiver.ingest(&mut it, &mut decoded);
            let after = it.as_slice().to_vec();
            normalized.clear();
            norm.push(&decoded, &mut normalized);
            decoded.clear();
            size += normalized.len();
            if size > max {
                incoming = None; // drop: the temp file goes away
            } else if let (Some(inc), None) = (incoming.as_mut(), &write_error)
                && let Err(e) = inc.write(&normalized).await
            {
                write_error = Some(e);
            }
            if done {
                break after;
            }
            // Silence may last `data_timeout`; beyond that first stretch the
            // transfer must also keep up MIN_DATA_RATE on average, so a
            // client trickling bytes cannot hold the slot for ever.
            let earned = Duration::from_millis(received.saturating_mul(1000) / MIN_DATA_RATE);
            let budget = started + self.shared.data_timeout + earned;
            let deadline = (Instant::now() + self.shared.data_timeout).min(budget);
            let read = tokio::time::timeout_at(deadline, self.stream.read(&mut self.readbuf)).await;
            input = match read {
                Err(_) => return Err(Stop::Say(reply::timeout(self.session.hostname()))),
                Ok(Ok(0)) | Ok(Err(_)) => return Err(Stop::Gone),
                Ok(Ok(n)) => self.readbuf[..n].to_vec(),
            };
        };

        let r = if size > max {
            metrics::counter!("postrelay_smtp_messages_total", "result" => "too_large")
                .increment(1);
            tracing::info!(peer = %self.peer, size, max, "message refused: too large");
            reply::too_large(max)
        } else if let Some(e) = write_error {
            self.spool_reply(&e)
        } else {
            self.accept(incoming.expect("incoming kept")).await
        };
        r.write_to(&mut self.out);
        self.session.reset();
        Ok(leftover)
    }

    /// Checks the message against the backend's limits, then makes it durable.
    async fn accept(&mut self, mut incoming: Incoming) -> Reply {
        if let Err(e) = incoming.finish().await {
            return self.spool_reply(&e);
        }
        let raw = match tokio::fs::read(incoming.path()).await {
            Ok(raw) => raw,
            Err(e) => return self.spool_reply(&SpoolError::Io(e)),
        };
        let envelope = self.session.envelope();
        let mapper = self.shared.mapper.clone();
        let env = envelope.clone();
        let checked = tokio::task::spawn_blocking(move || mapper.check(&env, &raw)).await;
        match checked {
            Ok(Ok(warnings)) => {
                for w in &warnings {
                    tracing::warn!(id = incoming.id(), warning = %w, "feature ignored (ignore_unsupported_features = true)");
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
        match incoming.commit(&self.shared.spool, envelope.clone()).await {
            Ok(id) => {
                maillog::received(
                    &id,
                    &envelope.mail_from,
                    envelope.rcpt_to.len(),
                    size,
                    &self.peer.to_string(),
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

    fn refuse_spool(&mut self, e: &SpoolError) {
        let r = self.spool_reply(e);
        r.write_to(&mut self.out);
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
